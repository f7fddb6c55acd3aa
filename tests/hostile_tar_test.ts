// den unpack on archives that lie in their numbers and sizes (issue 7): each
// is refused with one line naming the layer and entry, within seconds, with
// bounded memory, leaving nothing beside DEST.
import { ok } from "node:assert/strict";
import { concat, gzip, makeDockerArchive, makeTar } from "./_tar.ts";
import { assertRefused, unpackHostile } from "./hostile_helpers.ts";

const MiB = 1 << 20;

const negative = () => makeTar([{ name: "etc/f", data: "x".repeat(3000), pax: { size: "-1536" } }]);

Deno.test("den unpack refuses a rootfs tarball with PAX size=-1536 (it looped forever)", async () => {
  assertRefused(
    await unpackHostile(negative()),
    // Its first names could be an image archive's: the indexer refuses it.
    /^den: error: open archive \S+a\.tar: bad PAX record size="-1536" \(not a decimal number\) in "etc\/f"$/,
  );
});

Deno.test("den unpack refuses a gzip rootfs tarball with PAX size=-1536", async () => {
  assertRefused(
    await unpackHostile(gzip(negative())),
    /^den: error: .*bad PAX record size="-1536" \(not a decimal number\) in "etc\/f"$/,
  );
});

Deno.test("den unpack refuses a docker-archive layer with PAX size=-1536", async () => {
  assertRefused(
    await unpackHostile(await makeDockerArchive([makeTar([{ name: "ok" }]), negative()])),
    /^den: error: unpack layer 2\/2: bad PAX record size="-1536" .* in "etc\/f"$/,
  );
});

Deno.test("den unpack refuses an outer archive with PAX size=-1536 (the indexer looped)", async () => {
  const archive = makeTar([
    { name: "manifest.json", data: "[]", pax: { size: "-1536" } },
  ]);
  for (const a of [archive, gzip(archive)]) {
    assertRefused(
      await unpackHostile(a),
      /^den: error: open archive .*a\.tar: bad PAX record size="-1536" .* in "manifest\.json"$/,
    );
  }
});

Deno.test("den unpack refuses 40 PAX headers of 8 MiB in little memory", async () => {
  const one = makeTar([{ name: "f", pax: { comment: "x".repeat(8 * MiB - 100) } }], { end: false });
  const x = one.subarray(0, one.length - 512);
  const tar = gzip(concat([...new Array(40).fill(x), makeTar([{ name: "f" }])]));
  const r = await unpackHostile(tar);
  assertRefused(r, /extended headers too large \(over 1048576 bytes for one entry\)/);
  ok(r.rssMiB < 160, `peak RSS ${r.rssMiB} MiB`);
});

Deno.test("den unpack refuses a tiny archive claiming a petabyte sparse file", async () => {
  const tar = makeTar([{
    name: "sp",
    data: "abc",
    pax: { "GNU.sparse.map": "0,3", "GNU.sparse.realsize": String(2 ** 50) },
  }]);
  assertRefused(await unpackHostile(tar), /holes in one layer/);
});

Deno.test("den unpack refuses names that are not valid UTF-8 (they were mapped to %XX)", async () => {
  const bytes = new Uint8Array([0x64, 0x2f, 0x61, 0xff, 0x62]); // d/a\xffb
  const cases = [
    makeTar([{ name: "d/", type: "dir" }, { name: "d/a%FFb", data: "1" }, {
      name: bytes,
      data: "2",
    }]),
    makeTar([{ name: "l", type: "symlink", linkname: bytes }]),
  ];
  assertRefused(
    await unpackHostile(cases[0]!),
    /^den: error: unpack layer 1\/1: refusing name that is not valid UTF-8: "d\/a\\xffb"$/,
  );
  assertRefused(
    await unpackHostile(cases[1]!),
    /^den: error: unpack layer 1\/1: refusing link target that is not valid UTF-8: "d\/a\\xffb"$/,
  );
});
