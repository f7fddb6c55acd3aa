// Layout of the shared ring between a decoder worker and the main thread.
// The data buffer holds RING_SLOTS slots of SLOT_SIZE bytes; the control
// buffer is an Int32Array indexed by the constants below.

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
