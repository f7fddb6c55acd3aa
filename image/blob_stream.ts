// Decoded blob streams backed by worker threads: decompression and hashing
// run off the main thread, ahead of the consumer by at most a window of
// chunks (memory stays bounded whatever the blob size).
import { DenError } from "../error.ts";
import { decodeBlob, type DecodeJob, type DecodeResult } from "./_decode.ts";

/** Chunks (of about 1 MiB) a decoder may run ahead of its consumer. */
const WINDOW = 8;

/** One blob being decoded: iterate chunks(), then await result. */
export interface BlobStream {
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
    let local: Promise<void> | undefined;
    let localWake: (() => void) | undefined;
    if (this.#useWorkers && this.#workers.length) {
      worker = this.#workers[this.#next++ % this.#workers.length]!;
      worker.postMessage({ type: "job", id, job, window: WINDOW });
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
        while (true) {
          const c = p.queue.shift();
          if (c) {
            if (worker) worker.postMessage({ type: "credit", id, n: 1 });
            else if (localWake && p.queue.length < WINDOW) {
              const w = localWake;
              localWake = undefined;
              w();
            }
            yield c;
            continue;
          }
          if (p.error) throw toDenError(p.error);
          if (p.done) return;
          await new Promise<void>((r) => p.wake = r);
        }
      },
      async result() {
        while (!p.done && !p.error) {
          await new Promise<void>((r) => p.wake = r);
        }
        await local;
        jobs.delete(id);
        if (p.error) throw toDenError(p.error);
        return p.done!;
      },
      cancel() {
        p.cancelled = true;
        worker?.postMessage({ type: "cancel", id });
        const w = localWake;
        localWake = undefined;
        w?.();
        jobs.delete(id);
      },
    };
  }

  #message(_w: Worker, m: { type: string; id: number } & Record<string, unknown>) {
    const p = this.#jobs.get(m.id);
    if (!p) return;
    if (m.type === "data") p.queue.push(m.chunk as Uint8Array);
    else if (m.type === "end") p.done = m.result as DecodeResult;
    else if (m.type === "error") p.error = new Error(m.message as string);
    const w = p.wake;
    p.wake = undefined;
    w?.();
  }
}

function toDenError(e: Error): DenError {
  return e instanceof DenError ? e : new DenError("", e.message);
}
