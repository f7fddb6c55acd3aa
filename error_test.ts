import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import {
  DenError,
  describeError,
  EXIT_CMD,
  EXIT_FAILURE,
  EXIT_USAGE,
  usageError,
} from "./error.ts";

Deno.test("exit codes match ch-run's", () => {
  deepStrictEqual([EXIT_USAGE, EXIT_FAILURE, EXIT_CMD], [64, 31, 49]);
});

Deno.test("DenError formats op, path, detail and code", () => {
  const e = new DenError("mount", "Operation not permitted", {
    path: "/scratch",
    code: "EPERM",
  });
  strictEqual(e.message, "mount /scratch: Operation not permitted (EPERM)");
  strictEqual(e.name, "DenError");
  strictEqual(e.op, "mount");
  ok(e instanceof Error);
});

Deno.test("DenError without path or code is just op and detail", () => {
  strictEqual(new DenError("unpack", "bad tar").message, "unpack: bad tar");
});

Deno.test("DenError with an empty op is just the detail (and code)", () => {
  strictEqual(new DenError("", "no image").message, "no image");
  strictEqual(
    new DenError("", "no image", { code: "ENOENT" }).message,
    "no image (ENOENT)",
  );
});

Deno.test("DenError ignores an empty path", () => {
  strictEqual(new DenError("stat", "gone", { path: "" }).message, "stat: gone");
});

Deno.test("DenError.exitCode defaults to 31", () => {
  strictEqual(new DenError("x", "y").exitCode, 31);
  strictEqual(new DenError("x", "y", { exitCode: 49 }).exitCode, 49);
});

Deno.test("DenError.hint returns the hint option", () => {
  strictEqual(new DenError("x", "y").hint, undefined);
  strictEqual(new DenError("x", "y", { hint: "try -w" }).hint, "try -w");
});

Deno.test("DenError keeps its cause", () => {
  const cause = new Error("inner");
  strictEqual(new DenError("x", "y", { cause }).cause, cause);
});

Deno.test("usageError() has no op, exit code 64 and the hint", () => {
  const e = usageError("bad option", "try 'den run --help'");
  strictEqual(e.message, "bad option");
  strictEqual(e.exitCode, 64);
  strictEqual(e.hint, "try 'den run --help'");
});

Deno.test("describeError() joins the cause chain with ': '", () => {
  const inner = new DenError("open", "No such file", {
    path: "/x",
    code: "ENOENT",
  });
  const middle = new DenError("unpack layer 3/7", "read failed", {
    cause: inner,
  });
  const outer = new Error("den run", { cause: middle });
  strictEqual(
    describeError(outer),
    "den run: unpack layer 3/7: read failed: open /x: No such file (ENOENT)",
  );
});

Deno.test("describeError() of a single error is its message", () => {
  strictEqual(describeError(new DenError("a", "b")), "a: b");
});

Deno.test("describeError() stops at a non-Error cause", () => {
  strictEqual(describeError(new Error("top", { cause: "text" })), "top");
});

Deno.test("describeError() of a non-Error is its string form", () => {
  strictEqual(describeError("plain"), "plain");
  strictEqual(describeError(42), "42");
  strictEqual(describeError(undefined), "undefined");
});
