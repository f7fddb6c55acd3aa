// den gc and den rm --gc on a blob cache filled by real pulls from a
// loopback registry: two images that share a layer, one removed. Ignored,
// never passed, without docker-registry, skopeo and busybox.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { den, hasUserns, HAVE_BUSYBOX, tempDir, testUser } from "./_helpers.ts";
import { makeTar } from "./_tar.ts";
import {
  ARCH,
  buildLayout,
  HAVE_REGISTRY,
  push,
  type Registry,
  startRegistry,
} from "./registry_helpers.ts";
import { registerPull } from "../image/registry/gc.ts";
import { formatBytes } from "../cli/progress.ts";

/** Push a busybox image with its own marker layer and a shared second layer. */
async function pushShared(reg: Registry, name: string, shared: Uint8Array): Promise<void> {
  const build = Deno.makeTempDirSync({ prefix: "den-gc-build-" });
  try {
    await buildLayout(`${build}/layout`, {
      tag: "t",
      marker: name,
      platforms: [{ architecture: ARCH }],
      extraLayers: [shared],
    });
    await push(`${build}/layout`, "t", `${reg.host}/test/${name}:1`);
  } finally {
    Deno.removeSync(build, { recursive: true });
  }
}

/** Hex digests of an image's manifest, config and layers, as the registry serves them. */
async function blobsOf(reg: Registry, name: string): Promise<string[]> {
  const r = await fetch(`http://${reg.host}/v2/test/${name}/manifests/1`, {
    headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
  });
  const m = await r.json();
  return [
    r.headers.get("docker-content-digest")!,
    m.config.digest,
    ...m.layers.map((l: { digest: string }) => l.digest),
  ]
    .map((d: string) => d.slice(7));
}

function cached(storage: string): string[] {
  return [...Deno.readDirSync(`${storage}/blobs/sha256`)].map((e) => e.name).sort();
}

Deno.test({
  name: "den gc: keeps shared and remaining blobs, removes the removed image's own",
  ignore: !HAVE_REGISTRY || !HAVE_BUSYBOX,
  async fn(t) {
    await using reg = await startRegistry();
    await using tmp = tempDir("den-gc-");
    const shared = makeTar([{ name: "opt/shared", data: "shared by both\n" }]);
    await pushShared(reg, "one", shared);
    await pushShared(reg, "two", shared);
    const one = await blobsOf(reg, "one");
    const two = await blobsOf(reg, "two");
    strictEqual(one[3], two[3]); // the shared layer
    const storage = `${tmp.path}/storage`;
    const s = ["-s", storage];
    for (const name of ["one", "two"]) {
      const r = await den(["pull", ...s, `${reg.host}/test/${name}:1`]);
      strictEqual(r.code, 0, r.stderr);
    }
    deepStrictEqual(cached(storage), [...new Set([...one, ...two])].sort());

    await t.step("nothing to remove while both images are there", async () => {
      const r = await den(["gc", ...s]);
      strictEqual(r.code, 0, r.stderr);
      strictEqual(r.stderr, "den: removed 0 blobs, freed 0 B (7 kept)\n");
    });

    await t.step("rm --gc: one's own blobs go; shared and two's stay", async () => {
      const own = one.filter((d) => !two.includes(d));
      strictEqual(own.length, 3);
      const bytes = own.reduce((n, d) => n + Deno.statSync(`${storage}/blobs/sha256/${d}`).size, 0);
      const r = await den(["rm", "--gc", ...s, "one+1"]);
      strictEqual(r.code, 0, r.stderr);
      strictEqual(
        r.stderr,
        `den: deleted one+1\nden: removed 3 blobs, freed ${formatBytes(bytes)} (4 kept)\n`,
      );
      deepStrictEqual(cached(storage), [...two].sort());
    });

    await t.step("the remaining image runs, and pulls warm with no download", async () => {
      if (hasUserns()) {
        const run = await den(["run", ...s, "two+1", "--", "/bin/cat", "/etc/image-marker"]);
        strictEqual(run.stdout, "two\n", run.stderr);
      }
      const r = await den(["pull", ...s, `${reg.host}/test/two:1`, `${tmp.path}/two-again`]);
      strictEqual(r.code, 0, r.stderr);
      ok(r.stderr.includes(" 0 B downloaded, 3 blobs cached,"), r.stderr);
      const back = await den(["pull", ...s, `${reg.host}/test/one:1`, `${tmp.path}/one-again`]);
      strictEqual(back.code, 0, back.stderr);
      ok(back.stderr.includes(", 1 blob cached,"), back.stderr);
    });

    await t.step("dry run names what would go and removes nothing; -q prints nothing", async () => {
      // one's blobs are back but no stored image refers to them (one-again is outside storage).
      const before = cached(storage);
      const r = await den(["gc", ...s, "--dry-run", "-v"]);
      strictEqual(r.code, 0, r.stderr);
      const lines = r.stderr.trimEnd().split("\n");
      strictEqual(lines.length, 4, r.stderr);
      for (const d of one.filter((d) => !two.includes(d))) {
        ok(lines.some((l) => l.includes(`would remove blob sha256:${d} (`)), r.stderr);
      }
      ok(lines[3]!.startsWith("den: would remove 3 blobs, freeing "), r.stderr);
      ok(lines[3]!.endsWith(" (4 kept; dry run)"), r.stderr);
      deepStrictEqual(cached(storage), before);
    });

    await t.step("the blobs of a pull in progress are kept until it ends", async () => {
      const own = one.filter((d) => !two.includes(d));
      const pull = registerPull(storage, own.map((d) => `sha256:${d}`));
      if (Deno.uid() === 0) {
        const { uid, gid } = testUser();
        Deno.chownSync(`${storage}/blobs/.pulls`, uid, gid);
        Deno.chownSync(pull.path, uid, gid);
      }
      let r = await den(["gc", ...s]);
      strictEqual(r.stderr, "den: removed 0 blobs, freed 0 B (7 kept)\n");
      strictEqual(cached(storage).length, 7);
      pull.release();
      r = await den(["gc", "-q", ...s]);
      strictEqual(r.code, 0);
      strictEqual(r.stderr, "");
      deepStrictEqual(cached(storage), [...two].sort());
    });

    await t.step(
      "symlinks and directories named like blobs are neither followed nor removed",
      async () => {
        const outside = `${tmp.path}/outside`;
        Deno.writeTextFileSync(outside, "not den's\n");
        const cache = `${storage}/blobs/sha256`;
        const link = "a".repeat(64);
        const dir = "b".repeat(64);
        Deno.symlinkSync(outside, `${cache}/${link}`);
        Deno.mkdirSync(`${cache}/${dir}`);
        Deno.writeTextFileSync(`${cache}/${dir}/inside`, "x");
        // A stored image whose manifest "is" the symlink: not read through it.
        Deno.mkdirSync(`${storage}/img/hostile/ch`, { recursive: true });
        Deno.writeTextFileSync(
          `${storage}/img/hostile/ch/metadata.json`,
          JSON.stringify({ digest: `sha256:${link}` }),
        );
        if (Deno.uid() === 0) {
          const { uid, gid } = testUser();
          for (const p of ["hostile", "hostile/ch", "hostile/ch/metadata.json"]) {
            Deno.chownSync(`${storage}/img/${p}`, uid, gid);
          }
        }
        const r = await den(["gc", "-v", ...s]);
        strictEqual(r.code, 0, r.stderr);
        ok(r.stderr.includes(`left ${link} alone: not a regular file`), r.stderr);
        ok(r.stderr.includes(`left ${dir} alone: not a regular file`), r.stderr);
        ok(r.stderr.endsWith("den: removed 0 blobs, freed 0 B (4 kept)\n"), r.stderr);
        strictEqual(Deno.readTextFileSync(outside), "not den's\n");
        ok(Deno.lstatSync(`${cache}/${link}`).isSymlink);
        strictEqual(Deno.readTextFileSync(`${cache}/${dir}/inside`), "x");
      },
    );
  },
});
