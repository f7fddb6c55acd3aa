// Decoded blob streams backed by worker threads: decompression and hashing
// run off the main thread, ahead of the consumer by at most a window of
// chunks (memory stays bounded whatever the blob size). A worker hands its
// output over in a ring of shared memory (_ring.ts): a chunk is valid until
// the consumer asks for the next one.
import { DenError } from "../error.ts";
import { decodeBlob, type DecodeJob, type DecodeResult } from "./_decode.ts";
import {
  CANCEL,
  CTRL_INTS,
  DONE,
  LEN0,
  READ,
  RING_SLOTS,
  SEQ,
  SLOT_SIZE,
  WRITTEN,
} from "./_ring.ts";

/** Chunks (of about 1 MiB) a decoder may run ahead of its consumer. */
const WINDOW = 8;

/** One blob being decoded: iterate chunks(), then await result. */
export interface BlobStream {
  /** Each chunk may be overwritten once the next one is asked for. */
  chunks(): AsyncIterable<Uint8Array>;
  /** Settles after the last chunk: digests and what was read. */
  result(): Promise<DecodeResult>;
  cancel(): void;
}

interface Pending {
  queue: Uint8Array[];
  done?: DecodeResult;
  error?: Error;
  wake?: () => void;
  cancelled: boolean;
}

/** A small pool of decoder workers (or in-process decoding as fallback). */
export class BlobDecoder {
  #workers: Worker[] = [];
  #next = 0;
  #jobs = new Map<number, Pending>();
  #ids = 0;
  #useWorkers: boolean;

  constructor(workers = 2) {
    this.#useWorkers = workers > 0;
    for (let i = 0; i < workers; i++) {
      let w: Worker;
      try {
        w = new Worker(new URL("./_blob_worker.ts", import.meta.url), {
          type: "module",
        });
      } catch {
        this.#useWorkers = false;
        break;
      }
      w.onmessage = (ev) => this.#message(w, ev.data);
      w.onerror = (ev) => {
        ev.preventDefault();
        for (const p of this.#jobs.values()) {
          p.error ??= new Error(`decoder thread failed: ${ev.message}`);
          p.wake?.();
        }
      };
      this.#workers.push(w);
    }
  }

  close(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
  }

  open(job: DecodeJob): BlobStream {
    const id = ++this.#ids;
    const p: Pending = { queue: [], cancelled: false };
    this.#jobs.set(id, p);
    const wake = () => {
      const w = p.wake;
      p.wake = undefined;
      w?.();
    };
    let worker: Worker | undefined;
    let ctrl: Int32Array | undefined;
    let ring: Uint8Array | undefined;
    let local: Promise<void> | undefined;
    let localWake: (() => void) | undefined;
    if (this.#useWorkers && this.#workers.length) {
      worker = this.#workers[this.#next++ % this.#workers.length]!;
      const ringBuf = new SharedArrayBuffer(RING_SLOTS * SLOT_SIZE);
      const ctrlBuf = new SharedArrayBuffer(CTRL_INTS * 4);
      ring = new Uint8Array(ringBuf);
      ctrl = new Int32Array(ctrlBuf);
      worker.postMessage({ type: "job", id, job, ring: ringBuf, ctrl: ctrlBuf });
    } else {
      // In-process: same flow control, without the parallelism.
      local = decodeBlob(job, (chunk) => {
        p.queue.push(chunk);
        wake();
        if (p.queue.length >= WINDOW) {
          return new Promise<void>((r) => localWake = r);
        }
      }, () => p.cancelled).then(
        (r) => {
          p.done = r;
          wake();
        },
        (e) => {
          p.error = e;
          wake();
        },
      );
    }
    const jobs = this.#jobs;
    return {
      async *chunks() {
        if (ctrl && ring) {
          let read = 0;
          while (true) {
            const seq = Atomics.load(ctrl, SEQ);
            if (read < Atomics.load(ctrl, WRITTEN)) {
              const base = (read % RING_SLOTS) * SLOT_SIZE;
              const len = Atomics.load(ctrl, LEN0 + (read % RING_SLOTS));
              yield ring.subarray(base, base + len);
              Atomics.store(ctrl, READ, ++read);
              Atomics.notify(ctrl, READ);
              continue;
            }
            if (p.error) throw toDenError(p.error);
            if (p.cancelled) return;
            if (Atomics.load(ctrl, DONE)) break;
            // The timeout only guards against a worker that died.
            const w = Atomics.waitAsync(ctrl, SEQ, seq, 1000);
            if (w.async) await w.value;
          }
        }
        while (true) {
          const c = p.queue.shift();
          if (c) {
            if (localWake && p.queue.length < WINDOW) {
              const w = localWake;
              localWake = undefined;
              w();
            }
            yield c;
            continue;
          }
          if (p.error) throw toDenError(p.error);
          if (p.done || p.cancelled) return;
          await new Promise<void>((r) => p.wake = r);
        }
      },
      async result() {
        while (!p.done && !p.error) {
          // cancel() forgets the job: its end message will never come.
          if (p.cancelled) throw new DenError("", "cancelled");
          await new Promise<void>((r) => p.wake = r);
        }
        await local;
        jobs.delete(id);
        if (p.error) throw toDenError(p.error);
        return p.done!;
      },
      cancel() {
        p.cancelled = true;
        if (ctrl) {
          Atomics.store(ctrl, CANCEL, 1);
          Atomics.notify(ctrl, READ); // a worker waiting for a free slot
          Atomics.notify(ctrl, SEQ); // a consumer waiting for a chunk
        }
        const w = localWake;
        localWake = undefined;
        w?.();
        wake(); // a chunks() or result() waiting for data sees the cancel
        jobs.delete(id);
      },
    };
  }

  #message(_w: Worker, m: { type: string; id: number } & Record<string, unknown>) {
    const p = this.#jobs.get(m.id);
    if (!p) return;
    if (m.type === "end") p.done = m.result as DecodeResult;
    else if (m.type === "error") p.error = new Error(m.message as string);
    const w = p.wake;
    p.wake = undefined;
    w?.();
  }
}

function toDenError(e: Error): DenError {
  return e instanceof DenError ? e : new DenError("", e.message);
}
