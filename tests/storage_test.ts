// The storage directory on a shared node: created 0700, and refused when
// another user could change it (pre-created, writable by others, foreign
// owner), so nobody can swap a stored image under `den run NAME`.

import { equal, match, ok, strictEqual } from "node:assert/strict";
import {
  buildBusyboxImage,
  den,
  exists,
  hasUserns,
  HAVE_BUSYBOX,
  tempDir,
  testUser,
} from "./_helpers.ts";
import { sh } from "./registry_helpers.ts";

const ignore = !HAVE_BUSYBOX || !hasUserns();
const work = ignore ? undefined : tempDir("den-storage-test-");
const W = work?.path ?? "/nonexistent";
let tar = "";
if (work) {
  buildBusyboxImage(`${W}/img`);
  tar = `${W}/bb.tar`;
  new Deno.Command("tar", { args: ["-C", `${W}/img`, "-cf", tar, "."] }).outputSync();
  Deno.chmodSync(tar, 0o644);
}

function t(name: string, fn: () => Promise<void>, rootOnly = false) {
  Deno.test({
    name,
    ignore: ignore || (rootOnly && Deno.uid() !== 0),
    sanitizeResources: false,
    sanitizeOps: false,
    fn,
  });
}

const mode = (p: string) => (Deno.statSync(p).mode ?? 0) & 0o7777;

t("storage is created 0700 and images in it run", async () => {
  const storage = `${W}/s1/den`;
  const r = await den(["unpack", "-q", tar, "bb"], { env: { DEN_STORAGE: storage } });
  equal(r.code, 0, r.stderr);
  equal(mode(`${W}/s1`), 0o700);
  equal(mode(storage), 0o700);
  equal(mode(`${storage}/img`), 0o700);
  const run = await den(["run", "bb", "--", "true"], { env: { DEN_STORAGE: storage } });
  equal(run.code, 0, run.stderr);
});

t("a storage directory others can write is refused, for unpack, run, images and rm", async () => {
  const storage = `${W}/s2`;
  const ok0 = await den(["unpack", "-q", tar, "bb"], { env: { DEN_STORAGE: storage } });
  equal(ok0.code, 0, ok0.stderr);
  Deno.chmodSync(storage, 0o777);
  for (
    const args of [["run", "bb", "--", "true"], ["images"], ["rm", "bb"], ["unpack", tar, "b2"]]
  ) {
    const r = await den(args, { env: { DEN_STORAGE: storage } });
    equal(r.code, 31, `${args}: ${r.stderr}`);
    match(r.stderr, /^den: error: storage directory: .*s2 is writable by others \(mode 0777\)\n/);
    match(r.stderr, /den: hint: .*-s or DEN_STORAGE/);
  }
  ok(Deno.statSync(`${storage}/img/bb`).isDirectory, "rm removed from an unsafe storage");
});

t("a storage directory owned by another user is refused; nothing is written in it", async () => {
  // Made by root (another user than the one den runs as).
  const storage = `${W}/s3`;
  Deno.mkdirSync(`${storage}/img`, { recursive: true, mode: 0o755 });
  const r = await den(["unpack", "-q", tar, "bb"], { env: { DEN_STORAGE: storage } });
  equal(r.code, 31, r.stderr);
  match(r.stderr, new RegExp(`s3 is owned by uid 0, not you \\(${testUser().uid}\\)`));
  equal([...Deno.readDirSync(`${storage}/img`)].length, 0);
}, true);

t("a symlinked storage directory owned by another user is refused", async () => {
  const target = `${W}/s4-target`;
  Deno.mkdirSync(target, { mode: 0o700 });
  const { uid, gid } = testUser();
  Deno.chownSync(target, uid, gid);
  Deno.symlinkSync(target, `${W}/s4`); // made by root, not by the user
  const r = await den(["unpack", "-q", tar, "bb"], { env: { DEN_STORAGE: `${W}/s4` } });
  equal(r.code, 31, r.stderr);
  match(r.stderr, /s4 is a symlink owned by uid 0/);
}, true);

Deno.test({
  name: "storage tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});

Deno.test("den unpack: the temporary directory a killed unpack left beside DEST goes at the next one", async () => {
  await using tmp = tempDir("den-scratch-");
  const img = buildBusyboxImage(`${tmp.path}/src`);
  const archive = `${tmp.path}/bb.tar`;
  await sh(["tar", "-C", img, "-cf", archive, "."]);
  const host = Deno.hostname().replace(/[^A-Za-z0-9_.]/g, "_");
  // A dead process's (pid 2^22 + 1 is above any pid_max), a live one's (ours), another name's.
  const dead = `${tmp.path}/.out.den-tmp-${host}-4194305-abcd`;
  const live = `${tmp.path}/.out.den-tmp-${host}-${Deno.pid}-abcd`;
  const other = `${tmp.path}/.other.den-tmp-${host}-4194305-abcd`;
  const { uid, gid } = Deno.uid() === 0 ? testUser() : { uid: Deno.uid(), gid: Deno.gid()! };
  for (const d of [dead, live, other]) {
    Deno.mkdirSync(`${d}/rootfs/usr`, { recursive: true });
    for (const p of [d, `${d}/rootfs`, `${d}/rootfs/usr`]) Deno.chownSync(p, uid, gid);
  }
  Deno.chmodSync(`${dead}/rootfs/usr`, 0o500);
  const r = await den(["unpack", "-q", archive, `${tmp.path}/out`]);
  strictEqual(r.code, 0, r.stderr);
  ok(!exists(dead), "the dead unpack's directory is still there");
  ok(exists(live) && exists(other));
  ok(exists(`${tmp.path}/out/bin/busybox`));
});
