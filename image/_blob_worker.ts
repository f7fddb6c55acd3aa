// Worker thread running decodeBlob() jobs for blob_stream.ts, one at a time.
// Each job brings a ring of slots in shared memory (see blob_stream.ts): the
// decoded stream is copied into it, and the worker blocks in Atomics.wait()
// while the ring is full, so it never runs more than a ring ahead and no
// buffer is allocated, transferred or freed per chunk.
/// <reference lib="deno.worker" />
import { decodeBlob, type DecodeJob } from "./_decode.ts";
import { CANCEL, DONE, LEN0, READ, RING_SLOTS, SEQ, SLOT_SIZE, WRITTEN } from "./_ring.ts";

interface Job {
  id: number;
  job: DecodeJob;
  ring: SharedArrayBuffer;
  ctrl: SharedArrayBuffer;
}

const queue: Job[] = [];
let running = false;

self.onmessage = (ev: MessageEvent) => {
  const m = ev.data;
  if (m.type === "job") {
    queue.push(m);
    if (!running) void runQueue();
  }
};

async function runQueue(): Promise<void> {
  running = true;
  while (queue.length) {
    const { id, job, ring, ctrl: ctrlBuf } = queue.shift()!;
    const ctrl = new Int32Array(ctrlBuf);
    const data = new Uint8Array(ring);
    let written = 0; // slots published
    let fill = 0; // bytes in the slot being filled
    const cancelled = () => Atomics.load(ctrl, CANCEL) !== 0;
    const publish = () => {
      Atomics.store(ctrl, LEN0 + (written % RING_SLOTS), fill);
      Atomics.store(ctrl, WRITTEN, ++written);
      Atomics.add(ctrl, SEQ, 1);
      Atomics.notify(ctrl, SEQ);
      fill = 0;
    };
    /** Wait for a free slot; false when cancelled. */
    const reserve = (): boolean => {
      while (true) {
        if (cancelled()) return false;
        const read = Atomics.load(ctrl, READ);
        if (written - read < RING_SLOTS) return true;
        Atomics.wait(ctrl, READ, read, 1000);
      }
    };
    try {
      const result = await decodeBlob(
        job,
        (chunk) => {
          let pos = 0;
          while (pos < chunk.length) {
            if (fill === 0 && !reserve()) throw new Error("cancelled");
            const base = (written % RING_SLOTS) * SLOT_SIZE;
            const n = Math.min(chunk.length - pos, SLOT_SIZE - fill);
            data.set(chunk.subarray(pos, pos + n), base + fill);
            fill += n;
            pos += n;
            if (fill === SLOT_SIZE) publish();
          }
        },
        cancelled,
      );
      if (fill > 0) publish();
      self.postMessage({ type: "end", id, result });
    } catch (e) {
      self.postMessage({
        type: "error",
        id,
        message: e instanceof Error ? e.message : String(e),
      });
    }
    // After the message: the consumer, woken by SEQ, then waits for it.
    Atomics.store(ctrl, DONE, 1);
    Atomics.add(ctrl, SEQ, 1);
    Atomics.notify(ctrl, SEQ);
  }
  running = false;
}
