// Integration tests of `den unpack ARCHIVE IMG.sqfs` as the unprivileged
// test user: one reproducible SquashFS file, written whole or not at all.

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { buildBusyboxImage, den, HAVE_BUSYBOX, tempDir, which } from "./_helpers.ts";

const ignore = !HAVE_BUSYBOX || !which("mksquashfs") || !which("unsquashfs");
const work = ignore ? undefined : tempDir("den-squash-test-");
const TAR = `${work?.path}/bb.tar`;
if (work) {
  const img = buildBusyboxImage(`${work.path}/img`);
  const r = new Deno.Command("tar", { args: ["-C", img, "-cf", TAR, "."] }).outputSync();
  if (!r.success) throw new Error("tar failed");
  Deno.chmodSync(TAR, 0o644);
}

function t(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn });
}

function listing(file: string): string[] {
  const r = new Deno.Command("unsquashfs", { args: ["-lln", file], stdout: "piped" }).outputSync();
  return new TextDecoder().decode(r.stdout).trim().split("\n");
}

t(
  "den unpack ARCHIVE IMG.sqfs twice gives the same bytes, with metadata and mount points",
  async () => {
    const a = `${work!.path}/a.sqfs`, b = `${work!.path}/b`;
    const r = await den(["unpack", "-q", TAR, a]);
    equal(r.stderr, "");
    equal(r.code, 0);
    await new Promise((ok) => setTimeout(ok, 1100)); // another second: times must not leak
    equal((await den(["unpack", "-q", "--squashfs", TAR, b])).code, 0);
    deepStrictEqual(Deno.readFileSync(a), Deno.readFileSync(b));
    const names = listing(a).map((l) => l.split(" ").at(-1));
    for (
      const p of ["ch/metadata.json", "dev", "proc", "sys", "tmp", "etc/passwd", "bin/busybox"]
    ) {
      ok(names.some((n) => n === `squashfs-root/${p}` || n?.startsWith(`squashfs-root/${p}`)), p);
    }
    match(listing(a)[0]!, / 1970-01-01 00:00 squashfs-root$/);
  },
);

t("den unpack to an existing .sqfs fails in one line and leaves no temporary", async () => {
  const dest = `${work!.path}/exists.sqfs`;
  Deno.writeTextFileSync(dest, "x");
  const r = await den(["unpack", TAR, dest]);
  equal(r.code, 31);
  equal(r.stderr.split("\n")[0], `den: error: can't unpack ${dest}: destination exists`);
  equal(Deno.readTextFileSync(dest), "x");
});

t("den unpack of a bad archive to .sqfs leaves nothing behind", async () => {
  const bad = `${work!.path}/bad.tar`;
  Deno.writeTextFileSync(bad, "not a tar file at all");
  Deno.chmodSync(bad, 0o644);
  const r = await den(["unpack", bad, `${work!.path}/bad.sqfs`]);
  equal(r.code, 31);
  equal(r.stderr.split("\n").filter((l) => l.startsWith("den: error")).length, 1);
  ok(![...Deno.readDirSync(work!.path)].some((e) => e.name.startsWith(".bad.sqfs")));
  ok(![...Deno.readDirSync(work!.path)].some((e) => e.name === "bad.sqfs"));
});

Deno.test({
  name: "squash tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
