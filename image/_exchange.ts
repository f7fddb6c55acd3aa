// Swapping two paths atomically with renameat2(RENAME_EXCHANGE) (Linux 3.15,
// glibc 2.28), so that `den unpack --force` never leaves DEST missing.
//
// TODO(#7): these two symbols belong in ffi/libc.ts, the one dlopen table;
// they are here because the image work could not edit ffi/ at the time.
// Opened on first use, like libc.ts, so nothing else needs --allow-ffi.

const AT_FDCWD = -100;
const RENAME_EXCHANGE = 1 << 1;
const ENOENT = 2;
const EINVAL = 22;
const ENOSYS = 38;

const SYMBOLS = {
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

function cString(s: string): Uint8Array<ArrayBuffer> {
  const b = new TextEncoder().encode(s + "\0");
  return new Uint8Array(b.buffer as ArrayBuffer);
}

/**
 * Swap `a` and `b` atomically: "swapped"; "missing" when one of them does
 * not exist; "unsupported" when this kernel or filesystem cannot (ENOSYS,
 * EINVAL: NFS and older kernels), or FFI is not allowed. Other failures
 * throw an Error with the errno number in `errno`.
 */
export function exchangePaths(a: string, b: string): "swapped" | "missing" | "unsupported" {
  try {
    lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  } catch {
    return "unsupported";
  }
  const r = lib.symbols.renameat2(AT_FDCWD, cString(a), AT_FDCWD, cString(b), RENAME_EXCHANGE);
  if (r === 0) return "swapped";
  // Read right after the -1 return: errno is stale after a success.
  const errno = new Deno.UnsafePointerView(lib.symbols.__errno_location()!).getInt32(0);
  if (errno === ENOENT) return "missing";
  if (errno === ENOSYS || errno === EINVAL) return "unsupported";
  throw Object.assign(new Error(`renameat2 failed (errno ${errno})`), { errno });
}
