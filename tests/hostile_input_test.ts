// den unpack names the file that failed, not DEST, and checks every piece of
// a docker-archive against a digest something in the archive declares.
import { equal } from "node:assert/strict";
import { makeOciLayout, makeTar, sha256 } from "./_tar.ts";
import { den, tempDir, testUser } from "./_helpers.ts";
import { assertRefused, unpackHostile } from "./hostile_helpers.ts";

const isRoot = Deno.uid() === 0;
const layer = makeTar([{ name: "etc/hello", data: "hi\n" }]);

/** An OCI layout of the test user in which `file(layout)` is root's, 0600. */
async function layoutWithUnreadable(dir: string, file: (layout: string) => Promise<string>) {
  const layout = `${dir}/layout`;
  await makeOciLayout(layout, [layer]);
  const { uid, gid } = testUser();
  for (const d of ["", "/blobs", "/blobs/sha256"]) {
    Deno.chownSync(`${layout}${d}`, uid, gid);
    for (const e of Deno.readDirSync(`${layout}${d}`)) {
      Deno.chownSync(`${layout}${d}/${e.name}`, uid, gid);
    }
  }
  const path = await file(layout);
  Deno.chownSync(path, 0, 0);
  Deno.chmodSync(path, 0o600);
  return { layout, path };
}

for (
  const c of [
    {
      what: "OCI index.json",
      file: (l: string) => Promise.resolve(`${l}/index.json`),
      error: (p: string) => `open archive ${p}: Permission denied (EACCES)`,
    },
    {
      what: "layer blob",
      file: async (l: string) => `${l}/blobs/sha256/${(await sha256(layer)).slice(7)}`,
      error: (p: string) => `unpack layer 1/1: open ${p}: Permission denied (EACCES)`,
    },
  ]
) {
  Deno.test({
    name: `den unpack names an unreadable ${c.what}, not DEST`,
    // Root reads everything: the unreadable file needs another user.
    ignore: !isRoot,
    async fn() {
      await using t = tempDir("den-hostile-in-");
      const { layout, path } = await layoutWithUnreadable(t.path, c.file);
      const r = await den(["unpack", "-q", layout, `${t.path}/out`]);
      equal(r.code, 31, r.stderr);
      equal(r.stderr.trim(), `den: error: ${c.error(path)}`);
      equal([...Deno.readDirSync(t.path)].map((e) => e.name).join(), "layout");
    },
  });
}

/** A docker-archive whose manifest.json names its config `name`. */
async function dockerWithConfigName(name: string, tamper = false): Promise<Uint8Array> {
  const diffId = await sha256(layer);
  let config = JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [diffId] },
  });
  const layerName = `${(await sha256(layer)).slice(7)}.tar`;
  // Changed after `name` was computed from it.
  if (tamper) config = config.replace("amd64", "arm64");
  return makeTar([
    { name: layerName, data: layer },
    { name, data: config },
    { name: "manifest.json", data: JSON.stringify([{ Config: name, Layers: [layerName] }]) },
  ]);
}

Deno.test("den unpack refuses a docker-archive config no digest vouches for", async () => {
  assertRefused(
    await unpackHostile(await dockerWithConfigName("config.json")),
    /^den: error: open archive: config "config\.json": no digest declared for it/,
  );
});

Deno.test("den unpack checks a docker-archive config against the digest in its name", async () => {
  const good = JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [await sha256(layer)] },
  });
  const hex = (await sha256(new TextEncoder().encode(good))).slice(7);
  for (const name of [`${hex}.json`, `blobs/sha256/${hex}`]) {
    assertRefused(
      await unpackHostile(await dockerWithConfigName(name, true)),
      /digest mismatch for config/,
    );
  }
});
