// Layout of the shared ring between a decoder worker and the main thread.
// The data buffer holds RING_SLOTS slots of SLOT_SIZE bytes; the control
// buffer is an Int32Array indexed by the constants below.
import { decodeBlob, type DecodeJob, type DecodeResult, type DecodeSink } from "./_decode.ts";

/** Slots in a ring: how far a decoder may run ahead of its consumer. */
export const RING_SLOTS = 8;
export const SLOT_SIZE = 1 << 20;

/** Slots published by the worker (monotonic). */
export const WRITTEN = 0;
/** Slots released by the consumer (monotonic). */
export const READ = 1;
/** Bumped on every publish and at the end: what the consumer waits on. */
export const SEQ = 2;
/** Set by the worker after its final message (end or error). */
export const DONE = 3;
/** Set by the consumer to stop the worker. */
export const CANCEL = 4;
/** Bytes used in slot i are at LEN0 + i. */
export const LEN0 = 5;
export const CTRL_INTS = LEN0 + RING_SLOTS;

/** How a decoder on the consumer's own thread waits and wakes it (pending
 * Atomics.waitAsync() promises do not keep Deno's event loop alive). */
export interface LocalWaits {
  /** Resolves once the consumer has released a slot. */
  slotFreed(): Promise<void>;
  published(): void;
}

/**
 * Decode a job into a ring, a slot at a time; the caller then reports the
 * result and sets DONE. In a worker (no `local`), waits for a free slot in
 * Atomics.wait().
 */
export function decodeIntoRing(
  job: DecodeJob,
  ring: SharedArrayBuffer,
  ctrlBuf: SharedArrayBuffer,
  local?: LocalWaits,
): Promise<DecodeResult> {
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
    local?.published();
    fill = 0;
  };
  const slot = () => {
    const base = (written % RING_SLOTS) * SLOT_SIZE;
    return data.subarray(base + fill, base + SLOT_SIZE);
  };
  const full = () => written - Atomics.load(ctrl, READ) >= RING_SLOTS;
  const waitLocal = async (waits: LocalWaits): Promise<Uint8Array> => {
    while (full()) {
      if (cancelled()) throw new Error("cancelled");
      await waits.slotFreed();
    }
    return slot();
  };
  const sink: DecodeSink = {
    space() {
      if (fill > 0) return slot();
      if (cancelled()) throw new Error("cancelled");
      if (local) return full() ? waitLocal(local) : slot();
      while (true) {
        const read = Atomics.load(ctrl, READ);
        if (written - read < RING_SLOTS) return slot();
        Atomics.wait(ctrl, READ, read, 1000);
        if (cancelled()) throw new Error("cancelled");
      }
    },
    commit(n) {
      fill += n;
      if (fill === SLOT_SIZE) publish();
    },
  };
  return decodeBlob(job, sink, cancelled).then((result) => {
    if (fill > 0) publish();
    return result;
  });
}
