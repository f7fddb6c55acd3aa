// A chain of libc calls for a clone(2) child to run without JavaScript.
//
// No JavaScript can run in a child cloned from Deno (the V8 heap belongs to
// threads the child does not have). So the child's entry point is libc's
// setcontext(), started on a context prepared with getcontext() and
// makecontext(): each context calls one libc function, and its uc_link
// resumes the next one. Every buffer the child touches is allocated here,
// before clone(), and kept alive by this object.

import { addressOf, cString, errnoAddress, libc, symbolAddress } from "./libc.ts";

// glibc ucontext_t offsets, the same on x86_64 and aarch64.
const UC_LINK = 8;
const UC_STACK_SP = 16;
const UC_STACK_SIZE = 32;
// uc_sigmask: after uc_mcontext on x86_64, before it on aarch64. Zeroed so
// each setcontext() leaves all signals unblocked.
const UC_SIGMASK: Record<string, number> = { "x86_64": 296, "aarch64": 40 };
const CONTEXT_BYTES = 8192; // sizeof(ucontext_t) is 968 (x86_64), 4560 (aarch64)
const STACK_BYTES = 64 * 1024; // only the touched pages are ever committed
// The calls share one stack. Call i starts STACK_STEP bytes above call
// i-1 and grows down over the stacks of calls that are done; makecontext()
// writes at most 24 bytes below a call's top (its return to uc_link), which
// no earlier call touches.
const STACK_STEP = 64;
const SIGSET_BYTES = 128;

type Arg = bigint | number;

interface Call {
  fn: Deno.PointerObject;
  args: bigint[];
}

export class CallChain {
  readonly #keep: unknown[] = [];
  readonly #calls: Call[] = [];
  readonly #errno = errnoAddress();
  readonly #fns = new Map<string, Deno.PointerObject>();
  #reportFd = -1;
  #cleared = false;

  /** The fd each reported call writes its errno to (4 bytes, 0 = success). */
  set reportFd(fd: number) {
    this.#reportFd = fd;
  }

  /** Address of a NUL-terminated copy of s, alive as long as the chain. */
  str(s: string): bigint {
    const b = cString(s);
    this.#keep.push(b);
    return addressOf(b);
  }

  /** A zeroed buffer of n bytes that the chain owns. */
  buffer(n: number): { bytes: Uint8Array<ArrayBuffer>; address: bigint } {
    const bytes = new Uint8Array(n);
    this.#keep.push(bytes);
    return { bytes, address: addressOf(bytes) };
  }

  /** Address of a NULL-terminated array of C strings (argv, envp). */
  strv(items: string[]): bigint {
    const arr = new BigUint64Array(items.length + 1);
    items.forEach((s, i) => arr[i] = this.str(s));
    this.#keep.push(arr);
    return addressOf(arr);
  }

  /** Address of an array holding the given 64-bit values. */
  words(values: bigint[]): bigint {
    const arr = new BigUint64Array(values);
    this.#keep.push(arr);
    return addressOf(arr);
  }

  /** Append a call of libc's `name` with up to six integer arguments. */
  call(name: string, ...args: Arg[]): void {
    if (args.length > 6) {
      throw new Error(`internal error: ${name}: too many arguments`);
    }
    let fn = this.#fns.get(name);
    if (!fn) {
      fn = symbolAddress(name);
      this.#fns.set(name, fn);
    }
    this.#calls.push({ fn, args: args.map((a) => BigInt(a)) });
  }

  /**
   * Append a call whose errno (0 on success) is written to the report fd.
   * errno is zeroed once, before the first reported call: the calls of a
   * chain are system call wrappers that leave errno alone when they succeed,
   * so after a success it is still 0, and after a failure den stops at that
   * report anyway. A step whose failure den tolerates is followed by
   * clearErrno().
   */
  reported(name: string, ...args: Arg[]): void {
    if (this.#reportFd < 0) throw new Error("internal error: no report fd");
    if (!this.#cleared) this.clearErrno();
    this.call(name, ...args);
    this.call("write", this.#reportFd, this.#errno, 4);
  }

  /** Zero the child's errno. */
  clearErrno(): void {
    this.call("memset", this.#errno, 0, 4);
    this.#cleared = true;
  }

  /** Write the child's errno to the report fd (after a call that failed). */
  reportErrno(): void {
    this.call("write", this.#reportFd, this.#errno, 4);
  }

  /** Prepare all contexts; returns the first one, the argument of setcontext. */
  build(): Deno.PointerObject {
    const n = this.#calls.length;
    const contexts = n * CONTEXT_BYTES;
    const mem = new Uint8Array(contexts + STACK_BYTES + n * STACK_STEP + 16);
    this.#keep.push(mem);
    const base = (addressOf(mem) + 15n) & ~15n;
    const skew = Number(base - addressOf(mem));
    const stackTop = (i: number) => base + BigInt(contexts + STACK_BYTES + i * STACK_STEP);
    const view = new DataView(mem.buffer);
    const sigmask = UC_SIGMASK[Deno.build.arch];
    if (sigmask === undefined) {
      throw new Error(`internal error: unsupported arch ${Deno.build.arch}`);
    }
    const lc = libc();
    // One getcontext() serves as the template of all contexts: makecontext()
    // sets what differs (entry, stack, arguments). On x86_64 the copies'
    // fpregs pointer still points into the template, which stays alive.
    const template = new Uint8Array(CONTEXT_BYTES);
    this.#keep.push(template);
    if (lc.getcontext(template) !== 0) {
      throw new Error("internal error: getcontext failed");
    }
    for (let i = n - 1; i >= 0; i--) {
      const off = skew + i * CONTEXT_BYTES;
      const ctx = mem.subarray(off, off + CONTEXT_BYTES);
      ctx.set(template);
      const next = i + 1 < n ? base + BigInt((i + 1) * CONTEXT_BYTES) : 0n;
      view.setBigUint64(off + UC_LINK, next, true);
      const size = STACK_BYTES + i * STACK_STEP;
      view.setBigUint64(off + UC_STACK_SP, stackTop(i) - BigInt(size), true);
      view.setBigUint64(off + UC_STACK_SIZE, BigInt(size), true);
      mem.fill(0, off + sigmask, off + sigmask + SIGSET_BYTES);
      const { fn, args } = this.#calls[i]!;
      const a = [...args, 0n, 0n, 0n, 0n, 0n, 0n];
      lc.makecontext(ctx, fn, 6, a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!);
    }
    return Deno.UnsafePointer.create(base)!;
  }

  /** Drop the buffers once the child has exec'd or exited. */
  release(): void {
    this.#keep.length = 0;
  }

  /** clone() a child that runs the chain, with these flags. Returns its pid. */
  clone(flags: number): number {
    const first = this.build();
    const stack = this.buffer(STACK_BYTES);
    const top = (stack.address + BigInt(STACK_BYTES)) & ~15n;
    const pid = libc().clone(
      symbolAddress("setcontext"),
      Deno.UnsafePointer.create(top),
      flags,
      first,
    );
    return pid;
  }
}
