// Worker thread running decodeBlob() jobs for blob_stream.ts, one at a time,
// with credit-based flow control so it never runs more than a window ahead.
/// <reference lib="deno.worker" />
import { decodeBlob, type DecodeJob } from "./_decode.ts";

interface Job {
  id: number;
  job: DecodeJob;
  window: number;
}

const queue: Job[] = [];
let running = false;
const credits = new Map<number, number>();
const waiters = new Map<number, () => void>();
const cancelled = new Set<number>();

self.onmessage = (ev: MessageEvent) => {
  const m = ev.data;
  if (m.type === "job") {
    credits.set(m.id, m.window);
    queue.push(m);
    if (!running) void runQueue();
  } else if (m.type === "credit") {
    credits.set(m.id, (credits.get(m.id) ?? 0) + m.n);
    const w = waiters.get(m.id);
    if (w) {
      waiters.delete(m.id);
      w();
    }
  } else if (m.type === "cancel") {
    cancelled.add(m.id);
    const w = waiters.get(m.id);
    if (w) {
      waiters.delete(m.id);
      w();
    }
  }
};

async function runQueue(): Promise<void> {
  running = true;
  while (queue.length) {
    const { id, job } = queue.shift()!;
    try {
      const result = await decodeBlob(
        job,
        (chunk) => {
          if (cancelled.has(id)) return;
          self.postMessage({ type: "data", id, chunk }, [chunk.buffer as ArrayBuffer]);
          const c = (credits.get(id) ?? 0) - 1;
          credits.set(id, c);
          if (c <= 0) {
            return new Promise<void>((resolve) => waiters.set(id, resolve));
          }
        },
        () => cancelled.has(id),
      );
      self.postMessage({ type: "end", id, result });
    } catch (e) {
      self.postMessage({
        type: "error",
        id,
        message: e instanceof Error ? e.message : String(e),
      });
    }
    credits.delete(id);
    cancelled.delete(id);
  }
  running = false;
}
