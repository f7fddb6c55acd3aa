// Inflating gzip and zstd into a DecodeSink's buffers. The fast way drives
// the native handle behind a node:zlib stream (`_handle`, `_writeState`,
// `_defaultFlushFlag`, `_finishFlushFlag`: undocumented, as node's own
// lib/zlib.js uses them), which inflates straight into the sink's memory.
// This module is the only one that knows about them: when a Deno upgrade
// changes them, openInflater() falls back to the public stream API, which
// copies each output chunk (slower, same bytes, same errors).
import zlib from "node:zlib";
import type { DecodeSink } from "./_decode.ts";

type Commit = (space: Uint8Array, n: number) => void;

/** Inflates one blob; write() all input, then finish(), then close(). */
export interface Inflater {
  /** Inflate all of `input` into the sink (output may lag behind). */
  write(
    input: Uint8Array,
    sink: DecodeSink,
    commit: Commit,
    cancelled: () => boolean,
  ): Promise<void>;
  /** Flush the end of the stream; throws if it was truncated. */
  finish(sink: DecodeSink, commit: Commit): Promise<void>;
  close(): void;
  /** "native" (zlib's handle) or "public" (the stream API). */
  readonly kind: "native" | "public";
}

/** An inflater: the native handle when node:zlib still has one, else the
 * public stream API. `prefer: "public"` is for tests. */
export function openInflater(
  compression: "gzip" | "zstd",
  prefer: "native" | "public" = "native",
): Inflater {
  if (prefer === "native") {
    try {
      return new NativeInflater(compression);
    } catch (e) {
      if (!(e instanceof InternalsMissing)) throw e;
    }
  }
  return new PublicInflater(compression);
}

class InternalsMissing extends Error {}

function newStream(compression: "gzip" | "zstd") {
  return compression === "gzip" ? zlib.createGunzip() : zlib.createZstdDecompress();
}

/** The message for a decoder error, the same for both inflaters. */
function decodeError(compression: string, msg: string): Error {
  return new Error(
    /unexpected end|truncated|incomplete/i.test(msg)
      ? `${compression} data truncated (unexpected end of file)`
      : `corrupt ${compression} data (${msg})`,
  );
}

/** The native handle behind a node:zlib stream, as node's lib/zlib.js uses it. */
interface ZlibHandle {
  writeSync(
    flush: number,
    input: Uint8Array,
    inOff: number,
    inLen: number,
    out: Uint8Array,
    outOff: number,
    outLen: number,
  ): void;
  close(): void;
  onerror?: (message: string, errno: number) => void;
}

/**
 * Inflates gzip or zstd straight into a sink's buffers through the native
 * handle of a node:zlib stream (what its own sync path, processChunkSync,
 * does): the stream API would hand out a newly allocated buffer per chunk.
 */
class NativeInflater implements Inflater {
  #compression: "gzip" | "zstd";
  #handle: ZlibHandle;
  /** [avail_out, avail_in] after each writeSync(). */
  #state: Uint32Array;
  #flush: number;
  #finishFlush: number;
  #error?: string;

  constructor(compression: "gzip" | "zstd") {
    this.#compression = compression;
    // deno-lint-ignore no-explicit-any
    const stream: any = newStream(compression);
    const handle = stream._handle as ZlibHandle | undefined;
    const state = stream._writeState as Uint32Array | undefined;
    if (
      typeof handle?.writeSync !== "function" || typeof handle.close !== "function" ||
      !(state instanceof Uint32Array) || state.length < 2 ||
      typeof stream._defaultFlushFlag !== "number" || typeof stream._finishFlushFlag !== "number"
    ) {
      throw new InternalsMissing();
    }
    this.#handle = handle;
    this.#state = state;
    this.#flush = stream._defaultFlushFlag;
    this.#finishFlush = stream._finishFlushFlag;
    handle.onerror = (message) => this.#error ??= message;
  }

  /** Inflate all of `input` (or drop what follows the end of the stream). */
  async write(
    input: Uint8Array,
    sink: DecodeSink,
    commit: Commit,
    cancelled: () => boolean,
  ): Promise<void> {
    let pos = 0;
    while (true) {
      if (cancelled()) throw new Error("cancelled");
      const space = await sink.space();
      const availIn = input.length - pos;
      const [availOut, inLeft] = this.#write(this.#flush, input, pos, space);
      const used = availIn - inLeft;
      const made = space.length - availOut;
      pos += used;
      commit(space, made);
      // Output space left over: zlib wants more input, or it stopped at the
      // end of a gzip member or zstd frame (go on: the next may follow), or
      // it will not take what follows the last member, as the node:zlib
      // stream does with trailing zeros.
      if (availOut > 0 && (inLeft === 0 || (used === 0 && made === 0))) return;
    }
  }

  /** Flush the end of the stream; throws if it was truncated. */
  async finish(sink: DecodeSink, commit: Commit): Promise<void> {
    const none = new Uint8Array(0);
    while (true) {
      const space = await sink.space();
      const [availOut] = this.#write(this.#finishFlush, none, 0, space);
      commit(space, space.length - availOut);
      if (availOut > 0) return;
    }
  }

  close(): void {
    this.#handle.close();
  }

  readonly kind = "native";

  #write(flush: number, input: Uint8Array, pos: number, out: Uint8Array): [number, number] {
    try {
      this.#handle.writeSync(flush, input, pos, input.length - pos, out, 0, out.length);
    } catch (e) {
      // zstd reports errors by throwing, zlib through onerror.
      this.#error ??= e instanceof Error ? e.message : String(e);
    }
    if (this.#error !== undefined) throw decodeError(this.#compression, this.#error);
    return [this.#state[0]!, this.#state[1]!];
  }
}

const END = Symbol("end");

/**
 * The public node:zlib stream API: input is written with backpressure and
 * output read through the stream's async iterator, each chunk copied into
 * the sink. Memory stays bounded by the streams' high-water marks.
 */
class PublicInflater implements Inflater {
  readonly kind = "public";
  #compression: "gzip" | "zstd";
  #stream: ReturnType<typeof newStream>;
  #iter: AsyncIterator<Uint8Array>;
  #next?: Promise<IteratorResult<Uint8Array>>;
  #ended = false;
  #written = 0;

  constructor(compression: "gzip" | "zstd") {
    this.#compression = compression;
    this.#stream = newStream(compression);
    this.#iter = this.#stream[Symbol.asyncIterator]();
  }

  async write(
    input: Uint8Array,
    sink: DecodeSink,
    commit: Commit,
    cancelled: () => boolean,
  ): Promise<void> {
    if (this.#ended) return this.#after(input);
    // The caller reuses `input`: the stream keeps a copy until it is used.
    this.#written += input.length;
    const more = this.#stream.write(new Uint8Array(input));
    if (more) return;
    const drained = new Promise<void>((r) => this.#stream.once("drain", r));
    await this.#pump(sink, commit, drained, cancelled);
  }

  /**
   * Input after the end of the stream: zeros (tape padding) are dropped, as
   * the native inflater does. Anything else is refused, not dropped: node's
   * zstd stream stops after the first frame, and the frames that follow
   * would be lost. TODO(#7): split zstd frames here.
   */
  #after(input: Uint8Array): void {
    if (input.every((x) => x === 0)) return;
    throw new Error(
      this.#compression === "zstd"
        ? "zstd data of several frames needs node:zlib internals that this Deno lacks"
        : "corrupt gzip data (incorrect header check)",
    );
  }

  async finish(sink: DecodeSink, commit: Commit): Promise<void> {
    if (!this.#ended) this.#stream.end();
    await this.#pump(sink, commit, undefined, () => false);
    // bytesWritten: the input the engine consumed (documented node:zlib).
    if (this.#compression === "zstd" && this.#stream.bytesWritten < this.#written) {
      this.#after(new Uint8Array([1]));
    }
  }

  close(): void {
    this.#stream.destroy();
  }

  /** Move output to the sink until `until` settles or the stream ends. */
  async #pump(
    sink: DecodeSink,
    commit: Commit,
    until: Promise<void> | undefined,
    cancelled: () => boolean,
  ): Promise<void> {
    const stop = until?.then((): typeof END => END);
    while (!this.#ended) {
      if (cancelled()) throw new Error("cancelled");
      this.#next ??= this.#iter.next();
      let r: IteratorResult<Uint8Array> | typeof END;
      try {
        r = await (stop ? Promise.race([this.#next, stop]) : this.#next);
      } catch (e) {
        this.#ended = true;
        throw decodeError(this.#compression, (e as Error).message ?? String(e));
      }
      if (r === END) return;
      this.#next = undefined;
      if (r.done) {
        this.#ended = true;
        return;
      }
      let pos = 0;
      while (pos < r.value.length) {
        const space = await sink.space();
        const n = Math.min(space.length, r.value.length - pos);
        space.set(r.value.subarray(pos, pos + n));
        pos += n;
        commit(space, n);
      }
    }
  }
}
