// The child of `den run`: its chain of libc calls (mounts, pivot_root, setns
// for joined peers, the gate, execvp) and the host-side pieces of starting it
// (pipes, id maps, temporary files, mount points). run/run_plan.ts runs it.

import { DenError, EXIT_CMD } from "../error.ts";
import { firstFreeDir, type MountOp, type Plan } from "../run/plan.ts";
import type { CallChain } from "./chain.ts";
import {
  CLONE_NEWNS,
  CLONE_NEWUSER,
  EINTR,
  LOCKED_FLAGS,
  MNT_DETACH,
  MS_BIND,
  MS_NODEV,
  MS_NOEXEC,
  MS_NOSUID,
  MS_PRIVATE,
  MS_RDONLY,
  MS_REC,
  MS_REMOUNT,
  O_CLOEXEC,
  O_CREAT,
  O_EXCL,
  O_NOFOLLOW,
  O_WRONLY,
  PR_SET_NO_NEW_PRIVS,
  PR_SET_PDEATHSIG,
  S_IFREG,
  SIG_DFL,
  SIG_SETMASK,
  SIGNALS,
} from "./constants.ts";
import { errnoError } from "./errno.ts";
import { cString, errno, libc } from "./libc.ts";
import type { Namespaces } from "./rendezvous.ts";

/** Signals den passes on to the container's process. */
export const FORWARDED_SIGNALS: Deno.Signal[] = [
  "SIGTERM",
  "SIGINT",
  "SIGHUP",
  "SIGQUIT",
  "SIGUSR1",
  "SIGUSR2",
];

/** A libc call in the child whose failure ends the run with this error. */
export interface Step {
  op: string;
  path?: string;
  optional?: boolean;
  /** One line of advice when this step fails. */
  hint?: string;
}

/** Why the kernel refuses an unprivileged overlayfs, as one line of advice. */
const OVERLAY_HINT =
  "unprivileged overlayfs needs Linux >= 5.11 with CONFIG_OVERLAY_FS; den doctor checks this node";

/** A path in overlayfs mount options: `,`, `:` and `\\` are escaped. */
function overlayPath(path: string): string {
  return path.replace(/[\\,:]/g, (c) => `\\${c}`);
}

export function pipe(): [number, number] {
  const fds = new Int32Array(2);
  if (libc().pipe2(new Uint8Array(fds.buffer), O_CLOEXEC) !== 0) {
    throw errnoError("can't pipe", errno());
  }
  return [fds[0]!, fds[1]!];
}

/** Read exactly n bytes unless EOF comes first; returns what was read. */
export function readFull(fd: number, n: number): Uint8Array {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = Number(libc().read(fd, buf.subarray(got), BigInt(n - got)));
    if (r === 0) break;
    if (r < 0) {
      const code = errno();
      if (code === EINTR) continue;
      throw errnoError("can't read from container", code);
    }
    got += r;
  }
  return buf.subarray(0, got);
}

/** Read up to n reports of a chain (an errno each, 0 = success) until EOF. */
export function readReports(fd: number, n: number): Int32Array {
  const bytes = readFull(fd, n * 4);
  return new Int32Array(bytes.buffer, 0, bytes.length >> 2);
}

/** Mount flags of the file system holding path (statvfs f_flag). */
export function mountFlags(path: string): number {
  const buf = new BigUint64Array(14); // struct statvfs is 112 bytes on 64-bit
  if (libc().statvfs(cString(path), new Uint8Array(buf.buffer)) !== 0) {
    throw errnoError("can't statvfs", errno(), { path });
  }
  return Number(buf[9]!); // f_flag
}

/** A temporary host file with content, for the child to bind. A memfd
 * cannot be the source of a bind mount in another mount namespace (EINVAL),
 * so this is a file that runPlan() deletes once the child has bound it. */
export function tempFile(name: string, content: string, tmpdir: string): string {
  for (let attempt = 0;; attempt++) {
    const rand = crypto.getRandomValues(new Uint8Array(6));
    const suffix = [...rand].map((b) => b.toString(16).padStart(2, "0")).join("");
    const path = `${tmpdir}/den-${name}.${suffix}`;
    try {
      writeNewFile(path, content);
      return path;
    } catch (e) {
      if (e instanceof DenError && e.options.code === "EEXIST" && attempt < 10) continue;
      throw e;
    }
  }
}

/** Write the id maps of a child in a new user namespace. */
export function writeIdMaps(pid: number, plan: Pick<Plan, "uidMap" | "gidMap">): void {
  const write = (file: string, text: string) => {
    const path = `/proc/${pid}/${file}`;
    writeWhole(path, O_WRONLY | O_CLOEXEC, text, `can't write ${path}`);
  };
  write("setgroups", "deny");
  write("uid_map", `${plan.uidMap.inside} ${plan.uidMap.outside} 1\n`);
  write("gid_map", `${plan.gidMap.inside} ${plan.gidMap.outside} 1\n`);
}

/**
 * open(2) path with flags (mode 0600 if it creates), write all of text,
 * close; a failure throws `op: strerror`, and a file this call created is
 * removed again.
 */
function writeWhole(path: string, flags: number, text: string, op: string): void {
  const lc = libc();
  const bytes = cString(text).subarray(0, -1);
  const fd = lc.open_create(cString(path), flags, 0o600);
  if (fd < 0) throw errnoError(op, errno(), { path: flags & O_CREAT ? path : undefined });
  let off = 0;
  while (off < bytes.length) {
    const n = Number(lc.write(fd, bytes.subarray(off), BigInt(bytes.length - off)));
    if (n <= 0) break;
    off += n;
  }
  const code = off === bytes.length ? 0 : errno();
  lc.close(fd);
  if (code === 0) return;
  if (flags & O_CREAT) lc.unlink(cString(path));
  throw errnoError(op, code, { path: flags & O_CREAT ? path : undefined });
}

function readProc(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return undefined;
  }
}

/** Why clone() with CLONE_NEWUSER fails, as one line of advice. */
export function usernsHint(read: (path: string) => string | undefined = readProc): string {
  if (read("/proc/sys/user/max_user_namespaces") === "0") {
    return "unprivileged user namespaces are disabled: sysctl user.max_user_namespaces is 0";
  }
  if (read("/proc/sys/kernel/unprivileged_userns_clone") === "0") {
    return "unprivileged user namespaces are disabled: sysctl kernel.unprivileged_userns_clone is 0";
  }
  if (read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") === "1") {
    return "AppArmor restricts user namespaces: sysctl kernel.apparmor_restrict_unprivileged_userns is 1";
  }
  return "user namespaces look unavailable (check sysctl user.max_user_namespaces)";
}

/**
 * Create the missing mount points a -w plan asks for. Returns the topmost
 * directory or file each one needed, so a failed setup can take them away
 * and leave the image as it was.
 */
export function createMountPoints(plan: Plan): string[] {
  const made: string[] = [];
  const missing = (p: string) => {
    try {
      Deno.lstatSync(p);
      return false;
    } catch {
      return true;
    }
  };
  for (const c of plan.create) {
    let top = c.path;
    for (let up = top.slice(0, top.lastIndexOf("/")); up && missing(up);) {
      top = up;
      up = up.slice(0, up.lastIndexOf("/"));
    }
    try {
      if (c.kind === "dir") Deno.mkdirSync(c.path, { recursive: true });
      else {
        Deno.mkdirSync(c.path.slice(0, c.path.lastIndexOf("/")), { recursive: true });
        Deno.writeFileSync(c.path, new Uint8Array(), { createNew: true });
      }
      made.push(top);
    } catch (e) {
      removeMountPoints(made);
      throw new DenError("can't mkdir", (e as Error).message, { path: c.path, cause: e });
    }
  }
  return made;
}

export function removeMountPoints(made: string[]): void {
  for (const p of made.splice(0).reverse()) {
    try {
      Deno.removeSync(p, { recursive: true });
    } catch {
      // best effort: gone already
    }
  }
}

/** What the child's calls need from den's side, decided before clone(). */
export interface ChainInputs {
  /** Read end of the pipe den writes to: id maps done, then the gate byte. */
  syncRead: number;
  /** Its write end, which the child closes: if den dies, reads see EOF. */
  syncWrite: number;
  /** Address of libc's `environ` variable. */
  environ: bigint;
  /**
   * Host directory on which the child mounts a tmpfs of its own for the
   * generated files (bind-file ops): den writes them there through
   * /proc/CHILD/root while the child waits, so they never exist on the
   * host. Set only when the plan has bind-file ops; without it,
   * fileSource() makes host files.
   */
  filesDir?: string;
  /** Host file that holds the content of a bind-file op (no filesDir). */
  fileSource(op: MountOp & { kind: "bind-file" }): string;
  /** Flags of the mount holding path that a remount must keep. */
  lockedFlags(path: string): number;
  pivotRootNr: number;
}

/** The chain's interface, so tests can record the calls (chain.ts does them). */
export type ChainSink = Pick<
  CallChain,
  "str" | "buffer" | "strv" | "words" | "call" | "reported" | "reportErrno" | "clearErrno"
>;

/** Add the child's calls for one mount op; returns the step it reports. */
function addOp(chain: ChainSink, op: MountOp, io: ChainInputs): Step {
  const none = 0n;
  const mount = (src: bigint, target: string, fstype: bigint, flags: number, data: bigint) =>
    chain.reported("mount", src, chain.str(target), fstype, flags, data);
  switch (op.kind) {
    case "bind":
      mount(chain.str(op.source), op.target, none, MS_BIND | (op.recursive ? MS_REC : 0), none);
      return { op: `can't bind ${op.source} to ${op.target}` };
    case "bind-file":
      mount(chain.str(io.fileSource(op)), op.target, none, MS_BIND, none);
      return { op: `can't bind a generated file to ${op.target}` };
    case "tmpfs": {
      const data = chain.str(op.options ?? "mode=1777");
      mount(chain.str("tmpfs"), op.target, chain.str("tmpfs"), 0, data);
      return { op: `can't mount tmpfs at ${op.target}` };
    }
    case "mkdir":
      chain.reported("mkdir", chain.str(op.target), 0o755);
      return { op: "can't mkdir", path: op.target };
    case "mkfile":
      // mknod(2) of a regular file needs no privilege; no fd to close.
      chain.reported("mknod", chain.str(op.target), S_IFREG | 0o644, 0);
      return { op: "can't create", path: op.target };
    case "overlay": {
      // userxattr: overlay's own xattrs in user.*, which a user namespace
      // may write (trusted.* it may not); without it renaming a directory
      // of the image fails.
      const data = `lowerdir=${overlayPath(op.lower)},upperdir=${overlayPath(op.upper)},` +
        `workdir=${overlayPath(op.work)},userxattr`;
      mount(chain.str("overlay"), op.target, chain.str("overlay"), 0, chain.str(data));
      return { op: `can't overlay ${op.target}`, hint: OVERLAY_HINT };
    }
    case "remount-ro": {
      // In a user namespace the kernel refuses a remount that would drop a
      // flag the source mount has (nosuid, nodev, noexec, ...): keep them.
      const flags = MS_REMOUNT | MS_BIND | MS_RDONLY | (io.lockedFlags(op.target) & LOCKED_FLAGS);
      mount(none, op.target, none, flags, none);
      return { op: `can't re-mount image read-only`, path: op.target };
    }
    default:
      return op satisfies never;
  }
}

/**
 * A child's first calls: default signals, none blocked, die with den
 * (unless `outliveDen`: squashfuse serves a container that may outlive den).
 */
export function addSignalSetup(chain: ChainSink, o: { outliveDen?: boolean } = {}): void {
  // Deno ignores SIGPIPE and handles others; the command wants defaults.
  for (const sig of ["SIGPIPE", ...FORWARDED_SIGNALS]) {
    chain.call("signal", SIGNALS[sig]!, SIG_DFL);
  }
  chain.call("sigprocmask", SIG_SETMASK, chain.buffer(128).address, 0n);
  // If den dies, so does the container (PDEATHSIG follows the thread that
  // called clone, Deno's main thread, which lives as long as den).
  if (!o.outliveDen) chain.call("prctl", PR_SET_PDEATHSIG, SIGNALS.SIGKILL!, 0, 0, 0);
}

/** The child's first calls (addSignalSetup()), then it waits for den. */
export function addPrologue(
  chain: ChainSink,
  io: Pick<ChainInputs, "syncRead" | "syncWrite">,
): void {
  addSignalSetup(chain);
  // Had den died before prctl(), nothing would kill the child: with den's
  // copy of the write end the only one left, the reads below see EOF, the
  // gate stays shut and the child exits at the failed execvp().
  chain.call("close", io.syncWrite);
  chain.call("read", io.syncRead, chain.buffer(8).address, 1);
}

/** The child's last calls: cwd, no_new_privs, environ, gate, execvp. */
function addEpilogue(chain: ChainSink, plan: Plan, io: ChainInputs, step: (s: Step) => void) {
  chain.reported("chdir", chain.str(plan.cwd));
  step({ op: `can't cd to ${plan.cwd}`, optional: plan.cwdOptional });
  // A missing WorkingDir of the image is only a warning: what follows must
  // not report its errno.
  if (plan.cwdOptional) chain.clearErrno();
  chain.reported("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  step({ op: "can't set no_new_privs" });
  // execvp() searches the PATH of `environ`, so the child points environ
  // at the container's environment first.
  chain.call("memcpy", io.environ, chain.words([chain.strv(plan.env)]), 8);
  // The gate: the first byte of the command is what den writes once all
  // steps succeeded; if den died, the path stays empty and exec fails.
  const file = cString(plan.argv[0]!);
  const gateByte = file[0]!;
  file[0] = 0;
  const fileBuf = chain.buffer(file.length);
  fileBuf.bytes.set(file);
  chain.call("read", io.syncRead, fileBuf.address, 1);
  chain.call("execvp", fileBuf.address, chain.strv(plan.argv));
  chain.reportErrno();
  chain.call("_exit", EXIT_CMD);
  return gateByte;
}

/**
 * Every call the child makes, in order: reset signals, wait for the id
 * maps, mount, pivot_root, chdir, no_new_privs, wait at the gate, execvp.
 * Returns the reported steps (one errno each, in order) and the gate byte.
 */
export function addChildCalls(
  chain: ChainSink,
  plan: Plan,
  io: ChainInputs,
  enter?: Namespaces,
): { steps: Step[]; gateByte: number; files?: GeneratedFiles } {
  const none = 0n;
  const steps: Step[] = [];
  const step = (s: Step) => steps.push(s);
  addPrologue(chain, io);
  if (enter) {
    // Namespaces made beforehand, / already private in them (ffi/squash.ts).
    addSetns(chain, enter, step);
  } else {
    chain.reported("mount", none, chain.str("/"), none, MS_REC | MS_PRIVATE, none);
    step({ op: "can't make / private" });
  }
  const rootfs = chain.str(plan.rootfs);
  chain.reported("mount", rootfs, rootfs, none, MS_BIND | MS_REC, none);
  step({ op: `can't bind ${plan.rootfs} to itself` });
  const files = io.filesDir ? addFilesDir(chain, io, io.filesDir, steps) : undefined;
  for (const op of plan.ops) {
    if (op.kind === "bind-file" && files) step(addGeneratedFile(chain, op, files));
    else step(addOp(chain, op, io));
  }
  chain.reported("chdir", rootfs);
  step({ op: "can't chdir", path: plan.rootfs });
  const dot = chain.str(".");
  chain.reported("syscall", io.pivotRootNr, dot, dot);
  step({ op: "can't pivot_root(2)", path: plan.rootfs });
  chain.reported("umount2", dot, MNT_DETACH);
  step({ op: "can't detach the old root" });
  chain.reported("chdir", chain.str("/"));
  step({ op: "can't chdir", path: "/" });
  return { steps, gateByte: addEpilogue(chain, plan, io, step), files };
}

/**
 * Host directories that can hold the child's tmpfs for generated files:
 * the mount hides one only in the child's new mount namespace, and only
 * until pivot_root detaches the old root.
 */
export const FILES_DIR_CANDIDATES = ["/mnt", "/media", "/srv", "/opt", "/boot"];

/** The first candidate free of the image and the bind sources, as given
 * and as real paths (firstFreeDir); undefined when none is. */
export function generatedFilesDir(
  plan: Pick<Plan, "rootfs" | "ops">,
  host: { isDir(path: string): boolean; real(path: string): string },
): string | undefined {
  const used = [plan.rootfs, ...plan.ops.flatMap((op) => op.kind === "bind" ? [op.source] : [])]
    .flatMap((p) => [p, host.real(p)]);
  return firstFreeDir(FILES_DIR_CANDIDATES, used, (d) => host.isDir(d));
}

/** Write generated files into the child's tmpfs, through /proc/PID/root. */
export function writeGeneratedFiles(pid: number, files: GeneratedFiles): void {
  for (const { name, content } of files.entries) {
    writeNewFile(`/proc/${pid}/root${files.dir}/${name}`, content);
  }
}

/** Create path (O_EXCL, 0600, never through a symlink) with content. */
function writeNewFile(path: string, content: string): void {
  const flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
  writeWhole(path, flags, content, "can't write temporary file");
}

/** The generated files of a chain: den writes them after step `after`. */
export interface GeneratedFiles {
  dir: string;
  /** Reported steps before the child waits for the files. */
  after: number;
  entries: { name: string; content: string }[];
}

/** A private tmpfs on dir for generated files; the child then waits. */
function addFilesDir(
  chain: ChainSink,
  io: ChainInputs,
  dir: string,
  steps: Step[],
): GeneratedFiles {
  chain.reported(
    "mount",
    chain.str("tmpfs"),
    chain.str(dir),
    chain.str("tmpfs"),
    MS_NOSUID | MS_NODEV | MS_NOEXEC,
    chain.str("size=1m,mode=0700"),
  );
  steps.push({ op: `can't mount tmpfs at ${dir}` });
  // den writes the files, then sends a byte.
  chain.call("read", io.syncRead, chain.buffer(8).address, 1);
  return { dir, after: steps.length, entries: [] };
}

/** Bind a generated file from the private tmpfs, then unlink it there. */
function addGeneratedFile(
  chain: ChainSink,
  op: MountOp & { kind: "bind-file" },
  files: GeneratedFiles,
): Step {
  const name = `${files.entries.length}-${op.target.slice(op.target.lastIndexOf("/") + 1)}`;
  files.entries.push({ name, content: op.content });
  const source = chain.str(`${files.dir}/${name}`);
  chain.reported("mount", source, chain.str(op.target), 0n, MS_BIND, 0n);
  // As ch-run's: the bound file has no name left anywhere (nlink 0).
  chain.call("unlink", source);
  chain.clearErrno();
  return { op: `can't bind a generated file to ${op.target}` };
}

/**
 * The calls of a child that joins an existing container (--join peers,
 * --join-pid): setns() into its user, then mount namespace (which also
 * moves the child's root and cwd to the container's), then as above.
 */
export function addJoinCalls(
  chain: ChainSink,
  plan: Plan,
  io: ChainInputs,
  ns: Namespaces,
): { steps: Step[]; gateByte: number; files?: GeneratedFiles } {
  const steps: Step[] = [];
  const step = (s: Step) => steps.push(s);
  addPrologue(chain, io);
  addSetns(chain, ns, step);
  return { steps, gateByte: addEpilogue(chain, plan, io, step) };
}

/** setns() into a user, then its mount namespace (root and cwd move too). */
function addSetns(chain: ChainSink, ns: Namespaces, step: (s: Step) => void): void {
  chain.reported("setns", ns.user, CLONE_NEWUSER);
  step({ op: `join: can't join user namespace of pid ${ns.ownerPid}` });
  chain.reported("setns", ns.mnt, CLONE_NEWNS);
  step({ op: `join: can't join mount namespace of pid ${ns.ownerPid}` });
}
