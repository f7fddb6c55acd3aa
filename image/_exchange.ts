// Swapping two paths atomically with renameat2(RENAME_EXCHANGE) (Linux 3.15,
// glibc 2.28), so that `den unpack --force` never leaves DEST missing.
//
// Opened on first use, like the rest of ffi/libc.ts.

import { cString, errno, libc } from "../ffi/libc.ts";

const AT_FDCWD = -100;
const RENAME_EXCHANGE = 1 << 1;
const ENOENT = 2;
const EINVAL = 22;
const ENOSYS = 38;

/**
 * Swap `a` and `b` atomically: "swapped"; "missing" when one of them does
 * not exist; "unsupported" when this kernel or filesystem cannot (ENOSYS,
 * EINVAL: NFS and older kernels), or FFI is not allowed. Other failures
 * throw an Error with the errno number in `errno`.
 */
export function exchangePaths(a: string, b: string): "swapped" | "missing" | "unsupported" {
  let lc;
  try {
    lc = libc();
  } catch {
    return "unsupported"; // no FFI permission
  }
  const r = lc.renameat2(AT_FDCWD, cString(a), AT_FDCWD, cString(b), RENAME_EXCHANGE);
  if (r === 0) return "swapped";
  // Read right after the -1 return: errno is stale after a success.
  const code = errno();
  if (code === ENOENT) return "missing";
  if (code === ENOSYS || code === EINVAL) return "unsupported";
  throw Object.assign(new Error(`renameat2 failed (errno ${code})`), { errno: code });
}
