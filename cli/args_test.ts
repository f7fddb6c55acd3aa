import { deepStrictEqual, throws } from "node:assert/strict";
import { booleanValue, countFlag, lastValue, type OptionSpec, parseArgv } from "./args.ts";
import { DenError } from "../error.ts";

const SPEC: Record<string, OptionSpec> = {
  bind: { short: "b", takes: "value" },
  write: { short: "w", takes: "flag" },
  "private-tmp": { short: "t", takes: "flag" },
  verbose: { short: "v", takes: "flag" },
  "set-env": { takes: "optional" },
  opt: { short: "o", takes: "optional" },
  home: { takes: "flag" },
};

function parse(...args: string[]) {
  return parseArgv(args, SPEC, "den run --help");
}

/** A usage error (exit 64) with exactly this message and the help hint. */
function usage(message: string) {
  return (e: unknown) =>
    e instanceof DenError && e.message === message && e.exitCode === 64 &&
    e.hint === "try 'den run --help'";
}

Deno.test("parseArgv() returns positionals and options in order", () => {
  deepStrictEqual(parse("-w", "--bind=/a", "img", "true"), {
    options: [{ name: "write" }, { name: "bind", value: "/a" }],
    positionals: ["img", "true"],
  });
});

Deno.test("parseArgv() of no arguments is empty", () => {
  deepStrictEqual(parse(), { options: [], positionals: [] });
});

Deno.test("parseArgv() permutes: options after positionals count", () => {
  deepStrictEqual(parse("img", "-w", "cmd", "--bind", "/a"), {
    options: [{ name: "write" }, { name: "bind", value: "/a" }],
    positionals: ["img", "cmd"],
  });
});

Deno.test("parseArgv() '--' ends options", () => {
  deepStrictEqual(parse("-w", "img", "--", "cmd", "-w", "--bind", "--"), {
    options: [{ name: "write" }],
    positionals: ["img", "cmd", "-w", "--bind", "--"],
  });
});

Deno.test("parseArgv() a lone '-' is a positional", () => {
  deepStrictEqual(parse("-"), { options: [], positionals: ["-"] });
});

Deno.test("parseArgv() clusters short flags", () => {
  deepStrictEqual(parse("-wt").options, [
    { name: "write" },
    { name: "private-tmp" },
  ]);
  deepStrictEqual(parse("-vvv").options, [
    { name: "verbose" },
    { name: "verbose" },
    { name: "verbose" },
  ]);
});

Deno.test("parseArgv() takes a short option's value from the same word", () => {
  deepStrictEqual(parse("-b/a:/b").options, [{
    name: "bind",
    value: "/a:/b",
  }]);
});

Deno.test("parseArgv() takes a short option's value from the next word", () => {
  deepStrictEqual(parse("-b", "/a", "img"), {
    options: [{ name: "bind", value: "/a" }],
    positionals: ["img"],
  });
});

Deno.test("parseArgv() ends a cluster at an option with a value", () => {
  deepStrictEqual(parse("-wb/a").options, [
    { name: "write" },
    { name: "bind", value: "/a" },
  ]);
  deepStrictEqual(parse("-wb", "/a").options, [
    { name: "write" },
    { name: "bind", value: "/a" },
  ]);
  deepStrictEqual(parse("-bw").options, [{ name: "bind", value: "w" }]);
});

Deno.test("parseArgv() takes a long option's value after '='", () => {
  deepStrictEqual(parse("--bind=/a=b").options, [{
    name: "bind",
    value: "/a=b",
  }]);
  deepStrictEqual(parse("--bind=").options, [{ name: "bind", value: "" }]);
});

Deno.test("parseArgv() takes a long option's value from the next word", () => {
  deepStrictEqual(parse("--bind", "/a", "img"), {
    options: [{ name: "bind", value: "/a" }],
    positionals: ["img"],
  });
});

Deno.test("parseArgv() a required value may look like an option", () => {
  deepStrictEqual(parse("--bind", "-w").options, [{
    name: "bind",
    value: "-w",
  }]);
  deepStrictEqual(parse("-b", "--").options, [{ name: "bind", value: "--" }]);
});

Deno.test("parseArgv() takes an optional value only with '='", () => {
  deepStrictEqual(parse("--set-env=A=1").options, [{
    name: "set-env",
    value: "A=1",
  }]);
  deepStrictEqual(parse("--set-env", "A=1"), {
    options: [{ name: "set-env" }],
    positionals: ["A=1"],
  });
});

Deno.test("parseArgv() takes a short optional value only in the same word", () => {
  deepStrictEqual(parse("-ox").options, [{ name: "opt", value: "x" }]);
  deepStrictEqual(parse("-o", "x"), {
    options: [{ name: "opt", value: undefined }],
    positionals: ["x"],
  });
});

Deno.test("parseArgv() rejects an unknown long option", () => {
  throws(() => parse("--foo"), usage("unrecognized option '--foo'"));
  throws(() => parse("--foo=bar"), usage("unrecognized option '--foo'"));
  throws(() => parse("img", "--foo"), usage("unrecognized option '--foo'"));
});

Deno.test({
  name: "parseArgv() rejects Object.prototype names as options",
  fn() {
    throws(() => parse("--toString"), usage("unrecognized option '--toString'"));
    throws(
      () => parse("--constructor=x"),
      usage("unrecognized option '--constructor'"),
    );
    throws(
      () => parse("--hasOwnProperty"),
      usage("unrecognized option '--hasOwnProperty'"),
    );
  },
});

Deno.test("parseArgv() rejects an unknown short option", () => {
  throws(() => parse("-x"), usage("invalid option -- 'x'"));
  throws(() => parse("-wx"), usage("invalid option -- 'x'"));
});

Deno.test("parseArgv() rejects a missing required value", () => {
  throws(() => parse("--bind"), usage("option '--bind' requires an argument"));
  throws(() => parse("-b"), usage("option requires an argument -- 'b'"));
  throws(() => parse("-wb"), usage("option requires an argument -- 'b'"));
});

Deno.test("parseArgv() rejects a value for a flag", () => {
  throws(
    () => parse("--write=yes"),
    usage("option '--write' doesn't allow an argument"),
  );
});

Deno.test("lastValue() returns the last value given", () => {
  const p = parse("-b", "/a", "--bind=/b", "-w");
  deepStrictEqual(lastValue(p, "bind"), "/b");
  deepStrictEqual(lastValue(p, "opt"), undefined);
});

Deno.test("countFlag() counts occurrences", () => {
  const p = parse("-vv", "--verbose", "-w");
  deepStrictEqual(countFlag(p, "verbose"), 3);
  deepStrictEqual(countFlag(p, "write"), 1);
  deepStrictEqual(countFlag(p, "home"), 0);
});

Deno.test("booleanValue() takes the last true or false, a bare option as true", () => {
  deepStrictEqual(booleanValue(parse("-w"), "opt"), undefined);
  deepStrictEqual(booleanValue(parse("--opt"), "opt"), true);
  deepStrictEqual(booleanValue(parse("--opt=false"), "opt"), false);
  deepStrictEqual(booleanValue(parse("--opt=false", "--opt"), "opt"), true);
  deepStrictEqual(booleanValue(parse("--opt", "--opt=false"), "opt"), false);
  throws(
    () => booleanValue(parse("--opt=no"), "opt"),
    (e: unknown) =>
      e instanceof DenError && e.message === '--opt: expected true or false, got "no"' &&
      e.exitCode === 64,
  );
});
