// Integration tests of `den unpack ARCHIVE IMG.sqfs` as the unprivileged
// test user: one reproducible SquashFS file, written whole or not at all.

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import {
  asTestUser,
  buildBusyboxImage,
  den,
  denArgv,
  denPlainArgv,
  hasUserns,
  HAVE_BUSYBOX,
  tempDir,
  testUserEnv,
  which,
} from "./_helpers.ts";
import { checkClean, HAVE_REGISTRY, pushImage, startRegistry } from "./registry_helpers.ts";

const ignore = !HAVE_BUSYBOX || !which("mksquashfs") || !which("unsquashfs");
const work = ignore ? undefined : tempDir("den-squash-test-");
const TAR = `${work?.path}/bb.tar`;
if (work) {
  const img = buildBusyboxImage(`${work.path}/img`);
  // An old file: its time must survive (Python checks .pyc files against it).
  const old = new Date("2020-01-01T00:00:00Z");
  Deno.utimeSync(`${img}/etc/image-marker`, old, old);
  // The root's time, in the archive's "./" entry, is the image's too.
  const root = new Date("2019-01-01T00:00:00Z");
  Deno.utimeSync(img, root, root);
  const r = new Deno.Command("tar", { args: ["-C", img, "-cf", TAR, "."] }).outputSync();
  if (!r.success) throw new Error("tar failed");
  Deno.chmodSync(TAR, 0o644);
}

function t(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn });
}

/** What den ARGS writes on a pseudo-terminal (script), as the test user;
 * it must succeed. */
function onTerminal(args: string[]): string {
  const line = asTestUser(denPlainArgv(args)).map((a) => `'${a}'`).join(" ");
  const r = new Deno.Command("script", {
    args: ["-qec", line, "/dev/null"],
    env: { ...testUserEnv(), TERM: "dumb" },
    clearEnv: true,
    cwd: work!.path,
    stdin: "null",
    stdout: "piped",
  }).outputSync();
  const text = new TextDecoder().decode(r.stdout);
  equal(r.code, 0, text);
  return text;
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
    match(listing(a)[0]!, / 2019-01-01 00:00 squashfs-root$/);
    // What den made has $SOURCE_DATE_EPOCH's time (0 here).
    ok(listing(a).some((l) => / 1970-01-01 00:00 squashfs-root\/ch\/metadata.json$/.test(l)));
    ok(listing(a).some((l) => / 2020-01-01 00:00 squashfs-root\/etc\/image-marker$/.test(l)));
  },
);

t(
  "on a terminal, den unpack to .sqfs shows its steps and erases them; elsewhere nothing",
  async () => {
    const dest = `${work!.path}/tty.sqfs`;
    const text = onTerminal(["unpack", TAR, dest]);
    // (The unpack's own line shows only when it takes a while.)
    match(text, new RegExp(`\\r\\x1b\\[Kden: mksquashfs: packing ${dest} \\(zstd\\)  0 s`));
    // Erased, then the summary on a line of its own.
    match(text, new RegExp(`\\r\\x1b\\[K${dest}: [\\d.]+ MiB SquashFS \\(unpack `));
    // Piped: the summary alone.
    const piped = await den(["unpack", "-f", TAR, dest]);
    equal(piped.code, 0);
    equal(piped.stderr, "");
    match(piped.stdout, new RegExp(`^${dest}: [\\d.]+ MiB SquashFS \\(unpack [^\\n]*\\)\\n$`));
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

t("den unpack to .sqfs stopped by SIGTERM at any moment leaves nothing behind", async () => {
  const dir = `${work!.path}/term`;
  Deno.mkdirSync(dir);
  Deno.chmodSync(dir, 0o777);
  // A mksquashfs that starts late: every SIGTERM below comes before the
  // end, while den starts, unpacks, or waits for mksquashfs. (The sleep
  // that outlives its SIGKILLed shell holds none of den's pipes.)
  const bin = `${work!.path}/slow-bin`;
  Deno.mkdirSync(bin);
  Deno.writeTextFileSync(
    `${bin}/mksquashfs`,
    '#!/bin/sh\nsleep 2 >/dev/null 2>&1\nexec /usr/bin/mksquashfs "$@"\n',
  );
  Deno.chmodSync(`${bin}/mksquashfs`, 0o755);
  Deno.chmodSync(bin, 0o755);
  for (const ms of [20, 100, 200, 350, 500, 800, 1200]) {
    const dest = `${dir}/t${ms}.sqfs`;
    const [cmd, ...args] = denArgv(["unpack", "-q", TAR, dest]);
    const child = new Deno.Command(cmd!, {
      args,
      env: { ...testUserEnv(), PATH: `${bin}:/usr/bin:/bin` },
      clearEnv: true,
      stdout: "null",
      stderr: "piped",
    }).spawn();
    await new Promise((ok) => setTimeout(ok, ms));
    child.kill("SIGTERM"); // setpriv execs den: this is den
    const r = await child.output();
    // 143: den said "interrupted by SIGTERM", or died of it before it
    // listened (then it had made nothing yet).
    equal(r.code, 143, new TextDecoder().decode(r.stderr));
    deepStrictEqual(named(dir, `t${ms}.sqfs`), []);
    deepStrictEqual(named(dir, `.t${ms}.sqfs`), []);
  }
});

/** Entries of dir whose name starts with prefix (temporaries are ".NAME.den-tmp-*"). */
function named(dir: string, prefix: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.startsWith(prefix));
}

Deno.test({
  name:
    "den pull REF IMG.sqfs: one reproducible file from a loopback registry, whole or not at all",
  ignore: ignore || !HAVE_REGISTRY,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using reg = await startRegistry();
    await pushImage("sq", [{ architecture: Deno.build.arch === "aarch64" ? "arm64" : "amd64" }], [
      `${reg.host}/test/sq:1`,
    ]);
    await using tmp = tempDir("den-squash-pull-");
    const dir = tmp.path;
    const storage = `${dir}/storage`;
    const s = ["-s", storage];
    const ref = `${reg.host}/test/sq:1`;

    await t.step("on a terminal: the pull's board, then mksquashfs's line, both erased", () => {
      const c = `${dir}/tty.sqfs`;
      const text = onTerminal(["pull", ...s, ref, c]);
      match(text, /den: pulling /);
      // The board is erased (cursor up over its lines, erase below), then
      // mksquashfs's line drawn and erased, then the summaries.
      match(
        text,
        new RegExp(
          `\\x1b\\[\\d+F\\x1b\\[J\\r\\x1b\\[Kden: mksquashfs: packing ${c} \\(zstd\\)  0 s\\r\\x1b\\[Kden: pulled `,
        ),
      );
      match(text, new RegExp(`den: ${c}: [0-9.]+ MiB SquashFS \\(pull [^\\n]*\\)\\r\\n$`));
      ok(Deno.statSync(c).isFile);
    });

    await t.step("pulled twice, by name and with --squashfs: the same bytes", async () => {
      const a = `${dir}/a.sqfs`;
      const r = await den(["pull", ...s, ref, a]);
      equal(r.code, 0, r.stderr);
      equal(r.stdout, "");
      const lines = r.stderr.trim().split("\n");
      ok(lines[0]!.startsWith(`den: pulled ${ref} (sha256:`), r.stderr);
      match(lines[1]!, new RegExp(`^den: ${a}: [0-9.]+ MiB SquashFS \\(pull `));
      equal(lines.length, 2, r.stderr);
      await new Promise((ok) => setTimeout(ok, 1100)); // another second: times must not leak
      const b = await den(["pull", "-q", ...s, "--squashfs", ref, `${dir}/b`]);
      equal(b.code, 0, b.stderr);
      equal(b.stderr, "");
      deepStrictEqual(Deno.readFileSync(a), Deno.readFileSync(`${dir}/b`));
      const names = listing(a).map((l) => l.split(" ").at(-1));
      for (const p of ["ch/metadata.json", "ch/environment", "etc/image-marker", "dev", "proc"]) {
        ok(names.includes(`squashfs-root/${p}`), p);
      }
      checkClean(storage, dir);
      if (hasUserns() && which("squashfuse")) {
        const run = await den([
          "run",
          a,
          "--",
          "sh",
          "-c",
          "cat /etc/image-marker; echo $DEN_MARKER",
        ]);
        equal(run.stderr, "");
        equal(run.stdout, "sq\nsq\n");
      }
    });

    await t.step("an existing DEST is refused in one line, then replaced with -f", async () => {
      const dest = `${dir}/exists.sqfs`;
      Deno.writeTextFileSync(dest, "x");
      Deno.chmodSync(dest, 0o666);
      const r = await den(["pull", ...s, ref, dest]);
      equal(r.code, 31);
      equal(r.stderr.split("\n")[0], `den: error: can't pull ${dest}: destination exists`);
      equal(Deno.readTextFileSync(dest), "x");
      const f = await den(["pull", "-q", "-f", ...s, ref, dest]);
      equal(f.code, 0, f.stderr);
      deepStrictEqual(Deno.readFileSync(dest), Deno.readFileSync(`${dir}/a.sqfs`));
    });

    await t.step("a failed pull leaves no file and no temporary", async () => {
      const r = await den(["pull", ...s, `${reg.host}/test/nope:1`, `${dir}/nope.sqfs`]);
      equal(r.code, 31);
      equal(r.stderr.split("\n").filter((l) => l.startsWith("den: error")).length, 1, r.stderr);
      deepStrictEqual(named(dir, ".nope.sqfs"), []);
      deepStrictEqual(named(dir, "nope.sqfs"), []);
      checkClean(storage, dir);
    });

    await t.step("--squashfs without DEST is a usage error", async () => {
      const r = await den(["pull", ...s, "--squashfs", ref]);
      equal(r.code, 64);
      equal(r.stderr.split("\n")[0], "den: error: --squashfs needs DEST");
    });
  },
});

Deno.test({
  name: "squash tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
