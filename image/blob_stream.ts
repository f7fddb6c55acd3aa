// Decoded blob streams backed by worker threads: decompression and hashing
// run off the main thread, ahead of the consumer by at most a window of
// chunks (memory stays bounded whatever the blob size). A worker hands its
// output over in a ring of shared memory (_ring.ts): a chunk is valid until
// the consumer asks for the next one.
import { DenError } from "../error.ts";
import type { DecodeJob, DecodeResult } from "./_decode.ts";
import {
  CANCEL,
  CTRL_INTS,
  decodeIntoRing,
  DONE,
  LEN0,
  READ,
  RING_SLOTS,
  SEQ,
  SLOT_SIZE,
  WRITTEN,
} from "./_ring.ts";

/** One blob being decoded: iterate chunks(), then await result. */
export interface BlobStream {
  /** Each chunk may be overwritten once the next one is asked for. */
  chunks(): AsyncIterable<Uint8Array>;
  /** Settles after the last chunk: digests and what was read. */
  result(): Promise<DecodeResult>;
  cancel(): void;
}

interface Pending {
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

  /** Whether blobs are decoded on worker threads (which may wait for a growing file). */
  get threaded(): boolean {
    return this.#useWorkers && this.#workers.length > 0;
  }

  close(): void {
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
  }

  open(job: DecodeJob): BlobStream {
    const id = ++this.#ids;
    const p: Pending = { cancelled: false };
    this.#jobs.set(id, p);
    const wake = () => {
      const w = p.wake;
      p.wake = undefined;
      w?.();
    };
    const ringBuf = new SharedArrayBuffer(RING_SLOTS * SLOT_SIZE);
    const ctrlBuf = new SharedArrayBuffer(CTRL_INTS * 4);
    const ring = new Uint8Array(ringBuf);
    const ctrl = new Int32Array(ctrlBuf);
    let slotFreed: (() => void) | undefined;
    const local = !(this.#useWorkers && this.#workers.length);
    if (!local) {
      const worker = this.#workers[this.#next++ % this.#workers.length]!;
      worker.postMessage({ type: "job", id, job, ring: ringBuf, ctrl: ctrlBuf });
    } else {
      // In-process: the same ring, without the parallelism.
      const end = () => {
        Atomics.store(ctrl, DONE, 1);
        Atomics.add(ctrl, SEQ, 1);
        Atomics.notify(ctrl, SEQ);
        wake();
      };
      decodeIntoRing(job, ringBuf, ctrlBuf, {
        slotFreed: () => new Promise<void>((r) => slotFreed = r),
        published: wake,
      }).then(
        (r) => {
          p.done = r;
          end();
        },
        (e) => {
          p.error = e;
          end();
        },
      );
    }
    const jobs = this.#jobs;
    return {
      async *chunks() {
        let read = 0;
        while (true) {
          const seq = Atomics.load(ctrl, SEQ);
          if (read < Atomics.load(ctrl, WRITTEN)) {
            const base = (read % RING_SLOTS) * SLOT_SIZE;
            const len = Atomics.load(ctrl, LEN0 + (read % RING_SLOTS));
            yield ring.subarray(base, base + len);
            Atomics.store(ctrl, READ, ++read);
            Atomics.notify(ctrl, READ);
            const freed = slotFreed;
            slotFreed = undefined;
            freed?.();
            continue;
          }
          if (p.error) throw toDenError(p.error);
          if (p.cancelled) return;
          if (Atomics.load(ctrl, DONE)) break;
          if (local) {
            await new Promise<void>((r) => p.wake = r);
            continue;
          }
          // The timeout only guards against a worker that died.
          const w = Atomics.waitAsync(ctrl, SEQ, seq, 1000);
          if (w.async) await w.value;
        }
      },
      async result() {
        while (!p.done && !p.error) {
          // cancel() forgets the job: its end message will never come.
          if (p.cancelled) throw new DenError("", "cancelled");
          await new Promise<void>((r) => p.wake = r);
        }
        jobs.delete(id);
        if (p.error) throw toDenError(p.error);
        return p.done!;
      },
      cancel() {
        p.cancelled = true;
        Atomics.store(ctrl, CANCEL, 1);
        Atomics.notify(ctrl, READ); // a decoder waiting for a free slot
        Atomics.notify(ctrl, SEQ); // a consumer waiting for a chunk
        const freed = slotFreed;
        slotFreed = undefined;
        freed?.(); // a local decoder waiting for a free slot
        wake(); // a chunks() or result() waiting sees the cancel
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
