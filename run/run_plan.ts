// runPlan(): start the container a Plan describes, supervise it, return its
// exit status. The child's calls and the host-side pieces of starting it
// (pipes, id maps, temporary files, mount points) are ffi/spawn.ts's; this
// is process life: the checks before, signals passed on, the wait.

import { DenError, EXIT_CMD } from "../error.ts";
import type { Plan } from "./plan.ts";
import { CallChain } from "../ffi/chain.ts";
import {
  CLONE_NEWNS,
  CLONE_NEWUSER,
  ERRNO_NAMES,
  O_CLOEXEC,
  O_NOCTTY,
  SIG_DFL,
  SIGCHLD,
  SIGNALS,
  sysPivotRoot,
} from "../ffi/constants.ts";
import { errnoError, strerror } from "../ffi/errno.ts";
import { cString, errno, fileKind, libc, symbolAddress } from "../ffi/libc.ts";
import type { Namespaces } from "../ffi/rendezvous.ts";
import {
  addChildCalls,
  addJoinCalls,
  type ChainInputs,
  createMountPoints,
  FORWARDED_SIGNALS,
  generatedFilesDir,
  mountFlags,
  pipe,
  readReports,
  removeMountPoints,
  tempFile,
  usernsHint,
  writeGeneratedFiles,
  writeIdMaps,
} from "../ffi/spawn.ts";

/** What runPlan() tells its caller and how the container is made. */
export interface RunHooks {
  warn?: (msg: string) => void;
  /** Join this container instead of making one (a peer of a group). */
  join?: Namespaces;
  /** The container is set up and its process waits to exec (pid). */
  onReady?: (pid: number) => void;
  /**
   * Set up the container in these namespaces, made beforehand (a SquashFS
   * image mounted in them): setns() instead of new ones, then the plan's
   * mounts. `root` is the host path of their root (/proc/PID/root).
   */
  enter?: Namespaces & { root: string };
}

function statusToExit(status: number): number {
  const sig = status & 0x7f;
  return sig === 0 ? (status >> 8) & 0xff : 128 + sig;
}

/**
 * Start the container of a plan and wait for its command; returns den's
 * exit status (the command's, or 128+N when it died of signal N).
 *
 * unshare(CLONE_NEWUSER) fails with EINVAL in a multithreaded process, and
 * Deno always is one. So clone(2) creates the namespaces for a child that
 * runs only libc code (chain.ts). It waits until the parent has written its
 * id maps, reports the errno of each mount to the parent, and waits again
 * before execvp(): the parent lets it go only when every step succeeded.
 */
export async function runPlan(
  plan: Plan,
  hooks: RunHooks = {},
): Promise<number> {
  const lc = libc();
  // As ch-run: never with privileges someone else's install bit gave.
  if (Deno.uid() !== lc.geteuid() || Deno.gid() !== lc.getegid()) {
    throw new DenError("", "den must not be setuid or setgid: real and effective ids differ", {
      hint: "remove the setuid/setgid bit (chmod ug-s); den needs no privileges",
    });
  }
  const join = hooks.join;
  const enter = hooks.enter;
  const made = join || enter ? [] : createMountPoints(plan);
  let child = 0;
  const stopForwarding = forwardSignals(() => child);
  const [syncRead, syncWrite] = pipe();
  const [reportRead, reportWrite] = pipe();
  const temps: string[] = [];
  const removeTemps = () => temps.splice(0).forEach((p) => lc.unlink(cString(p)));
  const closeAll = (...fds: number[]) => fds.forEach((fd) => lc.close(fd));

  const chain = new CallChain();
  chain.reportFd = reportWrite;
  // The child repoints its copy of `environ` so execvp() searches the
  // container's PATH.
  const environ = symbolAddress("environ");
  try {
    const io: ChainInputs = {
      syncRead,
      syncWrite,
      environ: BigInt(Deno.UnsafePointer.value(environ)),
      fileSource(op) {
        const path = tempFile(
          op.target.slice(op.target.lastIndexOf("/") + 1),
          op.content,
          plan.tmpdir,
        );
        temps.push(path);
        return path;
      },
      // Generated files live in a tmpfs of the child's own: nothing on the
      // host, even after kill -9 of den at any moment.
      filesDir: join || !plan.ops.some((op) => op.kind === "bind-file")
        ? undefined // joining, or --no-passwd: no files, no lookups
        : generatedFilesDir(plan, {
          isDir: (p) => fileKind(p) === "dir",
          real: (p) => {
            try {
              return Deno.realPathSync(p);
            } catch {
              return p;
            }
          },
        }),
      // The image of entered namespaces is seen from den through their root.
      lockedFlags: enter ? (path) => mountFlags(`${enter.root}${path}`) : mountFlags,
      pivotRootNr: sysPivotRoot(),
    };
    const { steps, gateByte, files } = join
      ? addJoinCalls(chain, plan, io, join)
      : addChildCalls(chain, plan, io, enter);
    // Started with SIGCHLD ignored (some batch systems do), the kernel would
    // reap the child itself and its exit status would be lost.
    lc.signal(SIGCHLD, SIG_DFL);
    // No CLONE_VM: the child's errno must be its own. With shared memory,
    // the child reports errno from the very word that den's main thread
    // uses, and glibc's free() saves and restores errno: any free() in den
    // while the child runs its steps could report a failed mount as done
    // (seen: a stale EADDRINUSE reported for a setns that worked). The
    // copy-on-write clone costs 1 to 1.5 ms here (measured side by side).
    const pid = chain.clone(join || enter ? SIGCHLD : CLONE_NEWUSER | CLONE_NEWNS | SIGCHLD);
    if (pid < 0) {
      const code = errno();
      if (join || enter) throw errnoError("can't clone", code);
      throw errnoError("can't clone a user namespace", code, {
        hint: usernsHint(),
      });
    }
    child = pid;
    closeAll(reportWrite, syncRead);
    const kill = () => {
      lc.kill(pid, SIGNALS.SIGKILL!);
      lc.waitpid_now(pid, new Uint8Array(4), 0);
    };
    try {
      if (!join && !enter) writeIdMaps(pid, plan);
      lc.write(syncWrite, new Uint8Array([1]), 1n);
      /** Read and check the reports of steps [from, to). */
      const check = (from: number, to: number) => {
        const reports = readReports(reportRead, to - from);
        for (let i = from; i < to; i++) {
          const step = steps[i]!;
          const code = reports[i - from];
          if (code === undefined) {
            throw new DenError("container setup", "child died before it was ready");
          }
          if (code === 0) continue;
          if (step.optional) {
            hooks.warn?.(`${errnoError(step.op, code).message}; using /`);
            continue;
          }
          throw errnoError(step.op, code, { path: step.path, hint: step.hint });
        }
      };
      if (files) {
        // The child has mounted its tmpfs and waits for the files.
        check(0, files.after);
        writeGeneratedFiles(pid, files);
        lc.write(syncWrite, new Uint8Array([1]), 1n);
      }
      check(files?.after ?? 0, steps.length);
      hooks.onReady?.(pid);
    } catch (e) {
      kill();
      throw e;
    }
    made.length = 0; // set up: the mount points stay, as with ch-run -w
    removeTemps();
    return await superviseChild(
      pid,
      gateByte,
      syncWrite,
      reportRead,
      plan,
      () => chain.release(),
    );
  } finally {
    // Right after the wait, in the same turn: no signal can reach a reused pid.
    child = 0;
    stopForwarding();
    closeAll(syncWrite, reportRead);
    removeTemps();
    removeMountPoints(made);
  }
}

/** Let the child exec, forward signals to it, and wait for its exit. */
async function superviseChild(
  pid: number,
  gateByte: number,
  syncWrite: number,
  reportRead: number,
  plan: Plan,
  childDone: () => void,
): Promise<number> {
  const lc = libc();
  lc.write(syncWrite, new Uint8Array([gateByte]), 1n);
  const code = readReports(reportRead, 1)[0];
  const status = new Int32Array(1);
  if (code !== undefined) {
    lc.waitpid_now(pid, new Uint8Array(status.buffer), 0);
    childDone();
    throw new DenError(
      "can't execve(2)",
      `${plan.argv[0]}: ${strerror(code)}`,
      {
        code: ERRNO_NAMES[code],
        exitCode: EXIT_CMD,
      },
    );
  }
  childDone();
  for (let failures = 0;;) {
    // A nonblocking call runs on another thread: its errno is not ours to
    // read. waitpid() fails only with EINTR (retried) or ECHILD, which
    // SIGCHLD's default disposition, restored before clone(), rules out.
    const r = await lc.waitpid(pid, new Uint8Array(status.buffer), 0);
    if (r < 0 && ++failures > 100) throw new DenError("can't waitpid", `pid ${pid}`);
    if (r === pid) break;
  }
  return statusToExit(status[0]!);
}

/**
 * Pass signals sent to den on to the container's process, from before den
 * writes any temporary file (a SIGTERM then cannot kill den and leave them
 * behind): until there is a process the signal waits in Deno's queue.
 *
 * The command stays in den's process group, as with ch-run (which execs)
 * and system(3): pipelines into pagers, `&`, Ctrl-Z and `fg` are the
 * shell's business and work unchanged. A Ctrl-C or Ctrl-\\ from the
 * terminal reaches the whole foreground group, command included, so den
 * does not pass those on again; sent to den alone, they are passed on.
 */
function forwardSignals(target: () => number): () => void {
  const lc = libc();
  const forward = FORWARDED_SIGNALS.map((sig) => {
    const fromTerminal = sig === "SIGINT" || sig === "SIGQUIT";
    const fn = () => {
      const pid = target();
      if (pid > 0 && !(fromTerminal && inTerminalForeground())) lc.kill(pid, SIGNALS[sig]!);
    };
    Deno.addSignalListener(sig, fn);
    return [sig, fn] as const;
  });
  return () => forward.forEach(([sig, fn]) => Deno.removeSignalListener(sig, fn));
}

/** Is den in the foreground process group of its controlling terminal? */
function inTerminalForeground(): boolean {
  const lc = libc();
  const fd = lc.open(cString("/dev/tty"), O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return false; // no controlling terminal
  try {
    return lc.tcgetpgrp(fd) === lc.getpgrp();
  } finally {
    lc.close(fd);
  }
}
