// Integration tests of `den convert SRC DEST` as the unprivileged test user:
// a directory to one SquashFS file and back, whole or not at all, and a
// hostile or broken .sqfs refused or tamed.

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { buildBusyboxImage, den, HAVE_BUSYBOX, tempDir, testUser, which } from "./_helpers.ts";

const ignore = !HAVE_BUSYBOX || !which("mksquashfs") || !which("unsquashfs");
const work = ignore ? undefined : tempDir("den-convert-test-");
const W = work?.path ?? "";
const IMG = `${W}/img`;
if (work) buildBusyboxImage(IMG);

function t(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn });
}

/** Names in W starting with prefix (temporaries are ".NAME.den-tmp-*"). */
function named(prefix: string): string[] {
  return [...Deno.readDirSync(W)].map((e) => e.name).filter((n) => n.startsWith(prefix));
}

/** diff -r of two trees, symbolic links compared as links. */
function treeDiff(a: string, b: string): string {
  const r = new Deno.Command("diff", { args: ["-r", "--no-dereference", a, b], stdout: "piped" })
    .outputSync();
  return new TextDecoder().decode(r.stdout);
}

/** The one "den: error:" line of a failed den, checked to be alone. */
function oneError(stderr: string): string {
  const errors = stderr.split("\n").filter((l) => l.startsWith("den: error:"));
  equal(errors.length, 1, stderr);
  return errors[0]!;
}

t(
  "den convert DIR IMG.sqfs and back: reproducible, the same tree, the same bytes again",
  async () => {
    const a = `${W}/a.sqfs`, b = `${W}/b.sqfs`;
    const r = await den(["convert", IMG, a]);
    equal(r.stderr, "");
    match(r.stdout, new RegExp(`^${a}: [0-9.]+ MiB SquashFS \\(mksquashfs [0-9.]+ s\\)\\n$`));
    equal(r.code, 0);
    await new Promise((ok) => setTimeout(ok, 1100)); // another second: times must not leak
    equal((await den(["convert", "-q", IMG, b])).code, 0);
    deepStrictEqual(Deno.readFileSync(a), Deno.readFileSync(b));

    const back = `${W}/back`;
    const d = await den(["convert", a, back]);
    equal(d.stderr, "");
    match(
      d.stdout,
      new RegExp(`^${back}: \\d+ entries from SquashFS \\(unsquashfs [0-9.]+ s\\)\\n$`),
    );
    equal(d.code, 0);
    equal(treeDiff(IMG, back), "");
    equal(Deno.lstatSync(back).uid, testUser().uid);
    equal(Deno.readLinkSync(`${back}/bin/sh`), "busybox");
    const again = `${W}/again.sqfs`;
    equal((await den(["convert", "-q", back, again])).code, 0);
    deepStrictEqual(Deno.readFileSync(again), Deno.readFileSync(a));
    deepStrictEqual(named(".a.sqfs").concat(named(".back"), named(".again")), []);
  },
);

t(
  "den convert to an existing DEST fails in one line; -f replaces a file or a directory",
  async () => {
    const sqfs = `${W}/f.sqfs`, dir = `${W}/f-dir`;
    Deno.writeTextFileSync(sqfs, "x");
    Deno.mkdirSync(`${dir}/old`, { recursive: true });
    const { uid, gid } = testUser();
    for (const p of [sqfs, dir, `${dir}/old`]) Deno.chownSync(p, uid, gid);
    const r = await den(["convert", IMG, sqfs]);
    equal(r.code, 31);
    equal(oneError(r.stderr), `den: error: can't convert ${sqfs}: destination exists`);
    equal(Deno.readTextFileSync(sqfs), "x");
    equal((await den(["convert", "-q", "-f", IMG, sqfs])).code, 0);
    const d = await den(["convert", sqfs, dir]);
    equal(d.code, 31);
    equal(oneError(d.stderr), `den: error: can't convert ${dir}: destination exists`);
    ok(Deno.statSync(`${dir}/old`).isDirectory);
    const f = await den(["convert", "-q", "--force", sqfs, dir]);
    equal(f.code, 0, f.stderr);
    equal(treeDiff(IMG, dir), "");
    deepStrictEqual(named(".f"), []);
  },
);

t("den convert of bad input: one line, exit 31, nothing left behind", async () => {
  const text = `${W}/text`;
  Deno.writeTextFileSync(text, "not an image\n");
  const fake = `${W}/fake.sqfs`;
  Deno.writeTextFileSync(fake, "hsqs and then nothing a SquashFS reader wants");
  // A real image cut short: its superblock is there, its tables are not.
  equal((await den(["convert", "-q", IMG, `${W}/whole.sqfs`])).code, 0);
  const cut = `${W}/cut.sqfs`;
  Deno.writeFileSync(cut, Deno.readFileSync(`${W}/whole.sqfs`).subarray(0, 4096));
  for (const p of [text, fake, cut]) Deno.chmodSync(p, 0o644);
  const cases: [string[], RegExp][] = [
    [[`${W}/nope`, `${W}/o1`], /^den: error: can't convert .*\/nope: No such file or directory/],
    [[text, `${W}/o2`], /^den: error: can't convert .*\/text: not a directory or a SquashFS file$/],
    [[fake, `${W}/o3`], /^den: error: unsquashfs .*\/fake\.sqfs: exit 1: FATAL ERROR: /],
    [[cut, `${W}/o4`], /^den: error: unsquashfs .*\/cut\.sqfs: exit 1: FATAL ERROR: /],
  ];
  for (const [args, want] of cases) {
    const r = await den(["convert", ...args]);
    equal(r.code, 31, r.stderr);
    match(oneError(r.stderr), want);
  }
  for (const o of ["o1", "o2", "o3", "o4", ".o1", ".o2", ".o3", ".o4"]) {
    deepStrictEqual(named(o), [], o);
  }
});

t("den convert usage errors exit 64; --help exits 0", async () => {
  const cases: [string[], string][] = [
    [[], "den: error: convert needs SRC and DEST"],
    [[IMG], "den: error: convert needs SRC and DEST"],
    [[IMG, IMG], `den: error: DEST is SRC: ${IMG}`],
    [[IMG, `${IMG}/inside.sqfs`], `den: error: DEST is inside SRC: ${IMG}/inside.sqfs`],
  ];
  for (const [args, want] of cases) {
    const r = await den(["convert", ...args]);
    equal(r.code, 64, r.stderr);
    equal(r.stderr.split("\n")[0], want);
  }
  const h = await den(["convert", "--help"]);
  equal(h.code, 0);
  match(h.stdout, /^Usage: den convert \[OPTION\.\.\.\] SRC DEST\n/);
});

t("den convert of a hostile .sqfs: links stay links, nothing outside DEST, no setuid", async () => {
  // Made by root, as a hostile file would be: a link out of the tree, a
  // setuid root program, a directory nobody may write.
  const src = `${W}/hostile-src`;
  Deno.mkdirSync(`${src}/ro`, { recursive: true });
  Deno.writeTextFileSync(`${src}/ro/f`, "f\n");
  Deno.chmodSync(`${src}/ro`, 0o555);
  Deno.writeTextFileSync(`${src}/suid`, "#!/bin/sh\n");
  Deno.chmodSync(`${src}/suid`, 0o6755);
  const outside = `${W}/outside`;
  Deno.symlinkSync(outside, `${src}/out`);
  Deno.symlinkSync("../../../../../../etc/passwd", `${src}/passwd`);
  const hostile = `${W}/hostile.sqfs`;
  const mk = new Deno.Command("mksquashfs", {
    args: [src, hostile, "-all-root", "-quiet", "-no-progress"],
    stdout: "null",
  }).outputSync();
  ok(mk.success);
  Deno.chmodSync(hostile, 0o644);
  const dest = `${W}/tamed`;
  const r = await den(["convert", "-q", hostile, dest]);
  equal(r.stderr, "");
  equal(r.code, 0);
  equal(Deno.readLinkSync(`${dest}/out`), outside);
  equal(Deno.readLinkSync(`${dest}/passwd`), "../../../../../../etc/passwd");
  deepStrictEqual(named("outside"), []);
  equal(Deno.statSync(`${dest}/suid`).mode! & 0o7777, 0o755);
  equal(Deno.statSync(`${dest}/ro`).mode! & 0o777, 0o755);
  equal(Deno.lstatSync(`${dest}/suid`).uid, testUser().uid);
  // The user can replace it: nothing in it is read-only to them.
  equal((await den(["convert", "-q", "-f", hostile, dest])).code, 0);
});

t(
  "den convert of a .sqfs with a name that climbs out (../../../x): refused, nothing written",
  async () => {
    // mksquashfs writes no such name: make one with a name of the same
    // length, metadata uncompressed (-noI...), and rename it in the bytes.
    const src = `${W}/climb-src`;
    Deno.mkdirSync(`${src}/d`, { recursive: true });
    Deno.writeTextFileSync(`${src}/d/abcdefghij`, "escaped\n");
    const plain = `${W}/climb-plain.sqfs`;
    const mk = new Deno.Command("mksquashfs", {
      args: [src, plain, "-noI", "-noD", "-noF", "-noX", "-quiet", "-no-progress"],
      stdout: "null",
    }).outputSync();
    ok(mk.success);
    const bytes = Deno.readFileSync(plain);
    const from = new TextEncoder().encode("abcdefghij");
    const at = bytes.findIndex((_, i) => from.every((c, j) => bytes[i + j] === c));
    ok(at > 0, "name not found in the file");
    bytes.set(new TextEncoder().encode("../../../x"), at);
    const climb = `${W}/climb.sqfs`;
    Deno.writeFileSync(climb, bytes);
    Deno.chmodSync(climb, 0o644);
    // DEST's temporary is W/.climb-out.den-tmp-*/root: ../../../x from its d/ is W/x.
    const r = await den(["convert", climb, `${W}/climb-out`]);
    equal(r.code, 31, r.stderr);
    match(oneError(r.stderr), /^den: error: unsquashfs .*\/climb\.sqfs: exit 1: /);
    deepStrictEqual(named("x"), []);
    deepStrictEqual(named("climb-out").concat(named(".climb-out")), []);
  },
);

Deno.test({
  name: "convert tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
