import { assertEquals, assertRejects } from "./_assert.ts";
import { gzip, makeDockerArchive, makeTar, sha256, zstd } from "../tests/_tar.ts";
import { unpackImage } from "./unpack_image.ts";
import { readImageMetadata } from "./metadata.ts";
import { describeError } from "../error.ts";

function tmp() {
  const dir = Deno.makeTempDirSync({ prefix: "den-unpack-test-" });
  return {
    dir,
    write(name: string, data: Uint8Array) {
      Deno.writeFileSync(`${dir}/${name}`, data);
      return `${dir}/${name}`;
    },
    /** Names in dir, to check that no temp dir is left behind. */
    ls() {
      return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    },
    [Symbol.dispose]() {
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

const layer1 = makeTar([
  { name: "bin/", type: "dir" },
  { name: "bin/sh", data: "#!sh", mode: 0o755 },
  { name: "etc/", type: "dir" },
  { name: "etc/resolv.conf", type: "symlink", linkname: "/run/systemd/resolve/stub-resolv.conf" },
  { name: "gone", data: "x" },
]);
const layer2 = makeTar([{ name: ".wh.gone" }, { name: "new", data: "n" }], { end: false });

Deno.test("unpackImage() unpacks a gzip docker-archive with metadata", async () => {
  using t = tmp();
  const ar = t.write(
    "img.tar",
    await makeDockerArchive([gzip(layer1), layer2], { tags: ["x/y:1"] }),
  );
  const r = await unpackImage(ar, `${t.dir}/out`);
  assertEquals(r.layers, 2);
  assertEquals(r.name, "x/y:1");
  const root = `${t.dir}/out`;
  assertEquals(Deno.readTextFileSync(`${root}/bin/sh`), "#!sh");
  assertEquals(Deno.readTextFileSync(`${root}/new`), "n");
  assertEquals(Deno.lstatSync(`${root}/etc/resolv.conf`).isFile, true);
  for (const d of ["dev", "proc", "sys", "tmp", "home", "mnt"]) {
    assertEquals(Deno.statSync(`${root}/${d}`).isDirectory, true);
  }
  assertEquals(Deno.statSync(`${root}/tmp`).mode! & 0o7777, 0o1777);
  const m = readImageMetadata(root)!;
  assertEquals(m["env_list"], ["PATH=/usr/bin:/bin", "FOO=bar"]);
  assertEquals(m.env.FOO, "bar");
  assertEquals(m.cmd, ["/bin/sh"]);
  assertEquals(m.cwd, "/");
  assertEquals(Deno.readTextFileSync(`${root}/ch/environment`), "PATH=/usr/bin:/bin\nFOO=bar\n");
  assertEquals(t.ls(), ["img.tar", "out"]);
});

Deno.test("unpackImage() unpacks plain rootfs tarballs (zstd) and a compressed archive", async () => {
  using t = tmp();
  await unpackImage(t.write("root.tar.zst", zstd(layer1)), `${t.dir}/a`);
  assertEquals(Deno.readTextFileSync(`${t.dir}/a/bin/sh`), "#!sh");
  assertEquals(readImageMetadata(`${t.dir}/a`)!.env, {});
  const ar = t.write("img.tgz", gzip(await makeDockerArchive([layer1])));
  await unpackImage(ar, `${t.dir}/b`);
  assertEquals(Deno.readTextFileSync(`${t.dir}/b/gone`), "x");
  assertEquals(t.ls(), ["a", "b", "img.tgz", "root.tar.zst"]);
});

Deno.test("unpackImage() unpacks an OCI layout directory and archive", async () => {
  using t = tmp();
  const enc = new TextEncoder();
  const lgz = gzip(layer1);
  const blobs: [string, Uint8Array][] = [];
  const add = async (b: Uint8Array) => {
    const d = await sha256(b);
    blobs.push([d, b]);
    return { digest: d, size: b.length };
  };
  const l = await add(lgz);
  const config = await add(enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: { Env: ["A=1"], Entrypoint: ["/bin/sh"], WorkingDir: "/w" },
    rootfs: { type: "layers", diff_ids: [await sha256(layer1)] },
  })));
  const manifest = await add(enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", ...l }],
  })));
  const index = {
    schemaVersion: 2,
    manifests: [{
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      ...manifest,
      annotations: { "org.opencontainers.image.ref.name": "v1" },
    }],
  };
  const layout = `${t.dir}/layout`;
  Deno.mkdirSync(`${layout}/blobs/sha256`, { recursive: true });
  Deno.writeTextFileSync(`${layout}/oci-layout`, '{"imageLayoutVersion":"1.0.0"}');
  Deno.writeTextFileSync(`${layout}/index.json`, JSON.stringify(index));
  for (const [d, b] of blobs) Deno.writeFileSync(`${layout}/blobs/sha256/${d.slice(7)}`, b);
  const r = await unpackImage(layout, `${t.dir}/a`);
  assertEquals(r.name, "v1");
  assertEquals(readImageMetadata(`${t.dir}/a`)!.cwd, "/w");
  const ar = t.write(
    "oci.tar",
    makeTar([
      { name: "oci-layout", data: '{"imageLayoutVersion":"1.0.0"}' },
      { name: "index.json", data: JSON.stringify(index) },
      ...blobs.map(([d, b]) => ({ name: `blobs/sha256/${d.slice(7)}`, data: b })),
    ]),
  );
  await unpackImage(ar, `${t.dir}/b`);
  assertEquals(Deno.readTextFileSync(`${t.dir}/b/bin/sh`), "#!sh");
  // A corrupted blob fails its digest and leaves nothing behind.
  const bad = Deno.readFileSync(`${layout}/blobs/sha256/${l.digest.slice(7)}`);
  bad[bad.length - 5]! ^= 0xff;
  Deno.writeFileSync(`${layout}/blobs/sha256/${l.digest.slice(7)}`, bad);
  const e = await assertRejects(() => unpackImage(layout, `${t.dir}/c`));
  assertEquals(describeError(e).startsWith("unpack layer 1/1: "), true);
  assertEquals(t.ls(), ["a", "b", "layout", "oci.tar"]);
});

// Failures: exact error line, no DEST, no temp dir.
const failures: { name: string; archive: () => Promise<Uint8Array>; error: string }[] = [
  {
    name: "bad diff_id",
    archive: () => makeDockerArchive([layer1], { diffIds: [`sha256:${"0".repeat(64)}`] }),
    error: `unpack layer 1/1: diff_id mismatch: expected sha256:${"0".repeat(64)}, got ${""}`,
  },
  {
    name: "truncated gzip layer",
    archive: () => makeDockerArchive([gzip(layer1).subarray(0, 100)]),
    error: "unpack layer 1/1: gzip data truncated (unexpected end of file)",
  },
  {
    name: "corrupt gzip layer",
    archive: () => {
      const g = gzip(layer1);
      g.fill(0x55, 20, 60);
      return makeDockerArchive([g]);
    },
    error: "unpack layer 1/1: corrupt gzip data",
  },
  {
    name: "entry outside rootfs",
    archive: () => makeDockerArchive([layer1, makeTar([{ name: "../../etc/passwd", data: "x" }])]),
    error: 'unpack layer 2/2: refusing entry outside rootfs: "../../etc/passwd"',
  },
  {
    name: "truncated archive",
    archive: async () => (await makeDockerArchive([layer1])).subarray(0, 3000),
    error: "open archive img.tar: ",
  },
];

for (const f of failures) {
  Deno.test(`unpackImage() fails cleanly: ${f.name}`, async () => {
    using t = tmp();
    const ar = t.write("img.tar", await f.archive());
    const e = await assertRejects(() => unpackImage(ar, `${t.dir}/out`));
    const line = describeError(e).replace(` ${t.dir}/`, " ");
    if (!line.startsWith(f.error.replace(/got $/, "got "))) {
      throw new Error(`unexpected error line: ${line}`);
    }
    assertEquals(t.ls(), ["img.tar"]);
  });
}

Deno.test("unpackImage() keeps an existing DEST unless forced", async () => {
  using t = tmp();
  const ar = t.write("img.tar", await makeDockerArchive([layer1]));
  Deno.mkdirSync(`${t.dir}/out`);
  Deno.writeTextFileSync(`${t.dir}/out/mine`, "1");
  const e = await assertRejects(() => unpackImage(ar, `${t.dir}/out`), "destination exists");
  assertEquals(describeError(e), `unpack ${t.dir}/out: destination exists`);
  assertEquals(Deno.readTextFileSync(`${t.dir}/out/mine`), "1");
  await unpackImage(ar, `${t.dir}/out`, { force: true });
  assertEquals([...Deno.readDirSync(`${t.dir}/out`)].some((d) => d.name === "mine"), false);
  assertEquals(t.ls(), ["img.tar", "out"]);
});

Deno.test("unpackImage(): two racing unpacks give one complete image", async () => {
  using t = tmp();
  const a = t.write("a.tar", await makeDockerArchive([makeTar([{ name: "a", data: "a" }])]));
  const b = t.write("b.tar", await makeDockerArchive([makeTar([{ name: "b", data: "b" }])]));
  const rs = await Promise.allSettled([
    unpackImage(a, `${t.dir}/out`),
    unpackImage(b, `${t.dir}/out`),
  ]);
  const ok = rs.filter((r) => r.status === "fulfilled").length;
  assertEquals(ok >= 1, true);
  const names = [...Deno.readDirSync(`${t.dir}/out`)].map((d) => d.name);
  assertEquals(names.includes("a") !== names.includes("b"), true);
  assertEquals(t.ls(), ["a.tar", "b.tar", "out"]);
});

Deno.test("unpackImage() chooses by arch and lists choices when ambiguous", async () => {
  using t = tmp();
  const one = await makeDockerArchive([layer1], { tags: ["m:amd"] });
  const two = await makeDockerArchive([layer2], {
    tags: ["m:arm"],
    config: { architecture: "arm64" },
  });
  // Merge the two manifests into one archive by hand.
  const dec = new TextDecoder();
  const files = new Map<string, Uint8Array>();
  for (const ar of [one, two]) {
    let pos = 0;
    while (pos + 512 <= ar.length && ar[pos] !== 0) {
      const name = dec.decode(ar.subarray(pos, pos + 100)).replace(/\0.*$/s, "");
      const size = parseInt(dec.decode(ar.subarray(pos + 124, pos + 136)), 8);
      const data = ar.subarray(pos + 512, pos + 512 + size);
      if (name === "manifest.json") {
        const prev = files.get(name);
        const list = prev ? JSON.parse(dec.decode(prev)) : [];
        files.set(
          name,
          new TextEncoder().encode(JSON.stringify([...list, ...JSON.parse(dec.decode(data))])),
        );
      } else files.set(name, data);
      pos += 512 + Math.ceil(size / 512) * 512;
    }
  }
  const ar = t.write("multi.tar", makeTar([...files].map(([name, data]) => ({ name, data }))));
  const r = await unpackImage(ar, `${t.dir}/x`, { arch: "arm64" });
  assertEquals(r.name, "m:arm");
  const r2 = await unpackImage(ar, `${t.dir}/y`, { image: "m:amd", arch: "amd64" });
  assertEquals(r2.name, "m:amd");
  const e = await assertRejects(() => unpackImage(ar, `${t.dir}/z`, { arch: "s390x" }));
  assertEquals(
    describeError(e).replace(`${t.dir}/`, ""),
    "open archive multi.tar: no image for s390x in archive; choices: m:amd (linux/amd64), m:arm (linux/arm64)",
  );
});

Deno.test("unpackImage() writes a file larger than its buffers byte for byte", async () => {
  using t = tmp();
  // 5 MiB, not a multiple of the 1 MiB chunks, with a pattern that shows
  // a chunk written twice, dropped or out of place.
  const big = new Uint8Array((5 << 20) + 12345).map((_, i) => (i * 31 + (i >> 20)) & 0xff);
  const ar = t.write("big.tar", gzip(makeTar([{ name: "big", data: big }])));
  const r = await unpackImage(ar, `${t.dir}/out`);
  assertEquals(r.stats.bytes, big.length);
  assertEquals(Deno.readFileSync(`${t.dir}/out/big`), big);
});

Deno.test("unpackImage() with force replaces DEST atomically: it never goes missing", async () => {
  using t = tmp();
  const ar = t.write("img.tar", await makeDockerArchive([layer1]));
  const dest = `${t.dir}/out`;
  await unpackImage(ar, dest);
  // Another thread stats DEST as fast as it can while it is replaced.
  const src = `
    let missing = 0, looking = true;
    self.onmessage = (e) => { looking = false; };
    const path = ${JSON.stringify(dest)};
    (async () => {
      while (looking) {
        for (let i = 0; i < 2000; i++) {
          try { Deno.statSync(path); } catch { missing++; }
        }
        await new Promise((r) => setTimeout(r, 0));
      }
      self.postMessage(missing);
    })();`;
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const w = new Worker(url, { type: "module" });
  try {
    for (let i = 0; i < 40; i++) await unpackImage(ar, dest, { force: true });
    const missing = new Promise<number>((r) => w.onmessage = (e) => r(e.data));
    w.postMessage("stop");
    assertEquals(await missing, 0);
  } finally {
    w.terminate();
    URL.revokeObjectURL(url);
  }
  assertEquals(t.ls(), ["img.tar", "out"]);
});

Deno.test("unpackImage(): FIFOs of the image are kept, but not where den run binds files", async () => {
  using t = tmp();
  const tar = makeTar([
    { name: "etc/", type: "dir" },
    { name: "etc/hosts", type: "fifo" }, // writing an empty file there would block
    { name: "etc/passwd", type: "fifo" },
    { name: "run/initctl", type: "fifo", mode: 0o600 },
  ]);
  await unpackImage(t.write("root.tar", tar), `${t.dir}/a`);
  for (const f of ["hosts", "passwd"]) {
    const st = Deno.lstatSync(`${t.dir}/a/etc/${f}`);
    assertEquals([st.isFile, st.size], [true, 0]);
  }
  assertEquals(Deno.lstatSync(`${t.dir}/a/run/initctl`).isFifo, true);
});
