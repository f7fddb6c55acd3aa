// The command line as a whole: one parser and one error style for every
// verb, and the "--" that `deno task den -- ARGS` passes on.

import { equal } from "node:assert/strict";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

async function den(...args: string[]) {
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-lock", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

Deno.test("every verb reports a bad option the same way, exit 64", async () => {
  for (const verb of ["run", "unpack", "inspect", "images", "rm"]) {
    const r = await den(verb, "--bogus");
    equal(r.code, 64, verb);
    equal(
      r.stderr,
      `den: error: unrecognized option '--bogus'\nden: hint: try 'den ${verb} --help'\n`,
    );
  }
});

Deno.test("a leading '--' (from deno task den -- ARGS) is dropped", async () => {
  const r = await den("--", "--version");
  equal(r.code, 0, r.stderr);
  equal(r.stdout.trim(), (await den("--version")).stdout.trim());
});
