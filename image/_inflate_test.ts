import { assertEquals } from "./_assert.ts";
import { concat, gzip, pseudoRandom, sha256, zstd } from "../tests/_tar.ts";
import { emitSink } from "./_decode.ts";
import { openInflater } from "./_inflate.ts";

const a = pseudoRandom(1000, 1);
const b = pseudoRandom(3 << 20, 2);

/** Inflate `blob` fed in 64 KiB pieces; the output or the error message. */
async function inflate(
  blob: Uint8Array,
  compression: "gzip" | "zstd",
  prefer: "native" | "public",
): Promise<Uint8Array | string> {
  const parts: Uint8Array[] = [];
  const sink = emitSink((c) => parts.push(c.slice()));
  const commit = (_space: Uint8Array, n: number) => sink.commit(n);
  const inf = openInflater(compression, prefer);
  assertEquals(inf.kind, prefer);
  try {
    const piece = new Uint8Array(65536); // reused, as decodeBlob does
    for (let i = 0; i < blob.length; i += piece.length) {
      const n = Math.min(piece.length, blob.length - i);
      piece.set(blob.subarray(i, i + n));
      await inf.write(piece.subarray(0, n), sink, commit, () => false);
    }
    await inf.finish(sink, commit);
    return concat(parts);
  } catch (e) {
    return (e as Error).message;
  } finally {
    inf.close();
  }
}

Deno.test("openInflater() uses zlib's native handle while node:zlib has one", () => {
  assertEquals(openInflater("gzip").kind, "native");
  assertEquals(openInflater("zstd").kind, "native");
});

Deno.test("openInflater(): the public-API fallback gives the same bytes and errors", async () => {
  const gz = gzip(b);
  const flipped = gz.slice();
  flipped[flipped.length - 6]! ^= 1; // the CRC32
  const cases: [string, "gzip" | "zstd", Uint8Array][] = [
    ["gzip members", "gzip", concat([gzip(a), gzip(b), gzip(new Uint8Array()), gzip(a)])],
    ["zstd frame", "zstd", zstd(b)],
    ["zeros after the end", "gzip", concat([gz, new Uint8Array(4096)])],
    ["truncated", "gzip", gz.subarray(0, gz.length >> 1)],
    ["truncated header", "gzip", gz.subarray(0, 5)],
    ["bad CRC", "gzip", flipped],
    ["truncated zstd", "zstd", zstd(b).subarray(0, 1000)],
  ];
  for (const [what, compression, blob] of cases) {
    const native = await inflate(blob, compression, "native");
    const fallback = await inflate(blob, compression, "public");
    const show = async (r: Uint8Array | string) => typeof r === "string" ? r : await sha256(r);
    assertEquals(await show(fallback), await show(native), what);
  }
  // Known gap: node's zstd stream ends after one frame; the fallback says so
  // instead of dropping the frames that follow.
  assertEquals(
    await inflate(concat([zstd(a), zstd(b)]), "zstd", "public"),
    "zstd data of several frames needs node:zlib internals that this Deno lacks",
  );
});
