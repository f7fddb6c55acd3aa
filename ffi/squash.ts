// mountSquash(): a SquashFS image mounted with squashfuse in a container's
// own namespaces, before the container is set up in them.
//
// Three processes, none of them JavaScript: a holder, cloned into new user
// and mount namespaces, makes / private and then only waits; squashfuse,
// started by a chain that setns()es into the holder's namespaces, mounts
// the image there on a host directory that only those namespaces see; the
// container child (runPlan() with hooks.enter) then enters the same
// namespaces and mounts and pivots as for a directory. den plans the
// container in between, looking at the image through /proc/HOLDER/root.
// Nothing is made on the host; when den dies, all three die of
// PR_SET_PDEATHSIG and the mount goes with its namespace.

import { DenError } from "../error.ts";
import { CallChain } from "./chain.ts";
import {
  CAP_SYS_ADMIN,
  CLONE_NEWNS,
  CLONE_NEWUSER,
  LINUX_CAPABILITY_VERSION_3,
  MS_PRIVATE,
  MS_REC,
  PR_CAP_AMBIENT,
  PR_CAP_AMBIENT_RAISE,
  SIG_DFL,
  SIGCHLD,
  SIGNALS,
  WNOHANG,
} from "./constants.ts";
import { errnoError, strerror } from "./errno.ts";
import { errno, libc } from "./libc.ts";
import type { Namespaces } from "./rendezvous.ts";
import {
  addPrologue,
  addSignalSetup,
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
  /** The namespaces the image is mounted in (the holder's). */
  ns: Namespaces;
  /** Host path of their root: the image is at `${root}${mountPoint}`. */
  root: string;
  /** Where the image is mounted, in those namespaces. */
  mountPoint: string;
  holderPid: number;
  fusePid: number;
  /** Kill squashfuse and the holder; the mount goes with the namespace. */
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
    // The holder: new namespaces, / private, then waits until killed (or
    // until den dies: its copy of the write end is closed, so EOF).
    const [syncRead, syncWrite] = pipe();
    const [reportRead, reportWrite] = pipe();
    fds.push(syncWrite, reportRead);
    const holder = new CallChain();
    holder.reportFd = reportWrite;
    addPrologue(holder, { syncRead, syncWrite });
    holder.reported("mount", 0n, holder.str("/"), 0n, MS_REC | MS_PRIVATE, 0n);
    holder.call("read", syncRead, holder.buffer(8).address, 1);
    holder.call("_exit", 0);
    const holderPid = holder.clone(CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD);
    const code = errno();
    lc.close(syncRead);
    lc.close(reportWrite);
    if (holderPid < 0) {
      throw errnoError("can't clone a user namespace", code, { hint: usernsHint() });
    }
    pids.push(holderPid);
    writeIdMaps(holderPid, o);
    lc.write(syncWrite, new Uint8Array([1]), 1n);
    const private_ = readReports(reportRead, 1)[0] ?? -1;
    holder.release();
    if (private_ !== 0) {
      if (private_ < 0) throw fail("namespace holder died");
      throw errnoError("can't make / private", private_);
    }
    const { openNamespaces } = await import("./rendezvous.ts");
    ns = { ...openNamespaces(holderPid), ownerPid: Deno.pid };
    const before = fuseMountsAt(holderPid, o.mountPoint);

    // squashfuse, in the holder's namespaces. Its uid there is not 0 (unless
    // -u 0), so execve() would drop the CAP_SYS_ADMIN that setns() gave and
    // mount(2) would fail: keep that one capability as an ambient one.
    const fuse = new CallChain();
    const [fReportRead, fReportWrite] = pipe();
    const [errRead, errWrite] = pipe();
    fds.push(fReportRead, errRead);
    fuse.reportFd = fReportWrite;
    addSignalSetup(fuse);
    // Its messages go to den, which says them in its own error line.
    fuse.call("dup2", errWrite, 1);
    fuse.call("dup2", errWrite, 2);
    const steps: Step[] = [];
    fuse.reported("setns", ns.user, CLONE_NEWUSER);
    steps.push({ op: "squashfuse: can't join the container's user namespace" });
    fuse.reported("setns", ns.mnt, CLONE_NEWNS);
    steps.push({ op: "squashfuse: can't join the container's mount namespace" });
    const bit = 1 << CAP_SYS_ADMIN;
    // struct __user_cap_header_struct { u32 version; int pid (0: self) },
    // then two { u32 effective, permitted, inheritable }: only this one.
    const data = new Uint32Array([bit, bit, bit, 0, 0, 0]);
    fuse.reported(
      "capset",
      fuse.words([BigInt(LINUX_CAPABILITY_VERSION_3)]),
      fuse.words([...new BigUint64Array(data.buffer)]),
    );
    steps.push({ op: "squashfuse: can't set capabilities" });
    fuse.reported("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_SYS_ADMIN, 0, 0);
    steps.push({ op: "squashfuse: can't keep CAP_SYS_ADMIN" });
    const argv = [o.squashfuse, "-f", o.image, o.mountPoint];
    fuse.call("execvp", fuse.str(o.squashfuse), fuse.strv(argv));
    fuse.reportErrno();
    fuse.call("_exit", 127);
    const fusePid = fuse.clone(SIGCHLD);
    const cloneErr = errno();
    lc.close(fReportWrite);
    lc.close(errWrite);
    if (fusePid < 0) throw errnoError("can't clone", cloneErr);
    pids.push(fusePid);
    const codes = readReports(fReportRead, steps.length + 1);
    fuse.release();
    for (let i = 0; i < steps.length; i++) {
      const c = codes[i];
      if (c === undefined) throw fail("squashfuse's starter died");
      if (c !== 0) throw errnoError(steps[i]!.op, c);
    }
    if (codes.length > steps.length) {
      const c = codes[steps.length]!;
      throw fail(`can't execute ${o.squashfuse}: ${strerror(c)}`);
    }

    // Wait (bounded) for the mount to appear in the namespace, or for
    // squashfuse to fail.
    const deadline = Date.now() + (o.timeoutMs ?? 10_000);
    const status = new Int32Array(1);
    for (let delay = 1;; delay = Math.min(delay * 2, 20)) {
      if (fuseMountsAt(holderPid, o.mountPoint) > before) break;
      if (lc.waitpid_now(fusePid, new Uint8Array(status.buffer), WNOHANG) === fusePid) {
        pids.splice(pids.indexOf(fusePid), 1);
        const said = new TextDecoder().decode(readFull(errRead, 4096)).trim().split("\n")
          .filter((l) => l.trim() !== "");
        const why = said.length ? `: ${said.join("; ")}` : "";
        throw fail(`squashfuse ${describeStatus(status[0]!)}${why}`, FUSE_HINT);
      }
      if (Date.now() > deadline) {
        throw fail(`squashfuse did not mount it within ${(o.timeoutMs ?? 10_000) / 1000} s`);
      }
      await new Promise((ok) => setTimeout(ok, delay));
    }
    return {
      ns,
      root: `/proc/${holderPid}/root`,
      mountPoint: o.mountPoint,
      holderPid,
      fusePid,
      close,
    };
  } catch (e) {
    close();
    throw e;
  }
}

/** Why squashfuse fails in a user namespace, as one line of advice. */
const FUSE_HINT =
  "is the file a SquashFS image, and /dev/fuse usable (mode 0666)? den doctor checks this node";
