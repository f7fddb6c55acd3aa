// mkfifo(3), which Deno's file API lacks, for the FIFOs of image layers.
// Opened on first use, like the rest of ffi/libc.ts.

import { ERRNO_NAMES } from "../ffi/constants.ts";
import { cString, errno, libc } from "../ffi/libc.ts";
import { strerror } from "../ffi/errno.ts";

/** Create a FIFO at `path` (which must not exist) with `mode` less the umask.
 * Throws an Error with the errno's message and name (`code`), as Deno does. */
export function makeFifo(path: string, mode: number): void {
  if (libc().mkfifo(cString(path), mode & 0o7777) === 0) return;
  // Read right after the -1 return: errno is stale after a success.
  const code = errno();
  throw Object.assign(new Error(strerror(code)), { code: ERRNO_NAMES[code] ?? `errno ${code}` });
}
