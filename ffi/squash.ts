// mountSquash(): a SquashFS image mounted with squashfuse in a container's
// own namespaces, before the container is set up in them.
//
// One process, no JavaScript in it, holds the namespaces: cloned into new
// user and mount namespaces, it makes / private, keeps CAP_SYS_ADMIN as an
// ambient capability and becomes squashfuse, which mounts the image on a
// host directory that only those namespaces see. The container child
// (runPlan() with hooks.enter) then enters the same namespaces and mounts
// and pivots as for a directory. den plans the container in between,
// looking at the image through /proc/SQUASHFUSE/root. Nothing is made on the
// host; when den dies, squashfuse dies of PR_SET_PDEATHSIG and the mount
// goes with its namespace (the container, if it still runs, dies too).

import { DenError } from "../error.ts";
import { CallChain } from "./chain.ts";
import {
  CAP_SYS_ADMIN,
  CLONE_NEWNS,
  CLONE_NEWUSER,
  LINUX_CAPABILITY_VERSION_3,
  MS_PRIVATE,
  MS_REC,
  O_CLOEXEC,
  PR_CAP_AMBIENT,
  PR_CAP_AMBIENT_RAISE,
  SIG_DFL,
  SIGCHLD,
  SIGNALS,
  WNOHANG,
} from "./constants.ts";
import { errnoError, strerror } from "./errno.ts";
import { cString, errno, libc } from "./libc.ts";
import type { Namespaces } from "./rendezvous.ts";
import {
  addPrologue,
  pipe,
  readFull,
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
  /** How long squashfuse may take to mount (default 10 s). */
  timeoutMs?: number;
}

export interface SquashMount {
  /** The namespaces the image is mounted in (squashfuse's). */
  ns: Namespaces;
  /** Host path of their root: the image is at `${root}${mountPoint}`. */
  root: string;
  /** Where the image is mounted, in those namespaces. */
  mountPoint: string;
  /** squashfuse, which holds the namespaces. */
  fusePid: number;
  /** Kill squashfuse; the mount goes with the namespace. */
  close(): void;
}

/** Undo mountinfo's octal escapes (\040 for a space, ...). */
function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

/** How many FUSE mounts /proc/PID/mountinfo shows at a mount point. */
function fuseMountsAt(pid: number, mountPoint: string): number {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/mountinfo`);
  } catch {
    return -1;
  }
  let n = 0;
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-");
    if (sep < 0 || unescapeMountinfo(f[4] ?? "") !== mountPoint) continue;
    if (f[sep + 1]?.startsWith("fuse")) n++;
  }
  return n;
}

function describeStatus(status: number): string {
  const sig = status & 0x7f;
  return sig === 0 ? `exited with status ${(status >> 8) & 0xff}` : `died of signal ${sig}`;
}

/** Mount a SquashFS image in new namespaces; see the top of this file. */
export async function mountSquash(o: SquashOptions): Promise<SquashMount> {
  const lc = libc();
  const fail = (detail: string, hint?: string, code?: string) =>
    new DenError("can't mount", detail, { path: o.image, hint, code });
  // Started with SIGCHLD ignored, the kernel would reap our children itself.
  lc.signal(SIGCHLD, SIG_DFL);
  const fds: number[] = [];
  const pids: number[] = [];
  let ns: Namespaces | undefined;
  const close = () => {
    // SIGKILL, not SIGTERM: squashfuse has nothing to write back, and on
    // SIGTERM libfuse unmounts its mount point by path, which after the
    // container's pivot_root names a directory of the container instead.
    for (const pid of pids.splice(0).reverse()) {
      lc.kill(pid, SIGNALS.SIGKILL!);
      lc.waitpid_now(pid, new Uint8Array(4), 0);
    }
    for (const fd of fds.splice(0)) lc.close(fd);
    if (ns) {
      lc.close(ns.user);
      lc.close(ns.mnt);
      ns = undefined;
    }
  };
  try {
    // Loaded while the child starts.
    const rendezvous = import("./rendezvous.ts");
    const [syncRead, syncWrite] = pipe();
    const [reportRead, reportWrite] = pipe();
    const [errRead, errWrite] = pipe();
    fds.push(syncWrite, reportRead, errRead);
    const chain = new CallChain();
    chain.reportFd = reportWrite;
    const steps: Step[] = [];
    // Waits in the prologue until den has written its id maps.
    addPrologue(chain, { syncRead, syncWrite });
    chain.reported("mount", 0n, chain.str("/"), 0n, MS_REC | MS_PRIVATE, 0n);
    steps.push({ op: "can't make / private" });
    // Its messages go to den, which says them in its own error line.
    chain.call("dup2", errWrite, 1);
    chain.call("dup2", errWrite, 2);
    // squashfuse's uid in the namespace is not 0 (unless -u 0), so execve()
    // would drop the CAP_SYS_ADMIN that clone() gave and mount(2) would
    // fail: keep that one capability as an ambient one.
    const bit = 1 << CAP_SYS_ADMIN;
    // struct __user_cap_header_struct { u32 version; int pid (0: self) },
    // then two { u32 effective, permitted, inheritable }: only this one.
    const data = new Uint32Array([bit, bit, bit, 0, 0, 0]);
    chain.reported(
      "capset",
      chain.words([BigInt(LINUX_CAPABILITY_VERSION_3)]),
      chain.words([...new BigUint64Array(data.buffer)]),
    );
    steps.push({ op: "squashfuse: can't set capabilities" });
    chain.reported("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0);
    steps.push({ op: "squashfuse: can't keep CAP_SYS_ADMIN" });
    // The gate, as for a container's command: den writes the path's first
    // byte once the steps above are reported, so after PR_SET_PDEATHSIG.
    // Had den died before, the read sees EOF, the path stays empty and
    // execvp() fails: no squashfuse outlives den.
    const file = cString(o.squashfuse);
    const gateByte = file[0]!;
    file[0] = 0;
    const fileBuf = chain.buffer(file.length);
    fileBuf.bytes.set(file);
    chain.call("read", syncRead, fileBuf.address, 1);
    const argv = [o.squashfuse, "-f", o.image, o.mountPoint];
    chain.call("execvp", fileBuf.address, chain.strv(argv));
    chain.reportErrno();
    chain.call("_exit", 127);
    const pid = chain.clone(CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD);
    const code = errno();
    lc.close(syncRead);
    lc.close(reportWrite);
    lc.close(errWrite);
    if (pid < 0) {
      throw errnoError("can't clone a user namespace", code, { hint: usernsHint() });
    }
    pids.push(pid);
    writeIdMaps(pid, o);
    // Watch the namespace's mount table before squashfuse can mount: a
    // change after open() makes poll(2) say POLLPRI (proc(5)).
    const mountinfo = lc.open(cString(`/proc/${pid}/mountinfo`), O_CLOEXEC);
    if (mountinfo >= 0) fds.push(mountinfo);
    // A copy of den's mounts: the host may have a FUSE mount there too.
    const before = fuseMountsAt(pid, o.mountPoint);
    lc.write(syncWrite, new Uint8Array([1]), 1n);
    const codes = readReports(reportRead, steps.length);
    for (let i = 0; i < steps.length; i++) {
      const c = codes[i];
      if (c === undefined) throw fail("squashfuse's starter died");
      if (c !== 0) throw errnoError(steps[i]!.op, c);
    }
    lc.write(syncWrite, new Uint8Array([gateByte]), 1n);
    // EOF when execvp() succeeded (the report pipe is close-on-exec).
    const exec = readReports(reportRead, 1)[0];
    chain.release();
    if (exec !== undefined) throw fail(`can't execute ${o.squashfuse}: ${strerror(exec)}`);
    const { openNamespaces } = await rendezvous;
    ns = { ...openNamespaces(pid), ownerPid: Deno.pid };
    await waitForMount(pid, { ...o, before, mountinfo, errRead }, (why, exited) => {
      if (exited) pids.splice(pids.indexOf(pid), 1); // reaped
      return fail(why, exited ? FUSE_HINT : undefined);
    });
    return { ns, root: `/proc/${pid}/root`, mountPoint: o.mountPoint, fusePid: pid, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** poll(2)'s events (asm-generic/poll.h). */
const POLLIN = 0x1;
const POLLPRI = 0x2;
const POLLHUP = 0x10;

/**
 * Wait (bounded) until squashfuse's mount shows in its namespace, or it
 * exits. poll(2) wakes on a change of the mount table (mountinfo, when it
 * could be opened) or on squashfuse's messages and exit (errRead's EOF);
 * each wait is short, so den still sees signals meanwhile.
 */
async function waitForMount(
  pid: number,
  o: SquashOptions & { before: number; mountinfo: number; errRead: number },
  fail: (why: string, exited: boolean) => DenError,
): Promise<void> {
  const { mountinfo, errRead } = o;
  const lc = libc();
  const timeoutMs = o.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  const status = new Int32Array(1);
  // What squashfuse said, for the error line.
  const decoder = new TextDecoder();
  let said = "";
  // struct pollfd { int fd; short events; short revents; } x 2
  const pfd = new Int32Array(4);
  const events = new Int16Array(pfd.buffer);
  pfd[0] = mountinfo;
  events[2] = POLLPRI;
  pfd[2] = errRead;
  events[6] = POLLIN;
  for (;;) {
    if (fuseMountsAt(pid, o.mountPoint) > o.before) return;
    if (lc.waitpid_now(pid, new Uint8Array(status.buffer), WNOHANG) === pid) {
      said += decoder.decode(readFull(errRead, 4096));
      const text = said.trim().split("\n").filter((l) => l.trim() !== "");
      const why = text.length ? `: ${text.join("; ")}` : "";
      throw fail(`squashfuse ${describeStatus(status[0]!)}${why}`, true);
    }
    const left = deadline - Date.now();
    if (left <= 0) throw fail(`squashfuse did not mount it within ${timeoutMs / 1000} s`, false);
    events[3] = events[7] = 0;
    // Without mountinfo to wake on, look again every few milliseconds.
    const n = lc.poll(new Uint8Array(pfd.buffer), 2n, Math.min(left, mountinfo < 0 ? 2 : 20));
    if (n > 0 && events[7]! & POLLIN) said += decoder.decode(readSome(errRead), { stream: true });
    if (n > 0 && events[7]! & POLLHUP) pfd[2] = -1; // exited: waitpid() says how
    if (n === 0) await new Promise((ok) => setTimeout(ok, 0)); // let signals in
  }
}

/** One read(2) of what is there (poll said so). */
function readSome(fd: number): Uint8Array {
  const buf = new Uint8Array(4096);
  const r = Number(libc().read(fd, buf, BigInt(buf.length)));
  return buf.subarray(0, Math.max(r, 0));
}

/** Why squashfuse fails in a user namespace, as one line of advice. */
const FUSE_HINT =
  "is the file a SquashFS image, and /dev/fuse usable (mode 0666)? den doctor checks this node";
