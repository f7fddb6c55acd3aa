// gcBlobs() and registerPull() on a storage directory made by hand: what is
// kept, what goes, and hostile entries in the cache.
import { deepStrictEqual, ok, rejects, strictEqual } from "node:assert/strict";
import { createHash } from "node:crypto";
import { gcBlobs, registerPull } from "./gc.ts";
import { lockFile } from "./file_lock.ts";

const enc = new TextEncoder();

interface Storage extends Disposable {
  dir: string;
  cache: string;
  /** Put bytes in the cache; returns their digest. */
  blob(bytes: Uint8Array | string): string;
  /** A manifest of config and layers, cached; returns its digest. */
  manifest(config: string, layers: string[]): string;
  /** A stored image whose metadata names `digest`. */
  image(name: string, digest: string): void;
  has(digest: string): boolean;
}

function storage(): Storage {
  const dir = Deno.makeTempDirSync({ prefix: "den-gc-" });
  const cache = `${dir}/blobs/sha256`;
  Deno.mkdirSync(cache, { recursive: true });
  Deno.mkdirSync(`${dir}/img`);
  const blob = (bytes: Uint8Array | string) => {
    const b = typeof bytes === "string" ? enc.encode(bytes) : bytes;
    const hex = createHash("sha256").update(b).digest("hex");
    Deno.writeFileSync(`${cache}/${hex}`, b);
    return `sha256:${hex}`;
  };
  const desc = (mediaType: string, digest: string) => ({
    mediaType,
    digest,
    size: Deno.statSync(`${cache}/${digest.slice(7)}`).size,
  });
  return {
    dir,
    cache,
    blob,
    manifest: (config, layers) =>
      blob(JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: desc("application/vnd.oci.image.config.v1+json", config),
        layers: layers.map((l) => desc("application/vnd.oci.image.layer.v1.tar+gzip", l)),
      })),
    image(name, digest) {
      Deno.mkdirSync(`${dir}/img/${name}/ch`, { recursive: true });
      Deno.writeTextFileSync(`${dir}/img/${name}/ch/metadata.json`, JSON.stringify({ digest }));
    },
    has: (digest) => {
      try {
        return Deno.lstatSync(`${cache}/${digest.slice(7)}`).isFile;
      } catch {
        return false;
      }
    },
    [Symbol.dispose]: () => Deno.removeSync(dir, { recursive: true }),
  };
}

/** Two images sharing a layer, and garbage. */
function twoImages(s: Storage) {
  const shared = s.blob("shared layer");
  const a = { config: s.blob("config a"), layer: s.blob("layer a") };
  const b = { config: s.blob("config b"), layer: s.blob("layer b") };
  const ma = s.manifest(a.config, [a.layer, shared]);
  const mb = s.manifest(b.config, [b.layer, shared]);
  s.image("a", ma);
  s.image("b", mb);
  return { shared, a: { ...a, manifest: ma }, b: { ...b, manifest: mb } };
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const p = new Deno.Command("true").spawn();
  await p.status;
  return p.pid;
}

function ago(path: string, ms: number) {
  const t = new Date(Date.now() - ms);
  Deno.utimeSync(path, t, t);
}

Deno.test("gcBlobs() keeps every blob of stored images and removes the rest", async () => {
  using s = storage();
  const { shared, a, b } = twoImages(s);
  const junk = s.blob("x".repeat(1000));
  const names: string[] = [];
  const r = await gcBlobs(s.dir, { onRemove: (n) => names.push(n) });
  deepStrictEqual(r, { removed: 1, bytes: 1000, kept: 7, parts: 0, locks: 0 });
  deepStrictEqual(names, [junk.slice(7)]);
  ok(!s.has(junk));
  Deno.removeSync(`${s.dir}/img/a`, { recursive: true });
  const r2 = await gcBlobs(s.dir);
  strictEqual(r2.removed, 3);
  for (const d of Object.values(a)) ok(!s.has(d), d);
  for (const d of [shared, ...Object.values(b)]) ok(s.has(d), d);
  // Nothing else was made or left in the cache.
  strictEqual([...Deno.readDirSync(s.cache)].length, 4);
});

Deno.test("gcBlobs() with dryRun reports the same and removes nothing", async () => {
  using s = storage();
  twoImages(s);
  Deno.removeSync(`${s.dir}/img/b`, { recursive: true });
  const before = [...Deno.readDirSync(s.cache)].map((e) => e.name).sort();
  const dry = await gcBlobs(s.dir, { dryRun: true });
  deepStrictEqual([...Deno.readDirSync(s.cache)].map((e) => e.name).sort(), before);
  const real = await gcBlobs(s.dir);
  deepStrictEqual(dry, real);
  strictEqual(real.removed, 3);
});

Deno.test("gcBlobs() copes with images it cannot follow", async () => {
  using s = storage();
  const keep = s.blob("kept");
  const missing = `sha256:${"0".repeat(64)}`;
  s.image("missing-manifest", missing); // an unpacked archive's digest, say
  s.image("hostile-digest", "sha256:../../../etc/passwd");
  s.image("no-digest", undefined as unknown as string);
  Deno.mkdirSync(`${s.dir}/img/no-metadata`);
  Deno.mkdirSync(`${s.dir}/img/bad-json/ch`, { recursive: true });
  Deno.writeTextFileSync(`${s.dir}/img/bad-json/ch/metadata.json`, "{");
  const notManifest = s.blob("not json");
  s.image("not-a-manifest", notManifest);
  // A "manifest" that is a symlink to a real manifest outside the cache is not read.
  const outside = Deno.makeTempFileSync();
  Deno.writeTextFileSync(
    outside,
    JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: "", digest: keep, size: 4 },
      layers: [],
    }),
  );
  const link = `sha256:${"1".repeat(64)}`;
  Deno.symlinkSync(outside, `${s.cache}/${link.slice(7)}`);
  s.image("symlinked-manifest", link);
  const r = await gcBlobs(s.dir);
  strictEqual(r.removed, 1); // "kept": nothing refers to it but the symlinked manifest
  ok(!s.has(keep));
  ok(s.has(notManifest));
  ok(Deno.lstatSync(`${s.cache}/${link.slice(7)}`).isSymlink);
  Deno.removeSync(outside);
});

Deno.test("gcBlobs() neither follows nor removes symlinks and directories named like blobs", async () => {
  using s = storage();
  const outsideDir = Deno.makeTempDirSync();
  const victim = `${outsideDir}/precious`;
  Deno.writeTextFileSync(victim, "do not delete");
  const names = ["a", "b", "c", "d"].map((c) => c.repeat(64));
  Deno.symlinkSync(victim, `${s.cache}/${names[0]}`);
  Deno.symlinkSync(outsideDir, `${s.cache}/${names[1]}`);
  Deno.mkdirSync(`${s.cache}/${names[2]}`);
  Deno.writeTextFileSync(`${s.cache}/${names[2]}/inner`, "x");
  Deno.symlinkSync(victim, `${s.cache}/${names[3]}.lock`);
  Deno.symlinkSync(victim, `${s.cache}/${names[3]}.1-abcd.part`);
  Deno.writeTextFileSync(`${s.cache}/README`, "not a blob name");
  const logs: string[] = [];
  const r = await gcBlobs(s.dir, { log: (m) => logs.push(m) });
  deepStrictEqual(r, { removed: 0, bytes: 0, kept: 0, parts: 0, locks: 0 });
  strictEqual(Deno.readTextFileSync(victim), "do not delete");
  strictEqual([...Deno.readDirSync(s.cache)].length, 6);
  strictEqual(logs.length, 5, logs.join("\n"));
  ok(logs[0]!.endsWith("not a regular file"), logs[0]);
  Deno.removeSync(outsideDir, { recursive: true });
});

Deno.test("gcBlobs() refuses a blob cache that is a symlink, and is happy with none", async () => {
  using s = storage();
  Deno.removeSync(`${s.dir}/blobs`, { recursive: true });
  deepStrictEqual(await gcBlobs(s.dir), { removed: 0, bytes: 0, kept: 0, parts: 0, locks: 0 });
  const elsewhere = Deno.makeTempDirSync();
  Deno.mkdirSync(`${elsewhere}/sha256`);
  Deno.writeTextFileSync(`${elsewhere}/sha256/${"e".repeat(64)}`, "x");
  Deno.symlinkSync(elsewhere, `${s.dir}/blobs`);
  await rejects(gcBlobs(s.dir), /^DenError: gc .*\/blobs: not a directory \(a symlink\)$/);
  ok(Deno.statSync(`${elsewhere}/sha256/${"e".repeat(64)}`).isFile);
  Deno.removeSync(elsewhere, { recursive: true });
});

Deno.test("gcBlobs() keeps the blobs of registered pulls while they live", async () => {
  using s = storage();
  const pulled = [s.blob("manifest"), s.blob("config"), s.blob("layer")];
  const reg = registerPull(s.dir, pulled);
  const st = Deno.statSync(reg.path);
  strictEqual(st.mode! & 0o777, 0o600);
  ok(reg.path.startsWith(`${s.dir}/blobs/.pulls/`));
  ok(reg.path.includes(`-${Deno.pid}-`));
  let r = await gcBlobs(s.dir);
  strictEqual(r.removed, 0);
  strictEqual(r.kept, 3);
  for (const d of pulled) ok(s.has(d));

  // Another host's registration counts while it is refreshed; this host's while its pid lives.
  const other = `${s.dir}/blobs/.pulls/elsewhere-1-x`;
  const otherBlob = s.blob("remote pull");
  Deno.writeTextFileSync(
    other,
    JSON.stringify({ host: "elsewhere", pidns: "pid:[1]", pid: 1, digests: [otherBlob] }),
  );
  const gone = `${s.dir}/blobs/.pulls/dead`;
  const goneBlob = s.blob("dead pull");
  const me = JSON.parse(Deno.readTextFileSync(reg.path));
  Deno.writeTextFileSync(
    gone,
    JSON.stringify({ ...me, pid: await deadPid(), digests: [goneBlob] }),
  );
  reg.release();
  reg.release();
  r = await gcBlobs(s.dir);
  strictEqual(r.removed, 4);
  ok(s.has(otherBlob));
  ok(!s.has(goneBlob));
  ok(!Deno.statSync(`${s.dir}/blobs/.pulls`).isFile);
  deepStrictEqual([...Deno.readDirSync(`${s.dir}/blobs/.pulls`)].map((e) => e.name), [
    "elsewhere-1-x",
  ]);
  ago(other, 2 * 60 * 60_000);
  r = await gcBlobs(s.dir);
  strictEqual(r.removed, 1);
  ok(!s.has(otherBlob));
  strictEqual([...Deno.readDirSync(`${s.dir}/blobs/.pulls`)].length, 0);
});

Deno.test("gcBlobs() puts back a blob that a pull registered while gc was deciding", async () => {
  using s = storage();
  const { a } = twoImages(s);
  Deno.removeSync(`${s.dir}/img/a`, { recursive: true });
  let reg: ReturnType<typeof registerPull> | undefined;
  const r = await gcBlobs(s.dir, {
    onAside() {
      // Aside: a pull that looks now finds the blob missing (and downloads it).
      ok(!s.has(a.layer));
      reg = registerPull(s.dir, [a.layer]);
    },
  });
  strictEqual(r.removed, 2);
  strictEqual(r.kept, 5);
  ok(s.has(a.layer));
  ok(!s.has(a.config) && !s.has(a.manifest));
  strictEqual([...Deno.readDirSync(s.cache)].length, 5); // nothing left aside
  reg!.release();
});

Deno.test("gcBlobs() removes .part files of dead processes and stale locks, not live ones", async () => {
  using s = storage();
  const hex = "f".repeat(64);
  const dead = await deadPid();
  const orphan = `${s.cache}/${hex}.${dead}-0a1b2c3d.part`;
  const young = `${s.cache}/${hex}.${dead}-11111111.part`;
  const live = `${s.cache}/${hex}.1-22222222.part`; // pid 1 lives
  const old = `${s.cache}/${hex}.1-33333333.part`;
  for (const p of [orphan, young, live, old]) Deno.writeTextFileSync(p, "partial");
  ago(orphan, 20 * 60_000);
  ago(old, 2 * 60 * 60_000);

  const held = await lockFile(`${s.cache}/${"1".repeat(64)}.lock`);
  ok(held);
  const staleLock = `${s.cache}/${"2".repeat(64)}.lock`;
  const holder = JSON.parse(Deno.readTextFileSync(held.path));
  Deno.writeTextFileSync(staleLock, JSON.stringify({ ...holder, pid: dead, token: "t" }));
  const remoteLock = `${s.cache}/${"3".repeat(64)}.lock`;
  const remoteOld = `${s.cache}/${"4".repeat(64)}.lock`;
  for (const p of [remoteLock, remoteOld]) {
    Deno.writeTextFileSync(p, JSON.stringify({ ...holder, host: "elsewhere", token: p }));
  }
  ago(remoteOld, 10 * 60_000);

  const dry = await gcBlobs(s.dir, { dryRun: true });
  strictEqual(dry.parts, 2);
  strictEqual(dry.locks, 0);
  strictEqual([...Deno.readDirSync(s.cache)].length, 8);
  const r = await gcBlobs(s.dir);
  strictEqual(r.parts, 2);
  strictEqual(r.bytes, 14);
  strictEqual(r.locks, 2);
  deepStrictEqual(
    [...Deno.readDirSync(s.cache)].map((e) => `${s.cache}/${e.name}`).sort(),
    [held.path, remoteLock, young, live].sort(),
  );
  held.release();
});
