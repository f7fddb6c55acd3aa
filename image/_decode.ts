// Reading one blob (a byte range of a file), hashing it, sniffing and
// undoing its compression, hashing the result: the CPU-heavy half of an
// unpack, run in a worker thread (see blob_stream.ts) so that decompression
// overlaps with the main thread's file writes.
import { osMessage } from "../error.ts";
import { createHash } from "node:crypto";
import { openInflater } from "./_inflate.ts";

/** A byte range of a file to decode. */
export interface DecodeJob {
  path: string;
  offset: number;
  size: number;
  /** Hash the raw bytes with this algorithm ("sha256", "sha512"). */
  algo?: string;
  /** Also sha256 the decompressed bytes (a docker/OCI diff_id). */
  hashUncompressed?: boolean;
  /** The file is still being written by a download (see GrowingFile). */
  growing?: SharedArrayBuffer;
  /** Where the file is once complete, should `path` be renamed before it is opened. */
  finalPath?: string;
}

/**
 * A file that a download is still writing, shared with the thread that reads
 * it: the first `available` bytes are written, and `state` says whether more
 * will come. A reader that catches up waits (Atomics.wait: worker threads
 * only) instead of taking the end of the file for the end of the blob.
 */
export class GrowingFile {
  static readonly GROWING = 0n;
  static readonly COMPLETE = 1n;
  static readonly FAILED = 2n;
  readonly #view: BigInt64Array;

  /** A new one, or the same one on another thread (its `shared`). */
  constructor(readonly shared = new SharedArrayBuffer(16)) {
    this.#view = new BigInt64Array(shared);
  }

  /** Bytes now in the file (fewer after a download restarted from zero). */
  written(n: number): void {
    Atomics.store(this.#view, 0, BigInt(n));
    Atomics.notify(this.#view, 0);
  }

  end(state: bigint): void {
    Atomics.store(this.#view, 1, state);
    Atomics.add(this.#view, 0, 0n);
    Atomics.notify(this.#view, 0);
  }
}

/**
 * Wait until the growing file has a byte at `pos`: true when it has, false
 * when the download completed short of it. Throws when the download failed.
 */
function waitForByte(shared: SharedArrayBuffer, pos: number, cancelled: () => boolean): boolean {
  const v = new BigInt64Array(shared);
  const at = BigInt(pos);
  for (;;) {
    if (cancelled()) throw new Error("cancelled");
    const available = Atomics.load(v, 0);
    if (available > at) return true;
    const state = Atomics.load(v, 1);
    if (state === GrowingFile.FAILED) throw new Error("download failed");
    if (state === GrowingFile.COMPLETE) return false;
    Atomics.wait(v, 0, available, 200);
  }
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
/** Buffer size of emitSink(). */
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
 * Where decodeBlob() writes: space() lends a buffer (a view of the consumer's
 * ring, say) and commit(n) says its first n bytes now hold output. space()
 * may return a promise while the consumer is a full window behind.
 */
export interface DecodeSink {
  space(): Uint8Array | Promise<Uint8Array>;
  commit(bytes: number): void;
}

/**
 * Decode a job into `sink`. Every byte goes through the sink's buffers, so
 * nothing is allocated per chunk: V8 frees external buffers only when it
 * gets round to collecting them, and a zlib stream's fresh 1 MiB buffer per
 * chunk made peak memory grow with the layer. Errors are plain Errors with a
 * message meant for the user.
 */
export async function decodeBlob(
  job: DecodeJob,
  sink: DecodeSink,
  cancelled: () => boolean = () => false,
): Promise<DecodeResult> {
  let file: Deno.FsFile;
  try {
    try {
      file = Deno.openSync(job.path, { read: true });
    } catch (e) {
      // A download renamed its file into place meanwhile.
      if (!job.finalPath || !(e instanceof Deno.errors.NotFound)) throw e;
      file = Deno.openSync(job.finalPath, { read: true });
    }
  } catch (e) {
    // Name the file that could not be read (a layer blob), not DEST.
    const code = (e as { code?: string }).code;
    throw new Error(`open ${job.path}: ${osMessage(e)}${code ? ` (${code})` : ""}`);
  }
  try {
    if (job.offset) file.seekSync(job.offset, Deno.SeekMode.Start);
    const hashRaw = job.algo ? createHash(job.algo) : undefined;
    const hashOut = job.hashUncompressed ? createHash("sha256") : undefined;
    let left = job.size;
    let read = 0;
    /** Read up to buf.length bytes (fewer only at the end); 0 at the end. */
    const readInto = (buf: Uint8Array): number => {
      if (cancelled()) throw new Error("cancelled");
      const want = Math.min(buf.length, left);
      let got = 0;
      while (got < want) {
        const n = file.readSync(buf.subarray(got, want));
        if (n === null || n === 0) {
          if (job.growing && waitForByte(job.growing, job.offset + read + got, cancelled)) {
            continue;
          }
          break;
        }
        got += n;
      }
      left -= got;
      read += got;
      if (got < want) left = 0; // the file is shorter than the job says
      hashRaw?.update(buf.subarray(0, got));
      return got;
    };
    const input = new Uint8Array(Math.min(IN_CHUNK, Math.max(left, 4)));
    let inLen = readInto(input);
    const compression = inLen ? sniffCompression(input.subarray(0, inLen)) : "none";
    const commit = (space: Uint8Array, n: number) => {
      if (n === 0) return;
      hashOut?.update(space.subarray(0, n));
      sink.commit(n);
    };
    if (compression === "none") {
      // Undecoded: the first read goes out from `input`, the rest straight
      // into the sink's buffers.
      let pos = 0;
      while (pos < inLen) {
        const space = await sink.space();
        const n = Math.min(space.length, inLen - pos);
        space.set(input.subarray(pos, pos + n));
        pos += n;
        commit(space, n);
      }
      while (left > 0) {
        const space = await sink.space();
        const n = readInto(space);
        if (n === 0) break;
        commit(space, n);
      }
    } else {
      const inflater = openInflater(compression);
      try {
        while (inLen > 0) {
          await inflater.write(input.subarray(0, inLen), sink, commit, cancelled);
          inLen = readInto(input);
        }
        await inflater.finish(sink, commit);
      } finally {
        inflater.close();
      }
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

/** A sink lending one reusable buffer and handing each filled part to
 * emit() (a chunk valid only until emit() returns). */
export function emitSink(emit: (chunk: Uint8Array) => void): DecodeSink {
  const buf = new Uint8Array(OUT_CHUNK);
  return { space: () => buf, commit: (n) => emit(buf.subarray(0, n)) };
}
