// Worker thread running decodeBlob() jobs for blob_stream.ts, one at a time.
// Each job brings a ring of slots in shared memory (see _ring.ts): the
// decoded stream is inflated straight into it, and the worker blocks in
// Atomics.wait() while the ring is full, so it never runs more than a ring
// ahead and no buffer is allocated, transferred or freed per chunk.
/// <reference lib="deno.worker" />
import type { DecodeJob } from "./_decode.ts";
import { decodeIntoRing, DONE, SEQ } from "./_ring.ts";

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
    try {
      const result = await decodeIntoRing(job, ring, ctrlBuf);
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
