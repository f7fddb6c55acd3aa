import { assertEquals, assertRejects } from "./_assert.ts";
import { concat, gzip, pseudoRandom, sha256, zstd } from "../tests/_tar.ts";
import { BlobDecoder } from "./blob_stream.ts";
import { SLOT_SIZE } from "./_ring.ts";
import type { Compression } from "./_decode.ts";

const a = pseudoRandom(1000, 1);
const b = pseudoRandom(3 << 20, 2);
const c = pseudoRandom(5 << 19, 3);

/** Decode `blob` (after a prefix, as a layer inside an archive). */
async function decode(blob: Uint8Array, workers: number) {
  const prefix = pseudoRandom(777, 4);
  const path = Deno.makeTempFileSync({ prefix: "den-blob-test-" });
  const decoder = new BlobDecoder(workers);
  try {
    Deno.writeFileSync(path, concat([prefix, blob, prefix]));
    const s = decoder.open({
      path,
      offset: prefix.length,
      size: blob.length,
      algo: "sha256",
      hashUncompressed: true,
    });
    const parts: Uint8Array[] = [];
    for await (const chunk of s.chunks()) {
      if (chunk.length > SLOT_SIZE) throw new Error("chunk bigger than a slot");
      parts.push(chunk.slice());
    }
    return { data: concat(parts), result: await s.result() };
  } finally {
    decoder.close();
    Deno.removeSync(path);
  }
}

for (const workers of [0, 1]) {
  const where = workers ? "in a worker" : "in process";
  Deno.test(`BlobDecoder ${where} inflates gzip members and zstd frames`, async () => {
    const want = concat([a, b, new Uint8Array(), c]);
    const diffId = await sha256(want);
    const cases: [Compression, Uint8Array][] = [
      ["gzip", concat([gzip(a), gzip(b), gzip(new Uint8Array()), gzip(c)])],
      ["zstd", concat([zstd(a), zstd(b), zstd(c)])],
      ["none", want],
    ];
    for (const [compression, blob] of cases) {
      const { data, result } = await decode(blob, workers);
      assertEquals(data.length, want.length, compression);
      assertEquals(await sha256(data), diffId, compression);
      assertEquals(result, {
        digest: await sha256(blob),
        diffId,
        compression,
        read: blob.length,
      });
    }
    // Zeros after the last member (tape padding) are ignored.
    const padded = await decode(concat([gzip(b), new Uint8Array(4096)]), workers);
    assertEquals(await sha256(padded.data), await sha256(b));
  });

  Deno.test(`BlobDecoder ${where} reports truncated and corrupt data`, async () => {
    const gz = gzip(b);
    const flipped = gz.slice();
    flipped[flipped.length - 6]! ^= 1; // the CRC32
    const cases: [Uint8Array, string][] = [
      [gz.subarray(0, 5), "gzip data truncated (unexpected end of file)"],
      [gz.subarray(0, gz.length >> 1), "gzip data truncated (unexpected end of file)"],
      [concat([gzip(a), gz.subarray(0, gz.length - 4)]), "gzip data truncated"],
      [flipped, "corrupt gzip data (incorrect data check)"],
      [concat([gz, pseudoRandom(100, 5)]), "corrupt gzip data (incorrect header check)"],
      [concat([zstd(a), pseudoRandom(100, 5)]), "corrupt zstd data"],
    ];
    for (const [blob, error] of cases) {
      await assertRejects(() => decode(blob, workers), error);
    }
  });
}
