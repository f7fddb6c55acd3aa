import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import {
  applyEnvOps,
  type Env,
  type EnvOp,
  expandValue,
  globToRegExp,
  parseEnvLine,
} from "./env.ts";
import { DenError } from "../error.ts";

/** A DenError with exactly this message (for assert.throws). */
function denError(message: string) {
  return (e: unknown) => e instanceof DenError && e.message === message;
}

function envOf(...pairs: [string, string][]): Env {
  return new Map(pairs);
}

// parseEnvLine()

Deno.test("parseEnvLine() splits at the first '='", () => {
  deepStrictEqual(parseEnvLine("FOO=bar", "FOO=bar"), ["FOO", "bar"]);
  deepStrictEqual(parseEnvLine("E=x=y", "E=x=y"), ["E", "x=y"]);
});

Deno.test("parseEnvLine() allows an empty value", () => {
  deepStrictEqual(parseEnvLine("FOO=", "FOO="), ["FOO", ""]);
});

Deno.test("parseEnvLine() strips single quotes around the value", () => {
  deepStrictEqual(parseEnvLine("A='b c'", ""), ["A", "b c"]);
  deepStrictEqual(parseEnvLine("A=''", ""), ["A", ""]);
});

Deno.test("parseEnvLine() keeps unbalanced or lone single quotes", () => {
  deepStrictEqual(parseEnvLine("A='", ""), ["A", "'"]);
  deepStrictEqual(parseEnvLine("A='b", ""), ["A", "'b"]);
  deepStrictEqual(parseEnvLine("A=b'", ""), ["A", "b'"]);
});

Deno.test("parseEnvLine() keeps double quotes", () => {
  deepStrictEqual(parseEnvLine('A="b c"', ""), ["A", '"b c"']);
});

Deno.test("parseEnvLine() rejects an empty name", () => {
  throws(
    () => parseEnvLine("=x", "=x"),
    denError("can't parse variable: empty name: =x"),
  );
});

Deno.test("parseEnvLine() rejects a line without '='", () => {
  throws(
    () => parseEnvLine("FOO", "/env:3"),
    denError("can't parse variable: no delimiter: /env:3"),
  );
});

Deno.test("parseEnvLine() errors exit with status 31", () => {
  throws(
    () => parseEnvLine("FOO", "FOO"),
    (e: unknown) => e instanceof DenError && e.exitCode === 31,
  );
});

// expandValue()

const HOME_ENV = envOf(["HOME", "/home/den"], ["PATH", "/usr/bin:/bin"]);

Deno.test("expandValue() replaces elements that start with '$'", () => {
  strictEqual(expandValue("$HOME", HOME_ENV), "/home/den");
  strictEqual(expandValue("$PATH:/opt/bin", HOME_ENV), "/usr/bin:/bin:/opt/bin");
});

Deno.test("expandValue() drops elements that expand to nothing", () => {
  strictEqual(expandValue("$HOME:$NOPE:x", HOME_ENV), "/home/den:x");
  strictEqual(expandValue("$NOPE", HOME_ENV), "");
});

Deno.test("expandValue() keeps a lone '$' (it names no variable), as ch-run", () => {
  strictEqual(expandValue("$", HOME_ENV), "$");
  strictEqual(expandValue("bar:$", HOME_ENV), "bar:$");
  strictEqual(expandValue("$:x", HOME_ENV), "$:x");
});

Deno.test("expandValue() drops a variable that is set but empty", () => {
  strictEqual(expandValue("a:$E:b", envOf(["E", ""])), "a:b");
});

Deno.test("expandValue() leaves '$' after the start of an element", () => {
  strictEqual(expandValue("bar$PATH", HOME_ENV), "bar$PATH");
  strictEqual(expandValue("x:bar$HOME", HOME_ENV), "x:bar$HOME");
});

Deno.test("expandValue() takes the whole element as the name", () => {
  strictEqual(expandValue("${HOME}x", HOME_ENV), "");
  strictEqual(expandValue("$HOME/x", HOME_ENV), "");
});

Deno.test("expandValue() keeps empty literal elements", () => {
  strictEqual(expandValue("a::b", HOME_ENV), "a::b");
  strictEqual(expandValue("", HOME_ENV), "");
});

// globToRegExp()

function matches(glob: string, names: string[]): string[] {
  const re = globToRegExp(glob);
  return names.filter((n) => re.test(n));
}

Deno.test("globToRegExp() '*' matches any run, also empty", () => {
  deepStrictEqual(matches("P*", ["P", "PATH", "XP", "PX\nY"]), [
    "P",
    "PATH",
    "PX\nY",
  ]);
  deepStrictEqual(matches("*", ["", "A"]), ["", "A"]);
});

Deno.test("globToRegExp() '?' matches exactly one character", () => {
  deepStrictEqual(matches("A?", ["A", "AB", "ABC"]), ["AB"]);
});

Deno.test("globToRegExp() matches the whole name", () => {
  deepStrictEqual(matches("PATH", ["PATH", "XPATH", "PATHX"]), ["PATH"]);
});

Deno.test("globToRegExp() '[abc]' matches one of a set", () => {
  deepStrictEqual(matches("[AB]X", ["AX", "BX", "CX", "ABX"]), ["AX", "BX"]);
  deepStrictEqual(matches("[A-C]", ["A", "B", "C", "D"]), ["A", "B", "C"]);
});

Deno.test("globToRegExp() '[!a]' matches one character not in a set", () => {
  deepStrictEqual(matches("[!A]X", ["AX", "BX", "X"]), ["BX"]);
});

Deno.test("globToRegExp() an unclosed '[' is literal", () => {
  deepStrictEqual(matches("A[B", ["A[B", "AB"]), ["A[B"]);
  deepStrictEqual(matches("[", ["[", "x"]), ["["]);
});

Deno.test("globToRegExp() treats regex metacharacters literally", () => {
  for (const c of [".", "+", "^", "$", "{", "}", "(", ")", "|", "\\", "]"]) {
    const name = `A${c}B`;
    deepStrictEqual(matches(name, [name, "AxB", "AB"]), [name], `for ${c}`);
  }
  deepStrictEqual(matches("A{2}", ["AA", "A{2}"]), ["A{2}"]);
  deepStrictEqual(matches("(A|B)", ["A", "B", "(A|B)"]), ["(A|B)"]);
});

Deno.test({
  name: "globToRegExp() a ']' first in a set is a member of it",
  fn() {
    deepStrictEqual(matches("[!]a]", ["b", "]", "a", "xa]"]), ["b"]);
    deepStrictEqual(matches("[]]", ["]", "x"]), ["]"]);
  },
});

// applyEnvOps()

function apply(env: Env, ops: EnvOp[], expand = true): [string, string][] {
  applyEnvOps(env, ops, expand);
  return [...env];
}

Deno.test("applyEnvOps() sets a variable", () => {
  deepStrictEqual(apply(envOf(), [{ kind: "set", text: "A=1" }]), [["A", "1"]]);
});

Deno.test("applyEnvOps() replaces an existing value", () => {
  deepStrictEqual(
    apply(envOf(["A", "0"]), [{ kind: "set", text: "A=1" }]),
    [["A", "1"]],
  );
});

Deno.test("applyEnvOps() expands from earlier variables", () => {
  deepStrictEqual(
    apply(envOf(["HOME", "/home/den"]), [
      { kind: "set", text: "A=$HOME:/x" },
      { kind: "set", text: "B=$A:$NOPE" },
    ]).slice(1),
    [["A", "/home/den:/x"], ["B", "/home/den:/x"]],
  );
});

Deno.test({
  name: "applyEnvOps() expands a variable's own old value",
  fn() {
    const env = envOf(["PATH", "/usr/bin:/bin"]);
    applyEnvOps(env, [{ kind: "set", text: "PATH=$PATH:/opt/bin" }], true);
    strictEqual(env.get("PATH"), "/usr/bin:/bin:/opt/bin");
  },
});

Deno.test("applyEnvOps() does not expand when expand is false", () => {
  deepStrictEqual(
    apply(envOf(["HOME", "/h"]), [{ kind: "set", text: "A=$HOME:x" }], false)
      .slice(1),
    [["A", "$HOME:x"]],
  );
});

Deno.test("applyEnvOps() strips single quotes before expanding", () => {
  deepStrictEqual(
    apply(envOf(["H", "/h"]), [{ kind: "set", text: "A='$H'" }]).slice(1),
    [["A", "/h"]],
  );
});

Deno.test("applyEnvOps() unsets variables matching a glob", () => {
  deepStrictEqual(
    apply(envOf(["PATH", "/bin"], ["PX", "1"], ["HOME", "/h"]), [
      { kind: "unset", glob: "P*" },
    ]),
    [["HOME", "/h"]],
  );
});

Deno.test("applyEnvOps() unset of a missing name is a no-op", () => {
  deepStrictEqual(
    apply(envOf(["A", "1"]), [{ kind: "unset", glob: "B" }]),
    [["A", "1"]],
  );
});

Deno.test("applyEnvOps() applies unset then set in order: set wins", () => {
  deepStrictEqual(
    apply(envOf(["PATH", "/bin"]), [
      { kind: "unset", glob: "P*" },
      { kind: "set", text: "PX=1" },
    ]),
    [["PX", "1"]],
  );
});

Deno.test("applyEnvOps() applies set then unset in order: unset wins", () => {
  deepStrictEqual(
    apply(envOf(["PATH", "/bin"]), [
      { kind: "set", text: "PX=1" },
      { kind: "unset", glob: "P*" },
    ]),
    [],
  );
});

Deno.test("applyEnvOps() reads NAME=VALUE lines from a file op", () => {
  deepStrictEqual(
    apply(envOf(), [{
      kind: "file",
      path: "/env",
      text: "A=1\nB='two words'\nC=\"q\"\n",
    }]),
    [["A", "1"], ["B", "two words"], ["C", '"q"']],
  );
});

Deno.test("applyEnvOps() skips blank lines in a file", () => {
  deepStrictEqual(
    apply(envOf(), [{ kind: "file", path: "/env", text: "\nA=1\n\n\nB=2" }]),
    [["A", "1"], ["B", "2"]],
  );
});

Deno.test("applyEnvOps() expands file lines unless told not to", () => {
  const ops: EnvOp[] = [{ kind: "file", path: "/env", text: "A=$H:x\n" }];
  deepStrictEqual(apply(envOf(["H", "/h"]), ops).slice(1), [["A", "/h:x"]]);
  deepStrictEqual(apply(envOf(["H", "/h"]), ops, false).slice(1), [[
    "A",
    "$H:x",
  ]]);
});

Deno.test("applyEnvOps() names FILE:LINE in a file's parse error", () => {
  throws(
    () =>
      applyEnvOps(envOf(), [{
        kind: "file",
        path: "/data/env",
        text: "A=1\n\nnodelim\n",
      }], true),
    denError("can't parse variable: no delimiter: /data/env:3"),
  );
  throws(
    () => applyEnvOps(envOf(), [{ kind: "file", path: "f", text: "=x" }], true),
    denError("can't parse variable: empty name: f:1"),
  );
});

Deno.test("applyEnvOps() names the argument in a set op's parse error", () => {
  throws(
    () => applyEnvOps(envOf(), [{ kind: "set", text: "=x" }], true),
    denError("can't parse variable: empty name: =x"),
  );
});

Deno.test("applyEnvOps() applies ops before a failing one", () => {
  const env = envOf();
  throws(() =>
    applyEnvOps(env, [
      { kind: "set", text: "A=1" },
      { kind: "set", text: "bad" },
    ], true)
  );
  deepStrictEqual([...env], [["A", "1"]]);
});

Deno.test("globToRegExp() knows the extended globs of FNM_EXTMATCH", () => {
  const m = (glob: string, s: string) => globToRegExp(glob).test(s);
  strictEqual(m("chue_@(1|2)", "chue_1"), true);
  strictEqual(m("chue_@(1|2)", "chue_3"), false);
  strictEqual(m("!(chue_*)", "chue_1"), false);
  strictEqual(m("!(chue_*)", "PATH"), true);
  strictEqual(m("a?(b)c", "ac"), true);
  strictEqual(m("a?(b)c", "abbc"), false);
  strictEqual(m("a*(b)c", "abbc"), true);
  strictEqual(m("a+(b)c", "ac"), false);
  strictEqual(m("a+(b|x)c", "abxc"), true);
  strictEqual(m("x!(y)", "xy"), false);
  strictEqual(m("x!(y)", "xz"), true);
  // Not an extended glob: a "(" without its operator stays literal.
  strictEqual(m("a(b)", "a(b)"), true);
});
