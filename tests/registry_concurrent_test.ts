// Many `den pull`s of one image into one storage at once, as every rank of a
// job does: each blob crosses the network once (counted by a proxy that
// slows blob transfers so the pulls overlap), every pull ends with the whole
// image, and the cache keeps only verified blobs, locks included.
import { ok, strictEqual } from "node:assert/strict";
import { createHash } from "node:crypto";
import { den, exists, HAVE_BUSYBOX, tempDir, testUser } from "./_helpers.ts";
import { makeTar, pseudoRandom } from "./_tar.ts";
import {
  ARCH,
  buildLayout,
  checkClean,
  HAVE_REGISTRY,
  push,
  startProxy,
  startRegistry,
} from "./registry_helpers.ts";

const ready = HAVE_REGISTRY && HAVE_BUSYBOX;

/** How many GETs each blob had. */
function counts(blobs: string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const b of blobs) m.set(b, (m.get(b) ?? 0) + 1);
  return m;
}

function sha256File(path: string): string {
  return `sha256:${createHash("sha256").update(Deno.readFileSync(path)).digest("hex")}`;
}

Deno.test({
  name: "den pull: concurrent pulls into one storage fetch each blob once",
  ignore: !ready,
  async fn(t) {
    await using reg = await startRegistry();
    await using tmp = tempDir("den-pull-many-");
    const build = `${tmp.path}/build`;
    Deno.mkdirSync(build);
    // Three layers: busybox, and two of 2 MiB each.
    const extra = [1, 2].map((i) =>
      makeTar([{ name: `data${i}`, data: pseudoRandom(2 << 20, i), mode: 0o644 }])
    );
    await buildLayout(`${build}/layout`, {
      tag: "t",
      marker: "many",
      platforms: [{ architecture: ARCH }],
      extraLayers: extra,
    });
    await push(`${build}/layout`, "t", `${reg.host}/test/many:1`);
    const env = { HOME: tmp.path };
    const { uid, gid } = testUser();

    await t.step("8 pulls into 8 directories", async () => {
      await using proxy = startProxy(reg.host, { blobDelayMs: 300 });
      const storage = `${tmp.path}/s8`;
      const ref = `${proxy.host}/test/many:1`;
      const t0 = performance.now();
      const rs = await Promise.all(
        Array.from(
          { length: 8 },
          (_, i) => den(["pull", "-s", storage, ref, `${tmp.path}/d${i}`], { env }),
        ),
      );
      const seconds = (performance.now() - t0) / 1000;
      for (const r of rs) strictEqual(r.code, 0, r.stderr);
      const per = counts(proxy.blobs);
      strictEqual(per.size, 4, String(proxy.blobs)); // config and three layers
      for (const [digest, n] of per) strictEqual(n, 1, `${digest} fetched ${n} times`);
      for (let i = 0; i < 8; i++) {
        strictEqual(Deno.readTextFileSync(`${tmp.path}/d${i}/etc/image-marker`), "many\n");
        strictEqual(Deno.statSync(`${tmp.path}/d${i}/data2`).size, 2 << 20);
      }
      checkClean(storage, tmp.path);
      // deno-lint-ignore no-console
      console.log(`    8 pulls: ${proxy.blobs.length} blob GETs, ${seconds.toFixed(1)} s`);
    });

    await t.step("4 pulls of one stored name: one unpacks, the others find it", async () => {
      await using proxy = startProxy(reg.host, { blobDelayMs: 300 });
      const storage = `${tmp.path}/s4`;
      const ref = `${proxy.host}/test/many:1`;
      const rs = await Promise.all(
        Array.from(
          { length: 4 },
          () => den(["pull", ref], { env: { ...env, DEN_STORAGE: storage } }),
        ),
      );
      for (const r of rs) strictEqual(r.code, 0, r.stderr);
      strictEqual(rs.filter((r) => r.stderr.startsWith("den: pulled ")).length, 1);
      strictEqual(rs.filter((r) => r.stderr.includes(" is up to date ")).length, 3);
      for (const [digest, n] of counts(proxy.blobs)) strictEqual(n, 1, `${digest}: ${n}`);
      strictEqual(Deno.readTextFileSync(`${storage}/img/many+1/etc/image-marker`), "many\n");
      checkClean(storage, tmp.path);
      const img = [...Deno.readDirSync(`${storage}/img`)].map((e) => e.name);
      strictEqual(img.join(), "many+1");
    });

    await t.step("a damaged cached layer is removed and fetched again", async () => {
      await using proxy = startProxy(reg.host);
      const storage = `${tmp.path}/s8`;
      const layer = [...Deno.readDirSync(`${storage}/blobs/sha256`)]
        .map((e) => `${storage}/blobs/sha256/${e.name}`)
        .sort((a, b) => Deno.statSync(b).size - Deno.statSync(a).size)[0]!;
      const digest = `sha256:${layer.slice(layer.lastIndexOf("/") + 1)}`;
      const bytes = Deno.readFileSync(layer);
      bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0x55;
      Deno.writeFileSync(layer, bytes); // same size, other content
      const r = await den([
        "pull",
        "-s",
        storage,
        "-v",
        `${proxy.host}/test/many:1`,
        `${tmp.path}/fixed`,
      ], {
        env,
      });
      strictEqual(r.code, 0, r.stderr);
      ok(r.stderr.includes(`blob ${digest}: the cached copy is damaged`), r.stderr);
      strictEqual(proxy.blobs.join(), digest);
      strictEqual(sha256File(layer), digest);
      strictEqual(Deno.statSync(`${tmp.path}/fixed/data1`).size, 2 << 20);
      checkClean(storage, tmp.path);
    });

    await t.step("a damaged cached config is fetched again before use", async () => {
      await using proxy = startProxy(reg.host);
      const storage = `${tmp.path}/s8`;
      const config = [...Deno.readDirSync(`${storage}/blobs/sha256`)]
        .map((e) => `${storage}/blobs/sha256/${e.name}`)
        .find((p) => Deno.readTextFileSync(p).includes('"DEN_MARKER=many"'))!;
      const text = Deno.readTextFileSync(config).replace("many", "MANY");
      Deno.writeTextFileSync(config, text);
      const r = await den(["pull", "-s", storage, `${proxy.host}/test/many:1`, `${tmp.path}/c`], {
        env,
      });
      strictEqual(r.code, 0, r.stderr);
      strictEqual(proxy.blobs.length, 1);
      ok(Deno.readTextFileSync(config).includes("DEN_MARKER=many"));
    });

    await t.step("the lock of a dead pull is taken over at once", async () => {
      await using proxy = startProxy(reg.host);
      const storage = `${tmp.path}/s-stale`;
      const blobs = `${storage}/blobs/sha256`;
      // A pull that died holding the lock of every blob (its pid is gone).
      const gone = new Deno.Command("true").spawn();
      await gone.status;
      const boot = Deno.readTextFileSync("/proc/sys/kernel/random/boot_id").trim();
      const host = `${Deno.hostname()}/${boot}/${Deno.readLinkSync("/proc/self/ns/pid")}`;
      Deno.mkdirSync(blobs, { recursive: true });
      const m = await (await fetch(`http://${reg.host}/v2/test/many/manifests/1`, {
        headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
      })).json();
      for (const d of [m.config, ...m.layers]) {
        const lock = `${blobs}/${d.digest.slice(7)}.lock`;
        Deno.writeTextFileSync(
          lock,
          JSON.stringify({ pid: gone.pid, start: "1", host, token: "dead" }),
        );
      }
      for (
        const p of [
          storage,
          `${storage}/blobs`,
          blobs,
          ...Deno.readDirSync(blobs).map((e) => `${blobs}/${e.name}`),
        ]
      ) {
        Deno.chownSync(p, uid, gid);
      }
      Deno.chmodSync(storage, 0o700);
      const t0 = performance.now();
      const r = await den(["pull", "-s", storage, `${proxy.host}/test/many:1`, `${tmp.path}/st`], {
        env,
      });
      strictEqual(r.code, 0, r.stderr);
      ok(performance.now() - t0 < 20_000);
      strictEqual(proxy.blobs.length, 4);
      ok(exists(`${tmp.path}/st/data1`));
      checkClean(storage, tmp.path);
    });
  },
});
