// The one libc table of den. Opened on first use (so `den --help` and the
// pure tests need no --allow-ffi), and each function is bound on first call:
// Deno.dlopen() compiles a trampoline per symbol, 3-4 ms for this table,
// paid by every MPI rank; one dlopen of dlsym plus an UnsafeFnPointer per
// function a run uses costs a fraction of that.

import { AT_FDCWD, AT_SYMLINK_NOFOLLOW, STATX_TYPE } from "./constants.ts";

const SYMBOLS = {
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
  // glibc's clone(): the child starts in fn(arg) on the given stack. fn is
  // setcontext, so the child runs a prepared chain of libc calls (chain.ts).
  clone: {
    parameters: ["pointer", "pointer", "i32", "pointer"],
    result: "i32",
  },
  getcontext: { parameters: ["buffer"], result: "i32" },
  // makecontext(ucp, fn, argc, ...) is variadic; glibc passes 64-bit values
  // in the integer registers on x86_64 and aarch64, so fixed u64 arguments
  // are the same call.
  makecontext: {
    parameters: [
      "buffer",
      "pointer",
      "i32",
      "u64",
      "u64",
      "u64",
      "u64",
      "u64",
      "u64",
    ],
    result: "void",
  },
  waitpid: {
    parameters: ["i32", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  waitpid_now: {
    name: "waitpid",
    parameters: ["i32", "buffer", "i32"],
    result: "i32",
  },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  signal: { parameters: ["i32", "u64"], result: "u64" },
  memcpy: { parameters: ["pointer", "buffer", "usize"], result: "pointer" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  statvfs: { parameters: ["buffer", "buffer"], result: "i32" },
  getpgrp: { parameters: [], result: "i32" },
  tcgetpgrp: { parameters: ["i32"], result: "i32" },
  sigprocmask: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpwuid: { parameters: ["u32"], result: "pointer" },
  getgrgid: { parameters: ["u32"], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  // The peer-group rendezvous (rendezvous.ts): an abstract Unix socket.
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // Waits on another thread: its errno is not readable here.
  accept4: {
    parameters: ["i32", "pointer", "pointer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  accept4_now: {
    name: "accept4",
    parameters: ["i32", "pointer", "pointer", "i32"],
    result: "i32",
  },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // Waits on another thread (a joined peer watching its group's server).
  poll_wait: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  // open(2) with O_CREAT: the mode is the variadic third argument, passed
  // in a register like a fixed one on x86_64 and aarch64.
  open_create: { name: "open", parameters: ["buffer", "i32", "u32"], result: "i32" },
  unlink: { parameters: ["buffer"], result: "i32" },
  // den unpack --force: swap DEST and the new image atomically.
  renameat2: { parameters: ["i32", "buffer", "i32", "buffer", "u32"], result: "i32" },
  // den unpack: FIFOs of layers (any user may make them).
  mkfifo: { parameters: ["buffer", "u32"], result: "i32" },
  // fileKind(): a file's type without a thrown error or a Deno.FileInfo.
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  // Waits on another thread (a FUSE mount's first answer).
  statx_wait: {
    name: "statx",
    parameters: ["i32", "buffer", "i32", "u32", "buffer"],
    result: "i32",
    nonblocking: true,
  },
  geteuid: { parameters: [], result: "u32" },
  getegid: { parameters: [], result: "u32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

const DLSYM = { dlsym: SYMBOLS.dlsym } as const satisfies Deno.ForeignLibraryInterface;

let table: Libc | undefined;

/** The libc symbol table; each function is looked up on first use. */
export function libc(): Libc {
  if (table) return table;
  const { dlsym } = Deno.dlopen("libc.so.6", DLSYM).symbols;
  const t: Record<string, unknown> = {};
  for (const [key, def] of Object.entries(SYMBOLS)) {
    Object.defineProperty(t, key, {
      configurable: true,
      enumerable: true,
      get() {
        const fn = key === "dlsym" ? dlsym : bind("name" in def ? def.name : key, def);
        Object.defineProperty(t, key, { value: fn, enumerable: true });
        return fn;
      },
    });
  }
  return table = t as Libc;
}

/** A callable libc function, for a symbol of the table. */
function bind(name: string, def: Deno.ForeignFunction): unknown {
  const p = symbolAddress(name) as Deno.PointerObject<Omit<Deno.ForeignFunction, "nonblocking">>;
  const f = new Deno.UnsafeFnPointer(p, def);
  return f.call.bind(f);
}

const encoder = new TextEncoder();

/** A NUL-terminated copy of s. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  // Paths and arguments are ASCII nearly always: copied here, without the
  // encoder's first-call cost that every rank would pay.
  const out = new Uint8Array(s.length + 1);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) {
      const bytes = encoder.encode(s);
      const utf8 = new Uint8Array(bytes.length + 1);
      utf8.set(bytes);
      return utf8;
    }
    out[i] = c;
  }
  return out;
}

/** The address of a libc function, for the child's chain of calls. */
export function symbolAddress(name: string): Deno.PointerObject {
  const p = libc().dlsym(null, cString(name));
  if (p === null) throw new Error(`internal error: dlsym ${name} not found`);
  return p;
}

/** errno of the calling (main) thread; read it right after a -1 return. */
export function errno(): number {
  const p = libc().__errno_location();
  return new Deno.UnsafePointerView(p!).getInt32(0);
}

/** Address of this thread's errno. A clone() child without CLONE_SETTLS
 * keeps the parent thread's TLS layout, so its errno lives at the same
 * address. */
export function errnoAddress(): bigint {
  return BigInt(Deno.UnsafePointer.value(libc().__errno_location()));
}

/** Address of a buffer, for arguments stored inside the child's contexts. */
export function addressOf(
  buf: Uint8Array<ArrayBuffer> | BigUint64Array<ArrayBuffer>,
): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

/** Read a NUL-terminated string at a pointer (NULL gives undefined). */
export function readCString(
  p: Deno.PointerValue,
  offset = 0,
): string | undefined {
  if (p === null) return undefined;
  return new Deno.UnsafePointerView(p).getCString(offset);
}

/**
 * Resolve after ms milliseconds: a poll(2) of nothing on another thread.
 * Unlike setTimeout(), it starts no timer machinery in den (the first
 * timer of a process does), which every MPI rank would pay.
 */
export async function pause(ms: number): Promise<void> {
  await libc().poll_wait(null, 0n, ms);
}

/** What lstat (follow: stat) finds at a path; undefined when it fails. */
export type FileKind = "dir" | "file" | "symlink" | "other" | undefined;

const statxBuffer = new Uint8Array(256);

/**
 * The type of the file at path, by statx(2): struct statx is the same on
 * every architecture (stx_mode, a u16, at byte 28). A run asks for a few
 * dozen paths, most of them missing: Deno.lstatSync() would throw an error
 * with a stack for each and build a FileInfo with four Dates for the rest.
 */
export function fileKind(path: string, follow = false): FileKind {
  const flags = follow ? 0 : AT_SYMLINK_NOFOLLOW;
  if (libc().statx(AT_FDCWD, cString(path), flags, STATX_TYPE, statxBuffer) !== 0) return undefined;
  const type = (statxBuffer[28]! | (statxBuffer[29]! << 8)) & 0o170000;
  return type === 0o040000
    ? "dir"
    : type === 0o100000
    ? "file"
    : type === 0o120000
    ? "symlink"
    : "other";
}
