// Reading one blob (a byte range of a file), hashing it, sniffing and
// undoing its compression, hashing the result: the CPU-heavy half of an
// unpack, run in a worker thread (see blob_stream.ts) so that decompression
// overlaps with the main thread's file writes.
import { createHash } from "node:crypto";
import zlib from "node:zlib";

/** A byte range of a file to decode. */
export interface DecodeJob {
  path: string;
  offset: number;
  size: number;
  /** Hash the raw bytes with this algorithm ("sha256", "sha512"). */
  algo?: string;
  /** Also sha256 the decompressed bytes (a docker/OCI diff_id). */
  hashUncompressed?: boolean;
}

export interface DecodeResult {
  /** "algo:hex" of the raw bytes, when DecodeJob.algo was set. */
  digest?: string;
  /** "sha256:hex" of the decompressed bytes, when asked for. */
  diffId?: string;
  compression: Compression;
  /** Raw bytes read (must equal DecodeJob.size). */
  read: number;
}

export type Compression = "none" | "gzip" | "zstd";

const IN_CHUNK = 1 << 20;
/** Largest chunk handed to the consumer. */
export const OUT_CHUNK = 1 << 20;

/** Compression from the first bytes; throws a message for unsupported ones. */
export function sniffCompression(head: Uint8Array): Compression {
  const b = (i: number) => head[i];
  if (b(0) === 0x1f && b(1) === 0x8b) return "gzip";
  if (b(0) === 0x28 && b(1) === 0xb5 && b(2) === 0x2f && b(3) === 0xfd) {
    return "zstd";
  }
  if (b(0) === 0xfd && b(1) === 0x37 && b(2) === 0x7a && b(3) === 0x58) {
    throw new Error("unsupported compression: xz");
  }
  if (b(0) === 0x42 && b(1) === 0x5a && b(2) === 0x68) {
    throw new Error("unsupported compression: bzip2");
  }
  return "none";
}

/**
 * Decode a job, calling emit() with chunks of the decompressed stream; when
 * emit() returns a promise, reading pauses until it settles (flow control).
 * Errors are plain Errors with a message meant for the user.
 */
export async function decodeBlob(
  job: DecodeJob,
  emit: (chunk: Uint8Array) => void | Promise<void>,
  cancelled: () => boolean = () => false,
): Promise<DecodeResult> {
  const file = Deno.openSync(job.path, { read: true });
  try {
    if (job.offset) file.seekSync(job.offset, Deno.SeekMode.Start);
    const hashRaw = job.algo ? createHash(job.algo) : undefined;
    const hashOut = job.hashUncompressed ? createHash("sha256") : undefined;
    let left = job.size;
    let read = 0;
    const readChunk = (): Uint8Array | undefined => {
      if (left <= 0) return undefined;
      const buf = new Uint8Array(Math.min(IN_CHUNK, left));
      let got = 0;
      while (got < buf.length) {
        const n = file.readSync(buf.subarray(got));
        if (n === null || n === 0) break;
        got += n;
      }
      if (got === 0) return undefined;
      left -= got;
      read += got;
      const chunk = got === buf.length ? buf : buf.subarray(0, got);
      hashRaw?.update(chunk);
      return chunk;
    };
    let first = readChunk();
    const compression = first ? sniffCompression(first) : "none";
    if (compression === "none") {
      while (first) {
        if (cancelled()) throw new Error("cancelled");
        hashOut?.update(first);
        await emit(first);
        first = readChunk();
      }
    } else {
      await inflate(compression, first!, readChunk, emit, hashOut, cancelled);
    }
    return {
      digest: hashRaw ? `${job.algo}:${hashRaw.digest("hex")}` : undefined,
      diffId: hashOut ? `sha256:${hashOut.digest("hex")}` : undefined,
      compression,
      read,
    };
  } finally {
    file.close();
  }
}

function inflate(
  compression: "gzip" | "zstd",
  first: Uint8Array,
  readChunk: () => Uint8Array | undefined,
  emit: (chunk: Uint8Array) => void | Promise<void>,
  hashOut: ReturnType<typeof createHash> | undefined,
  cancelled: () => boolean,
): Promise<void> {
  // Output chunks of 1 MiB: with node:zlib's default of 16 KiB (or 256 KiB)
  // per-chunk overhead costs more than the inflating. Each chunk is a view of
  // a buffer zlib never writes again (it allocates a new one when one is
  // full), so consumers may keep them.
  const dec = compression === "gzip"
    ? zlib.createGunzip({ chunkSize: OUT_CHUNK })
    : zlib.createZstdDecompress({ chunkSize: OUT_CHUNK });
  return new Promise<void>((resolve, reject) => {
    let failed = false;
    let waiting = 0; // emits in flight
    let ended = false;
    const fail = (e: unknown) => {
      if (failed) return;
      failed = true;
      dec.destroy();
      reject(e instanceof Error ? e : new Error(String(e)));
    };
    dec.on("data", (c: Uint8Array) => {
      if (failed) return;
      hashOut?.update(c);
      let p: void | Promise<void>;
      try {
        p = emit(c);
      } catch (e) {
        fail(e);
        return;
      }
      if (p) {
        waiting++;
        dec.pause();
        p.then(() => {
          waiting--;
          if (waiting === 0) {
            if (ended) resolve();
            else dec.resume();
          }
        }, fail);
      }
    });
    dec.on("end", () => {
      if (failed) return;
      ended = true;
      if (waiting === 0) resolve();
    });
    dec.on("error", (e: Error) => {
      const msg = e.message.includes("unexpected end")
        ? `${compression} data truncated (unexpected end of file)`
        : `corrupt ${compression} data (${e.message})`;
      fail(new Error(msg));
    });
    // Feed input, respecting the decompressor's back-pressure.
    let chunk: Uint8Array | undefined = first;
    const pump = () => {
      while (!failed) {
        if (cancelled()) return fail(new Error("cancelled"));
        if (!chunk) {
          dec.end();
          return;
        }
        const ok = dec.write(chunk);
        chunk = readChunk();
        if (!ok) {
          dec.once("drain", pump);
          return;
        }
      }
    };
    try {
      pump();
    } catch (e) {
      fail(e);
    }
  });
}
