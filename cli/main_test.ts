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
  for (const verb of ["run", "unpack", "inspect", "images", "rm", "gc", "convert"]) {
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

Deno.test("every module loaded through lazy() is embedded by deno task compile", () => {
  const root = new URL("..", import.meta.url).pathname;
  const task: string = JSON.parse(Deno.readTextFileSync(`${root}deno.json`)).tasks.compile;
  const included = new Set([...task.matchAll(/--include (\S+)/g)].map((m) => m[1]));
  let checked = 0;
  for (const f of Deno.readDirSync(`${root}cli`)) {
    if (!f.name.endsWith(".ts")) continue;
    const text = Deno.readTextFileSync(`${root}cli/${f.name}`);
    for (const m of text.matchAll(/lazy<[^>]*>\(\s*"([^"]+)"/g)) {
      const path = new URL(m[1]!, `file://${root}cli/`).pathname.slice(root.length);
      equal(included.has(path), true, `${path} (from cli/${f.name}) is not --included`);
      checked++;
    }
  }
  equal(checked > 5, true);
});
