import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import { FEATURES, parseRunArgs, RUN_USAGE, type RunCliOptions, runShortUsage } from "./run.ts";
import { DenError } from "../error.ts";
import type { RunOptions } from "../run/plan.ts";

/** The options of a run request, the planner's and den's own together;
 * fails on any other request. */
function run(...args: string[]): RunOptions & RunCliOptions {
  const req = parseRunArgs(args);
  if (req.kind !== "run") throw new Error(`expected run, got ${req.kind}`);
  return { ...req.options, ...req.cli };
}

/** A usage error (exit 64) with exactly this message. */
function usage(message: string) {
  return (e: unknown) => e instanceof DenError && e.message === message && e.exitCode === 64;
}

const DEFAULTS: RunOptions & RunCliOptions = {
  image: "img",
  command: ["true"],
  binds: [],
  cd: undefined,
  write: false,
  writeFake: undefined,
  envOps: [],
  envNoExpand: false,
  imageEnv: true,
  uid: undefined,
  gid: undefined,
  home: false,
  noPasswd: false,
  privateTmp: false,
  verbose: 0,
  storage: undefined,
  mount: undefined,
  dryRun: false,
};

Deno.test("parseRunArgs() defaults every option", () => {
  deepStrictEqual(run("img", "--", "true"), DEFAULTS);
});

Deno.test("parseRunArgs() maps every ch-run option to RunOptions", () => {
  deepStrictEqual(
    run(
      "-b",
      "/a",
      "--bind=/b:/mnt/b",
      "-c",
      "/work",
      "--env-no-expand",
      "-g",
      "100",
      "--home",
      "--no-image-env",
      "--no-passwd",
      "--set-env=A=1",
      "-s",
      "/store",
      "-t",
      "--unset-env=B*",
      "-u",
      "1000",
      "-v",
      "-w",
      "-m",
      "/sq",
      "--dry-run",
      "img",
      "--",
      "echo",
      "hi",
    ),
    {
      image: "img",
      command: ["echo", "hi"],
      binds: [
        { source: "/a", target: undefined },
        { source: "/b", target: "/mnt/b" },
      ],
      cd: "/work",
      write: true,
      writeFake: undefined,
      envOps: [{ kind: "set", text: "A=1" }, { kind: "unset", glob: "B*" }],
      envNoExpand: true,
      imageEnv: false,
      uid: 1000,
      gid: 100,
      home: true,
      noPasswd: true,
      privateTmp: true,
      verbose: 1,
      storage: "/store",
      dryRun: true,
      mount: "/sq",
    },
  );
});

Deno.test("parseRunArgs() accepts the long forms", () => {
  const o = run(
    "--cd=/w",
    "--gid=2",
    "--storage=/s",
    "--private-tmp",
    "--uid=3",
    "--verbose",
    "--write",
    "img",
    "--",
    "true",
  );
  deepStrictEqual(
    [o.cd, o.gid, o.storage, o.privateTmp, o.uid, o.verbose, o.write],
    ["/w", 2, "/s", true, 3, 1, true],
  );
});

Deno.test("parseRunArgs() takes options after IMAGE (GNU permutation)", () => {
  const o = run("img", "-w", "--", "true");
  strictEqual(o.write, true);
  deepStrictEqual(o.command, ["true"]);
});

Deno.test("parseRunArgs() leaves options after '--' to the command", () => {
  deepStrictEqual(run("img", "--", "ls", "-w", "--bind=x").command, [
    "ls",
    "-w",
    "--bind=x",
  ]);
});

Deno.test("parseRunArgs() keeps a second '--' in the command, as ch-run", () => {
  const o = run("--", "img", "--", "true");
  strictEqual(o.image, "img");
  deepStrictEqual(o.command, ["--", "true"]);
});

Deno.test("parseRunArgs() allows an empty command (the image's own)", () => {
  deepStrictEqual(run("img").command, []);
});

Deno.test("parseRunArgs() without IMAGE fails as current ch-run does (31, not 64)", () => {
  const fatal = (e: unknown) =>
    e instanceof DenError && e.message === "IMAGE and/or CMD not specified" && e.exitCode === 31;
  throws(() => parseRunArgs([]), fatal);
  throws(() => parseRunArgs(["-w"]), fatal);
});

Deno.test("parseRunArgs() takes -j for --join, as ch-run", () => {
  const req = parseRunArgs(["-j", "img", "--", "true"]);
  if (req.kind !== "run") throw new Error(req.kind);
  strictEqual(req.join.join, true);
  const both = parseRunArgs(["-vj", "img", "--", "true"]);
  strictEqual(both.kind === "run" && both.join.join && both.cli.verbose, 1);
});

Deno.test("parseRunArgs() passes parseArgv() usage errors on", () => {
  throws(() => parseRunArgs(["--foo", "img"]), usage("unrecognized option '--foo'"));
  throws(() => parseRunArgs(["-x", "img"]), usage("invalid option -- 'x'"));
  throws(
    () => parseRunArgs(["img", "--bind"]),
    usage("option '--bind' requires an argument"),
  );
});

Deno.test("parseRunArgs() --set-env without a value is the image's /ch/environment", () => {
  deepStrictEqual(run("--set-env", "img").envOps, [
    { kind: "file", path: "/ch/environment", text: "" },
  ]);
});

Deno.test("parseRunArgs() --set-env NAME=VALUE is a set op", () => {
  deepStrictEqual(run("--set-env=FOO=bar", "img").envOps, [
    { kind: "set", text: "FOO=bar" },
  ]);
  deepStrictEqual(run("--set-env==x", "img").envOps, [
    { kind: "set", text: "=x" },
  ]);
});

Deno.test("parseRunArgs() --set-env without '=' is a file op", () => {
  deepStrictEqual(run("--set-env=/path/env", "img").envOps, [
    { kind: "file", path: "/path/env", text: "" },
  ]);
});

Deno.test("parseRunArgs() --set-env takes its value only after '='", () => {
  const o = run("--set-env", "FOO=bar", "img");
  deepStrictEqual(o.envOps, [
    { kind: "file", path: "/ch/environment", text: "" },
  ]);
  strictEqual(o.image, "FOO=bar");
  deepStrictEqual(o.command, ["img"]);
});

Deno.test("parseRunArgs() keeps --set-env and --unset-env in order", () => {
  deepStrictEqual(
    run(
      "--unset-env=P*",
      "--set-env=PX=1",
      "img",
      "--set-env=/e",
      "--unset-env",
      "Q",
      "--set-env",
    ).envOps,
    [
      { kind: "unset", glob: "P*" },
      { kind: "set", text: "PX=1" },
      { kind: "file", path: "/e", text: "" },
      { kind: "unset", glob: "Q" },
      { kind: "file", path: "/ch/environment", text: "" },
    ],
  );
});

/** A DenError with exactly this message and exit status 31 (invalid value). */
const invalid = (message: string) => (e: unknown) =>
  e instanceof DenError && e.message === message && e.exitCode === 31;

Deno.test("parseRunArgs() rejects an empty --unset-env (31, current Charliecloud)", () => {
  throws(
    () => parseRunArgs(["--unset-env=", "img"]),
    invalid("--unset-env: GLOB must have non-zero length"),
  );
});

Deno.test("parseRunArgs() splits -b at the first ':'", () => {
  deepStrictEqual(run("-b", "/a:/b:/c", "img").binds, [
    { source: "/a", target: "/b:/c" },
  ]);
});

Deno.test("parseRunArgs() keeps binds in order", () => {
  deepStrictEqual(run("-b/x", "img", "--bind", "/y:/z").binds, [
    { source: "/x", target: undefined },
    { source: "/y", target: "/z" },
  ]);
});

Deno.test("parseRunArgs() checks -b as ch-run, in its words", () => {
  const cases: [string, string][] = [
    [":/x", "--bind: no source provided"],
    ["", "--bind: no source provided"],
    ["/x:", "--bind: no destination provided"],
    ["/x:/", "--bind: destination can't be /"],
    ["/x:foo", "--bind: destination must be absolute"],
  ];
  for (const [arg, message] of cases) {
    throws(() => parseRunArgs(["-b", arg, "img"]), invalid(message));
  }
});

Deno.test("parseRunArgs() accepts ch-run 0.31's --no-home", () => {
  strictEqual(run("--no-home", "img").home, false);
});

Deno.test("parseRunArgs() -u and -g take decimal ids (a C int, as ch-run)", () => {
  const o = run("-u", "0", "-g", "2147483647", "img");
  deepStrictEqual([o.uid, o.gid], [0, 2147483647]);
});

Deno.test("parseRunArgs() rejects a bad -u or -g with ch-run's words and 31", () => {
  const fatal = (message: string) => (e: unknown) =>
    e instanceof DenError && e.message === message && e.exitCode === 31;
  throws(() => parseRunArgs(["-u", "x", "img"]), fatal("--uid: no digits found"));
  throws(() => parseRunArgs(["-u", "-1", "img"]), fatal("--uid: must be non-negative"));
  throws(() => parseRunArgs(["-g", "1x", "img"]), fatal("--gid: extra characters after digits"));
  throws(() => parseRunArgs(["--uid=", "img"]), fatal("--uid: no digits found"));
  throws(() => parseRunArgs(["-u", "4294967295", "img"]), fatal("--uid: out of range"));
});

Deno.test("parseRunArgs() repeated -u: the last wins", () => {
  strictEqual(run("-u", "1", "-u", "2", "img").uid, 2);
  strictEqual(run("-c", "/a", "--cd=/b", "img").cd, "/b");
});

Deno.test("parseRunArgs() counts -v", () => {
  strictEqual(run("-vv", "img", "--verbose").verbose, 3);
});

Deno.test("parseRunArgs() --help, -h and -? ask for help", () => {
  for (const arg of ["--help", "-h", "-?"]) {
    deepStrictEqual(parseRunArgs([arg]), { kind: "help" }, arg);
  }
  deepStrictEqual(parseRunArgs(["img", "-wh"]), { kind: "help" });
});

Deno.test("--usage: every option of --help in argp's short list, 79 columns at most", () => {
  deepStrictEqual(parseRunArgs(["--usage"]), { kind: "usage" });
  const text = runShortUsage();
  const lines = text.split("\n");
  strictEqual(lines[0]!.slice(0, 26), "Usage: den run [-tvwjh?V] ");
  ok(lines.slice(1).every((l) => l.startsWith(" ".repeat(12) + "[") || l.endsWith("[ARG...]")));
  ok(lines.every((l) => l.length <= 79), text);
  ok(text.endsWith("IMAGE -- CMD [ARG...]"), text);
  const flat = lines.map((l) => l.trim()).join(" ");
  let seen = 0;
  for (const m of RUN_USAGE.matchAll(/^ {2}(?:-(\S), )? *--([a-z-]+)(\S*)/gm)) {
    const [, short, long, arg] = m;
    const item = arg ? `[--${long}${arg}]` : `[--${long}]`;
    ok(flat.includes(item), `${item} missing from:\n${text}`);
    if (short && arg) ok(flat.includes(`[-${short}`), `-${short} missing`);
    seen++;
  }
  ok(seen >= 25, `only ${seen} options found in --help`);
  ok(flat.includes("[-b SRC[:DST]]") && flat.includes("[-W[SIZE]]"), text);
});

Deno.test("parseRunArgs() -V and --version ask for the version", () => {
  deepStrictEqual(parseRunArgs(["-V"]), { kind: "version" });
  deepStrictEqual(parseRunArgs(["img", "--version"]), { kind: "version" });
});

Deno.test("parseRunArgs() help wins over version", () => {
  deepStrictEqual(parseRunArgs(["-V", "-h"]), { kind: "help" });
});

Deno.test("parseRunArgs() --feature asks about a feature", () => {
  deepStrictEqual(parseRunArgs(["--feature=seccomp"]), {
    kind: "feature",
    name: "seccomp",
  });
  deepStrictEqual(parseRunArgs(["--feature", "list"]), {
    kind: "feature",
    name: "list",
  });
});

Deno.test("FEATURES has image-env, extglob, overlayfs and squash on and what den lacks off", () => {
  strictEqual(FEATURES["image-env"], true);
  strictEqual(FEATURES.extglob, true);
  strictEqual(FEATURES.overlayfs, true);
  strictEqual(FEATURES.squash, true);
  for (const f of ["seccomp"]) {
    strictEqual(FEATURES[f], false, f);
  }
});

Deno.test("RUN_USAGE documents every option parseRunArgs() takes", () => {
  for (
    const o of [
      "--bind",
      "--cd",
      "--env-no-expand",
      "--feature",
      "--gid",
      "--home",
      "--no-image-env",
      "--no-passwd",
      "--set-env",
      "--storage",
      "--private-tmp",
      "--unset-env",
      "--uid",
      "--verbose",
      "--write",
      "--dry-run",
      "--help",
      "--version",
    ]
  ) ok(RUN_USAGE.includes(o), o);
});

Deno.test("parseRunArgs() -W/--write-fake: default size 12%, SIZE attached as argp does", () => {
  strictEqual(run("-W", "img", "true").writeFake, "12%");
  strictEqual(run("--write-fake", "img", "true").writeFake, "12%");
  strictEqual(run("-W4g", "img", "true").writeFake, "4g");
  strictEqual(run("--write-fake=50%", "img", "true").writeFake, "50%");
  // As with argp, a detached word after -W is IMAGE, not SIZE.
  deepStrictEqual([run("-W", "512m", "true").writeFake, run("-W", "512m", "true").image], [
    "12%",
    "512m",
  ]);
  ok(FEATURES.overlayfs);
});

Deno.test("parseRunArgs() refuses a bad -W size and -W with -w (usage, exit 64)", () => {
  throws(() => run("-Wlots", "img", "true"), usage(`--write-fake: invalid size: "lots"`));
  throws(() => run("-W0", "img", "true"), usage(`--write-fake: invalid size: "0"`));
  throws(() => run("-W200%", "img", "true"), usage(`--write-fake: invalid size: "200%"`));
  throws(
    () => run("-W", "-w", "img", "true"),
    usage("--write and --write-fake are mutually exclusive"),
  );
});
