// mountSquash(): a SquashFS image mounted with squashfuse in a container's
// own namespaces, for as long as any process of the container lives.
//
// Two processes, no JavaScript in either. The holder, cloned into new user
// and mount namespaces, makes / private, opens /dev/fuse and mounts it
// (`fd=N`, as fusermount does) on a host directory that only those
// namespaces see, hands the open /dev/fuse to den (SCM_RIGHTS) and waits,
// holding the namespaces while den plans the container through
// /proc/HOLDER/root. squashfuse is cloned from den outside the namespaces,
// in a session of its own, and serves that descriptor (`/dev/fd/N`,
// libfuse >= 3.3) without being in the mount namespace itself. So the mount
// lives exactly as long as its namespace: while a process of the container
// (the command, a background process it left, a joined peer's) or an open
// namespace descriptor remains. When the last one goes, the kernel unmounts
// it and aborts the FUSE connection, squashfuse's read(2) of /dev/fuse fails
// with ENODEV and it exits by itself: after the command, after kill -9 of
// den (the holder and the container's first process die of
// PR_SET_PDEATHSIG), after a failed setup. Nothing is made on the host.

import { DenError, osMessage } from "../error.ts";
import { CallChain } from "./chain.ts";
import {
  AT_FDCWD,
  CLONE_NEWNS,
  CLONE_NEWUSER,
  CLONE_VFORK,
  CLONE_VM,
  MS_NODEV,
  MS_NOSUID,
  MS_PRIVATE,
  MS_RDONLY,
  MS_REC,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  POLLIN,
  SCM_RIGHTS,
  SIG_BLOCK,
  SIG_DFL,
  SIG_IGN,
  SIG_SETMASK,
  SIGCHLD,
  SIGNALS,
  SOL_SOCKET,
  STATX_TYPE,
  WNOHANG,
} from "./constants.ts";
import { errnoError, strerror } from "./errno.ts";
import { cString, errno, libc, pause } from "./libc.ts";
import {
  type Namespaces,
  openDirectoryPath,
  openNamespaces,
  receive,
  socketPair,
} from "./rendezvous.ts";
import {
  addPrologue,
  addSignalSetup,
  pipe,
  readReports,
  type Step,
  usernsHint,
  writeIdMaps,
} from "./spawn.ts";

export interface SquashOptions {
  /** Absolute host path of the .sqfs file. */
  image: string;
  /** Host directory to mount it on, in the new mount namespace only. */
  mountPoint: string;
  /** Absolute path of squashfuse. */
  squashfuse: string;
  uidMap: { inside: number; outside: number };
  gidMap: { inside: number; outside: number };
  /** How long squashfuse may take to answer (default 10 s). */
  timeoutMs?: number;
}

export interface SquashMount {
  /** The namespaces the image is mounted in (the holder's). */
  ns: Namespaces;
  /** Host path of their root: the image is at `${root}${mountPoint}`. */
  root: string;
  /** Where the image is mounted, in those namespaces. */
  mountPoint: string;
  /** squashfuse, outside the namespaces. */
  fusePid: number;
  /**
   * O_PATH descriptor of the image's mount itself, without the container's
   * mounts on it: joined peers plan their command through it.
   */
  imageFd: number;
  /** The container is in the namespaces: the holder's part is done. */
  releaseHolder(): void;
  /**
   * Let go of the namespaces. `used`: a container was set up in them (its
   * processes or peers may still use the mount, which then stays until the
   * last is gone); otherwise squashfuse is killed now.
   */
  close(o: { used: boolean }): void;
}

/** How long den waits at exit for squashfuse to go with the mount (the
 * container left no process behind), so that den reaps it itself. */
const REAP_MS = 25;

function describeStatus(status: number): string {
  const sig = status & 0x7f;
  return sig === 0 ? `exited with status ${(status >> 8) & 0xff}` : `died of signal ${sig}`;
}

/** Sleep ms milliseconds on this thread (poll(2) of nothing). */
function nap(ms: number): void {
  libc().poll(new Uint8Array(8), 0n, ms);
}

/** Mount a SquashFS image in new namespaces; see the top of this file. */
export async function mountSquash(o: SquashOptions): Promise<SquashMount> {
  const lc = libc();
  const fail = (detail: string, hint?: string) =>
    new DenError("can't mount", detail, { path: o.image, hint });
  // Started with SIGCHLD ignored, the kernel would reap our children itself.
  lc.signal(SIGCHLD, SIG_DFL);
  const fds: number[] = [];
  let holder = 0;
  let fuse = 0;
  let ns: Namespaces | undefined;
  const status = new Int32Array(1);
  const statusBytes = new Uint8Array(status.buffer);
  const releaseHolder = () => {
    if (!holder) return;
    lc.kill(holder, SIGNALS.SIGKILL!);
    lc.waitpid_now(holder, statusBytes, 0);
    holder = 0;
  };
  const close = ({ used }: { used: boolean }) => {
    if (ns) {
      lc.close(ns.user);
      lc.close(ns.mnt);
      ns = undefined;
    }
    releaseHolder();
    for (const fd of fds.splice(0)) lc.close(fd);
    if (!fuse) return;
    if (!used) {
      // Nothing ran on the mount: squashfuse (and anything it started, in
      // its session) goes now, whether or not it ever answered.
      lc.kill(-fuse, SIGNALS.SIGKILL!);
      lc.kill(fuse, SIGNALS.SIGKILL!);
      lc.waitpid_now(fuse, statusBytes, 0);
    } else {
      // With den's hold released, a container that left no process behind
      // takes its namespace, the mount and so squashfuse with it at once;
      // otherwise squashfuse stays until the last one ends (then init or a
      // subreaper reaps it).
      for (let t = 0; t < REAP_MS; t++) {
        if (lc.waitpid_now(fuse, statusBytes, WNOHANG) !== 0) break;
        nap(1);
      }
    }
    fuse = 0;
  };
  try {
    const [syncRead, syncWrite] = pipe();
    const [reportRead, reportWrite] = pipe();
    const [denEnd, holderEnd] = socketPair();
    fds.push(syncWrite, reportRead, denEnd);
    const { chain, steps } = holderChain(o, { syncRead, syncWrite, reportWrite, holderEnd });
    const pid = chain.clone(CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD);
    const code = errno();
    lc.close(syncRead);
    lc.close(reportWrite);
    lc.close(holderEnd);
    if (pid < 0) {
      throw errnoError("can't clone a user namespace", code, { hint: usernsHint() });
    }
    holder = pid;
    writeIdMaps(pid, o);
    lc.write(syncWrite, new Uint8Array([1]), 1n);
    const codes = readReports(reportRead, steps.length);
    chain.release();
    for (let i = 0; i < steps.length; i++) {
      const c = codes[i];
      if (c === undefined) throw fail("the SquashFS holder died");
      if (c !== 0) {
        throw errnoError(steps[i]!.op, c, { path: steps[i]!.path, hint: steps[i]!.hint });
      }
    }
    const dev = receiveFd(denEnd);
    if (dev === undefined) throw fail("no /dev/fuse from the SquashFS holder");
    ns = { ...openNamespaces(pid), ownerPid: Deno.pid };
    const [errRead, errWrite] = pipe();
    fds.push(errRead);
    try {
      fuse = startSquashfuse(o, dev, errWrite);
    } finally {
      // squashfuse has its own copy: when it exits, the FUSE connection is
      // aborted, so nothing can wait on a server that is gone.
      lc.close(dev);
      lc.close(errWrite);
    }
    await waitForAnswer(fuse, `/proc/${pid}/root${o.mountPoint}`, { ...o, errRead }, (why) => {
      fuse = 0; // reaped
      return fail(why, FUSE_HINT);
    }, () => fail(`squashfuse did not mount it within ${(o.timeoutMs ?? 10_000) / 1000} s`));
    // From now on nobody reads what squashfuse says: its writes fail (EPIPE,
    // SIGPIPE ignored) instead of filling the pipe and blocking it.
    fds.splice(fds.indexOf(errRead), 1);
    lc.close(errRead);
    const imageFd = openDirectoryPath(`/proc/${pid}/root${o.mountPoint}`);
    fds.push(imageFd);
    const root = `/proc/${pid}/root`;
    return { ns, root, mountPoint: o.mountPoint, fusePid: fuse, imageFd, releaseHolder, close };
  } catch (e) {
    close({ used: false });
    throw e;
  }
}

/**
 * The holder's calls: wait for its id maps, make / private, open /dev/fuse
 * at a number known in advance, mount it, pass it to den, wait.
 */
function holderChain(
  o: SquashOptions,
  io: { syncRead: number; syncWrite: number; reportWrite: number; holderEnd: number },
): { chain: CallChain; steps: Step[] } {
  const chain = new CallChain();
  chain.reportFd = io.reportWrite;
  const steps: Step[] = [];
  // Waits in the prologue until den has written its id maps.
  addPrologue(chain, io);
  chain.reported("mount", 0n, chain.str("/"), 0n, MS_REC | MS_PRIVATE, 0n);
  steps.push({ op: "can't make / private" });
  // The mount options name the descriptor, and a chain cannot pass one
  // call's result to the next: open(2) returns the lowest free number, and
  // every number below `fd` is one the holder keeps open.
  const keep = new Set([io.syncRead, io.reportWrite, io.holderEnd]);
  let fd = 0;
  while (keep.has(fd)) fd++;
  chain.call("close", fd);
  chain.clearErrno(); // EBADF when it was not open
  // Opened inside the user namespace: the kernel wants /dev/fuse opened in
  // the namespace that mounts it.
  chain.reported("open", chain.str("/dev/fuse"), O_RDWR | O_CLOEXEC);
  steps.push({ op: "can't open", path: "/dev/fuse", hint: DEV_FUSE_HINT });
  const name = o.squashfuse.slice(o.squashfuse.lastIndexOf("/") + 1);
  const data = `fd=${fd},rootmode=40000,user_id=${o.uidMap.inside},group_id=${o.gidMap.inside}`;
  chain.reported(
    "mount",
    chain.str(name),
    chain.str(o.mountPoint),
    chain.str(`fuse.${name}`),
    MS_NOSUID | MS_NODEV | MS_RDONLY,
    chain.str(data),
  );
  steps.push({ op: `can't mount FUSE on ${o.mountPoint}`, hint: FUSE_HINT });
  chain.reported("sendmsg", io.holderEnd, fdMessage(chain, fd), 0);
  steps.push({ op: "can't pass /dev/fuse to den" });
  chain.call("close", fd);
  // Holds the namespaces until den closes its end (EOF) or kills it.
  chain.call("read", io.syncRead, chain.buffer(8).address, 1);
  chain.call("_exit", 0);
  return { chain, steps };
}

/** A struct msghdr with one byte and SCM_RIGHTS of fd, in chain memory. */
function fdMessage(chain: CallChain, fd: number): bigint {
  const byte = chain.buffer(1);
  const iov = chain.words([byte.address, 1n]);
  const control = chain.buffer(24); // CMSG_SPACE(sizeof(int))
  const cv = new DataView(control.bytes.buffer);
  cv.setBigUint64(0, 20n, true); // CMSG_LEN(sizeof(int))
  cv.setInt32(8, SOL_SOCKET, true);
  cv.setInt32(12, SCM_RIGHTS, true);
  cv.setInt32(16, fd, true);
  const msg = chain.buffer(56);
  const v = new DataView(msg.bytes.buffer);
  v.setBigUint64(16, iov, true);
  v.setBigUint64(24, 1n, true);
  v.setBigUint64(32, control.address, true);
  v.setBigUint64(40, 24n, true);
  return msg.address;
}

/** The descriptor the holder sent (close-on-exec here), or undefined. */
function receiveFd(sock: number): number | undefined {
  try {
    return receive(sock)?.fds[0];
  } catch {
    return undefined; // the caller says what was missing
  }
}

/**
 * Start squashfuse on the open /dev/fuse `dev`: outside the container's
 * namespaces, in a session of its own (a Ctrl-C for the container's
 * command is not for it), no PR_SET_PDEATHSIG (it serves the container as
 * long as the container lives, den or not), stdin /dev/null, stdout and
 * stderr into errWrite. Returns its pid once it has exec'd.
 */
function startSquashfuse(o: SquashOptions, dev: number, errWrite: number): number {
  const lc = libc();
  const [reportRead, reportWrite] = pipe();
  try {
    const chain = new CallChain();
    chain.reportFd = reportWrite;
    addSignalSetup(chain, { outliveDen: true });
    // Writes to stderr once den has stopped reading fail (EPIPE) instead of
    // killing it (libfuse ignores SIGPIPE too).
    chain.call("signal", SIGNALS.SIGPIPE!, SIG_IGN);
    chain.call("setsid");
    // Numbers above every descriptor involved, so no dup2() clobbers one
    // still to be copied; the copies are not close-on-exec.
    const fuseFd = Math.max(dev, errWrite, reportWrite, 2) + 1;
    const err = fuseFd + 1;
    chain.call("dup2", dev, fuseFd);
    chain.call("dup2", errWrite, err);
    chain.call("dup2", err, 1);
    chain.call("dup2", err, 2);
    chain.call("close", err);
    chain.call("close", 0);
    chain.call("open", chain.str("/dev/null"), O_RDONLY); // 0: the lowest free
    chain.clearErrno();
    const argv = [o.squashfuse, "-f", o.image, `/dev/fd/${fuseFd}`];
    chain.call("execvp", chain.str(o.squashfuse), chain.strv(argv));
    chain.reportErrno();
    chain.call("_exit", 127);
    // As posix_spawn(3): the child borrows den's memory until its exec
    // (CLONE_VM), and den's thread waits meanwhile (CLONE_VFORK), so no copy
    // of Deno's address space is made for a process that only execs. With
    // signals blocked, no handler of Deno's runs in the child before
    // addSignalSetup() has reset them; the child unblocks them itself.
    const all = new Uint8Array(128).fill(0xff);
    const mask = new Uint8Array(128);
    lc.sigprocmask(SIG_BLOCK, all, mask);
    const pid = chain.clone(CLONE_VM | CLONE_VFORK | SIGCHLD);
    const code = errno();
    lc.sigprocmask(SIG_SETMASK, mask, null);
    lc.close(reportWrite);
    if (pid < 0) throw errnoError("can't clone", code);
    // EOF when execvp() succeeded (the report pipe is close-on-exec).
    const exec = readReports(reportRead, 1)[0];
    chain.release();
    if (exec !== undefined) {
      lc.waitpid_now(pid, new Uint8Array(4), 0);
      throw new DenError("can't execute", `${o.squashfuse}: ${strerror(exec)}`, {
        path: o.image,
      });
    }
    return pid;
  } finally {
    lc.close(reportRead);
  }
}

/**
 * Wait (bounded) until squashfuse answers on the mount: a stat(2) of its
 * root, on another thread, waits for FUSE_INIT. If squashfuse exits, the
 * connection is aborted and the stat fails; then its exit status and
 * messages say why. Signals reach den meanwhile (it awaits).
 */
async function waitForAnswer(
  pid: number,
  root: string,
  o: SquashOptions & { errRead: number },
  exited: (why: string) => DenError,
  timedOut: () => DenError,
): Promise<void> {
  const lc = libc();
  // A stat(2) of the root waits on another thread, as does the clock.
  const answer = await Promise.race([
    lc.statx_wait(AT_FDCWD, cString(root), 0, STATX_TYPE, new Uint8Array(256))
      .then((r) => r === 0 ? undefined : "failed" as const),
    pause(o.timeoutMs ?? 10_000).then(() => "timeout" as const),
  ]);
  if (answer === undefined) return;
  if (answer === "timeout") throw timedOut();
  // Failed: squashfuse is gone or going (its last messages are in the pipe).
  const status = new Int32Array(1);
  for (let t = 0; t < 200; t++) {
    if (lc.waitpid_now(pid, new Uint8Array(status.buffer), WNOHANG) === pid) {
      const text = new TextDecoder().decode(readWaiting(o.errRead)).trim().split("\n")
        .filter((l) => l.trim() !== "");
      const why = text.length ? `: ${text.join("; ")}` : "";
      throw exited(`squashfuse ${describeStatus(status[0]!)}${why}`);
    }
    nap(1);
  }
  // Still running, yet the mount failed: the reason, in Deno's words.
  let why = "squashfuse did not answer";
  try {
    Deno.statSync(root);
  } catch (e) {
    why = osMessage(e);
  }
  throw new DenError("can't mount", why, { path: o.image });
}

/** What a pipe holds now, without waiting for more. */
function readWaiting(fd: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  // struct pollfd { int fd; short events; short revents; }
  const pfd = new Int32Array([fd, POLLIN]);
  while (chunks.length < 16) {
    pfd[1] = POLLIN;
    if (libc().poll(new Uint8Array(pfd.buffer), 1n, 0) !== 1 || !(pfd[1]! >> 16 & POLLIN)) break;
    const chunk = readSome(fd);
    if (chunk.length === 0) break;
    chunks.push(chunk);
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) out.set(c, (at += c.length) - c.length);
  return out;
}

/** One read(2) of what is there (poll said so). */
function readSome(fd: number): Uint8Array {
  const buf = new Uint8Array(4096);
  const r = Number(libc().read(fd, buf, BigInt(buf.length)));
  return buf.subarray(0, Math.max(r, 0));
}

/** Why /dev/fuse cannot be opened, as one line of advice. */
const DEV_FUSE_HINT =
  "/dev/fuse must exist and be usable by users (mode 0666); den doctor checks this node";

/** Why squashfuse fails in a user namespace, as one line of advice. */
const FUSE_HINT =
  "is the file a SquashFS image, and squashfuse built with libfuse >= 3.3? den doctor checks this node";
