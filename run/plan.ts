// planContainer(): what `den run` will do, as plain data. Nothing here
// mounts or writes; ffi/spawn.ts carries a Plan out. --dry-run prints it.

import { DenError, EXIT_USAGE } from "../error.ts";
import { applyEnvOps, type Env, type EnvOp } from "./env.ts";

/** A `-b SRC[:DST]` request. */
export interface Bind {
  source: string;
  target?: string;
}

/** Image configuration that `den run` uses (from the image's metadata). */
export interface ImageConfig {
  env?: string[]; // "NAME=VALUE", in order
  entrypoint?: string[] | null;
  cmd?: string[] | null;
  cwd?: string;
}

/** What the user asked for: `den run` options, parsed. */
export interface RunOptions {
  image: string;
  command: string[];
  binds: Bind[];
  cd?: string;
  write: boolean;
  /** -W: size of the tmpfs under a throwaway overlay (tmpfs size= syntax). */
  writeFake?: string;
  envOps: EnvOp[];
  envNoExpand: boolean;
  imageEnv: boolean;
  uid?: number;
  gid?: number;
  home: boolean;
  noPasswd: boolean;
  privateTmp: boolean;
}

/** The file system as the planner sees it (tests pass a fake). */
export interface HostView {
  /** Type of path without following a final symlink; undefined if absent. */
  lkind(path: string): "dir" | "file" | "symlink" | "other" | undefined;
  readlink(path: string): string;
}

/** Facts about the host that shape the plan. */
export interface HostFacts {
  env: [string, string][];
  uid: number;
  gid: number;
  /** Host $USER (or the name of the uid). */
  user: string;
  /** Name and GECOS of a uid, and name of a gid, from the host's database. */
  passwdEntry(uid: number): { name: string; gecos: string } | undefined;
  groupName(gid: number): string | undefined;
  fs: HostView;
}

export type MountOp =
  /** MS_BIND (recursive for /dev, /proc, /sys and user binds). */
  | { kind: "bind"; source: string; target: string; recursive: boolean }
  /** Bind a file whose content den makes (/etc/passwd, /etc/group). */
  | { kind: "bind-file"; content: string; target: string }
  /** A tmpfs; `options` is mount(2)'s data (default "mode=1777"). */
  | { kind: "tmpfs"; target: string; options?: string }
  /** mkdir inside a tmpfs or overlay den mounted (--home, -W). */
  | { kind: "mkdir"; target: string }
  /** An empty file as a mount point, made in the overlay (-W). */
  | { kind: "mkfile"; target: string }
  /** overlayfs over the image (-W): upper and work dirs on a tmpfs. */
  | { kind: "overlay"; lower: string; upper: string; work: string; target: string }
  /** Remount the image read-only, keeping its locked flags. */
  | { kind: "remount-ro"; target: string };

export interface Plan {
  /** Host path of the image directory. */
  rootfs: string;
  /** Host paths to create before starting (mount points, with -w only). */
  create: { path: string; kind: "dir" | "file" }[];
  /** In order; targets are host paths inside rootfs. Then pivot_root. */
  ops: MountOp[];
  uidMap: { inside: number; outside: number };
  gidMap: { inside: number; outside: number };
  /** Working directory inside the container, after pivot_root. */
  cwd: string;
  /** A failed chdir to cwd is only a warning (it came from the image). */
  cwdOptional: boolean;
  argv: string[];
  env: string[];
  /** Host directory for den's short-lived files (host $TMPDIR or /tmp). */
  tmpdir: string;
  warnings: string[];
  /** What -v says about the plan, in ch-run's words. */
  notes: string[];
}

export const CH_RUNNING = "Weird Al Yankovic";

/**
 * ch-run's default binds, in mount order. Optional ones are bound only when
 * the host and the image both have them (another kind of file in the image
 * makes the bind fail, as with ch-run): the network and machine identity
 * files, and what Cray systems need for their interconnect, workload
 * manager and huge pages.
 */
export const DEFAULT_BINDS: { path: string; recursive: boolean; optional: boolean }[] = [
  { path: "/dev", recursive: true, optional: false },
  { path: "/proc", recursive: true, optional: false },
  { path: "/sys", recursive: true, optional: false },
  ...[
    "/etc/hosts",
    "/etc/machine-id",
    "/etc/resolv.conf",
    "/var/lib/hugetlbfs",
    "/var/opt/cray/alps/spool",
    "/var/opt/cray/hugetlbfs",
    "/etc/opt/cray/wlm_detect",
    "/opt/cray/wlm_detect",
    "/opt/cray/alps",
    "/opt/cray/udreg",
    "/opt/cray/ugni",
    "/opt/cray/xpmem",
    "/var/run/munge",
  ].map((path) => ({ path, recursive: true, optional: true })),
];

/** Default size of -W's tmpfs, as ch-run's: a share of physical memory. */
export const WRITE_FAKE_SIZE = "12%";

/** A tmpfs size= value: bytes with an optional k/m/g/t/p/e suffix, or N%. */
export function isTmpfsSize(size: string): boolean {
  return /^[1-9]\d{0,17}[kmgtpe]?$/i.test(size) || /^([1-9]\d?|100)%$/.test(size);
}

/**
 * The first of candidates that is a directory and neither holds nor lies in
 * any of used: a mount there, in the container's namespace, hides nothing
 * a later step reads. Undefined when none is free.
 */
export function firstFreeDir(
  candidates: readonly string[],
  used: readonly string[],
  isDir: (path: string) => boolean,
): string | undefined {
  const within = (x: string, y: string) => x === y || y === "/" || x.startsWith(`${y}/`);
  return candidates.find((dir) =>
    isDir(dir) && !used.some((p) => within(p, dir) || within(dir, p))
  );
}

/** Join a container path (absolute or not) under rootfs. */
function under(rootfs: string, containerPath: string): string {
  const parts = containerPath.split("/").filter((p) => p !== "" && p !== ".");
  return parts.length ? `${rootfs}/${parts.join("/")}` : rootfs;
}

/**
 * Resolve a container path to a host path inside rootfs, following the
 * image's symlinks as the container would see them (absolute targets start
 * again at the image root; ".." stops at it). Missing components are kept.
 */
export function resolveInRoot(
  rootfs: string,
  containerPath: string,
  fs: HostView,
): string {
  const todo = containerPath.split("/").filter((p) => p !== "" && p !== ".");
  const done: string[] = [];
  let links = 0;
  while (todo.length) {
    const part = todo.shift()!;
    if (part === "..") {
      done.pop();
      continue;
    }
    const host = under(rootfs, [...done, part].join("/"));
    if (fs.lkind(host) === "symlink") {
      if (++links > 40) {
        throw new DenError(
          "can't resolve",
          "Too many levels of symbolic links",
          {
            path: containerPath,
            code: "ELOOP",
          },
        );
      }
      const target = fs.readlink(host);
      if (target.startsWith("/")) done.length = 0;
      todo.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
      continue;
    }
    done.push(part);
  }
  return under(rootfs, done.join("/"));
}

function kindOf(
  fs: HostView,
  hostPath: string,
): "dir" | "file" | "other" | undefined {
  let p = hostPath;
  for (let i = 0; i < 40; i++) {
    const k = fs.lkind(p);
    if (k !== "symlink") return k;
    const t = fs.readlink(p);
    p = t.startsWith("/") ? t : `${p.slice(0, p.lastIndexOf("/"))}/${t}`;
  }
  return "other";
}

/**
 * The container's /etc/passwd, as ch-run 0.31 writes it: root and nobody
 * (unless the container user is one of them), then the container user, named
 * from the host's database ("charlie" when the host does not know the uid).
 */
export function passwdFile(uid: number, gid: number, facts: HostFacts): string {
  const pw = facts.passwdEntry(uid);
  return (uid === 0 ? "" : "root:x:0:0:root:/root:/bin/sh\n") +
    (uid === 65534 ? "" : "nobody:x:65534:65534:nobody:/:/bin/false\n") +
    `${pw?.name ?? "charlie"}:x:${uid}:${gid}:${pw ? pw.gecos : "Charlie"}:/:/bin/sh\n`;
}

/** The container's /etc/group, as ch-run 0.31 writes it (same rule). */
export function groupFile(gid: number, facts: HostFacts): string {
  return (gid === 0 ? "" : "root:x:0:\n") + (gid === 65534 ? "" : "nogroup:x:65534:\n") +
    `${facts.groupName(gid) ?? "charliegroup"}:x:${gid}:\n`;
}

/** Host environment adjusted as ch-run does, then image, user, CH_RUNNING. */
function planEnv(
  opts: RunOptions,
  facts: HostFacts,
  image: ImageConfig | undefined,
  warnings: string[],
  notes: string[],
): string[] {
  const env: Env = new Map(facts.env);
  const path = env.get("PATH");
  if (path === undefined) warnings.push("$PATH not set");
  else if (!path.split(":").some((p) => p === "/bin" || p === "/bin/")) {
    env.set("PATH", `${path}:/bin`);
  }
  // The host's $TMPDIR is what appears at /tmp, so the variable would lie.
  env.delete("TMPDIR");
  if (opts.imageEnv) {
    for (const line of image?.env ?? []) {
      const eq = line.indexOf("=");
      if (eq > 0) {
        env.delete(line.slice(0, eq));
        env.set(line.slice(0, eq), line.slice(eq + 1));
      }
    }
  }
  // --home is asked for on this command line: it wins over the image's ENV.
  if (opts.home) env.set("HOME", `/home/${facts.user}`);
  applyEnvOps(env, opts.envOps, !opts.envNoExpand, (n) => notes.push(n));
  env.delete("CH_RUNNING");
  env.set("CH_RUNNING", CH_RUNNING);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/** Lexical normalisation of a host path (for messages). */
function normalizeHost(path: string): string {
  const out: string[] = [];
  for (const p of path.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") out.pop();
    else out.push(p);
  }
  return `/${out.join("/")}`;
}

/**
 * The container's tree as den's mounts will have made it: a container path
 * is looked up in the host directory mounted over it (the host's $TMPDIR at
 * /tmp, /dev, /proc, /sys, earlier -b binds), or in the image. Symlinks are
 * followed as the container would see them (absolute targets start again
 * at its root), so no mount lands outside the new root through a link.
 */
class ContainerView {
  readonly #mounts: { at: string; host?: string }[] = [];
  constructor(readonly rootfs: string, readonly fs: HostView) {}

  /** A mount at container path `at` of host directory `host` (none: tmpfs). */
  mounted(at: string, host?: string): void {
    this.#mounts.push({ at, host });
  }

  /** The newest mount that covers a container path. */
  mountAt(path: string): { at: string; host?: string } | undefined {
    for (let i = this.#mounts.length - 1; i >= 0; i--) {
      const m = this.#mounts[i]!;
      if (path === m.at || path.startsWith(m.at === "/" ? "/" : `${m.at}/`)) return m;
    }
    return undefined;
  }

  /** Where a container path is on the host now (undefined: on a tmpfs). */
  hostPath(path: string): string | undefined {
    const m = this.mountAt(path);
    if (!m) return under(this.rootfs, path);
    return m.host === undefined ? undefined : m.host + path.slice(m.at.length);
  }

  kind(path: string): "dir" | "file" | "symlink" | "other" | undefined {
    const host = this.hostPath(path);
    if (host !== undefined) return this.fs.lkind(host);
    return path === this.mountAt(path)?.at ? "dir" : undefined;
  }

  /**
   * Resolve a -b destination with ch-run's rules, in the tree as mounted by
   * then. Relative symlinks are followed; one that climbs out of the image,
   * or an absolute one, is refused (ch-run resolves them on the host, where
   * they point outside the image); a broken one is refused. Returns the
   * container path and whether it exists; when it does not, `missing` is
   * the first component that is missing.
   */
  resolveDestination(dst: string): { path: string; exists: boolean; missing?: string } {
    const root = this.rootfs;
    const notSub = (host: string) =>
      new DenError("can't bind", `${host} not subdirectory of ${root}`);
    const todo = dst.split("/").filter((p) => p !== "" && p !== ".");
    const done: string[] = [];
    let links = 0;
    while (todo.length) {
      const part = todo.shift()!;
      if (part === "..") {
        if (done.length === 0) {
          // Above the image root: ch-run names the host directory.
          const up = root.slice(0, root.lastIndexOf("/")) || "/";
          const rest = todo.filter((p) => p !== "..");
          if (rest.length === 0) throw notSub(up);
          const first = up === "/" ? `/${rest[0]}` : `${up}/${rest[0]}`;
          throw new DenError("can't mkdir", `${first} not subdirectory of ${root}`);
        }
        done.pop();
        continue;
      }
      const path = `/${[...done, part].join("/")}`;
      const kind = this.kind(path);
      if (kind === undefined) {
        return { path: `/${[...done, part, ...todo].join("/")}`, exists: false, missing: path };
      }
      if (kind !== "symlink") {
        done.push(part);
        continue;
      }
      if (++links > 40) {
        throw new DenError("can't resolve", "Too many levels of symbolic links", {
          path: dst,
          code: "ELOOP",
        });
      }
      const hostLink = this.hostPath(path)!;
      const target = this.fs.readlink(hostLink);
      if (target.startsWith("/")) {
        if (this.fs.lkind(target) === undefined) {
          throw new DenError("can't mkdir", `symlink not relative: ${under(root, path)}`);
        }
        throw notSub(target);
      }
      // Relative: the target must exist inside the image.
      const parts = target.split("/").filter((p) => p !== "" && p !== ".");
      const base = [...done];
      for (const p of parts) {
        if (p === "..") {
          if (base.length === 0) throw notSub(normalizeHost(`${hostLink}/../${target}`));
          base.pop();
        } else base.push(p);
      }
      if (this.kind(`/${base.join("/")}`) === undefined) {
        throw new DenError("can't mkdir", `broken symlink: ${under(root, path)}`);
      }
      todo.unshift(...parts);
    }
    return { path: `/${done.join("/")}`, exists: true };
  }
}

/**
 * Decide everything `den run` will do. Throws DenError naming the user's
 * own paths when the image or a bind cannot work.
 */
export function planContainer(
  opts: RunOptions,
  facts: HostFacts,
  rootfs: string,
  image?: ImageConfig,
): Plan {
  const fs = facts.fs;
  const view = new ContainerView(rootfs, fs);
  /** The container path of a host path under rootfs. */
  const inside = (target: string) => target.slice(rootfs.length) || "/";
  const warnings: string[] = [];
  const notes: string[] = [];
  const create: Plan["create"] = [];
  const ops: MountOp[] = [];

  let argv = opts.command;
  if (argv.length === 0) {
    argv = [...(image?.entrypoint ?? []), ...(image?.cmd ?? [])];
  }
  if (argv.length === 0) {
    throw new DenError("", "IMAGE and/or CMD not specified");
  }

  const fake = opts.writeFake !== undefined;
  if (fake && opts.write) {
    throw new DenError("", "--write and --write-fake are mutually exclusive", {
      exitCode: EXIT_USAGE,
    });
  }
  /** -W: make a missing mount point in the overlay, parents first. */
  const makeInOverlay = (target: string, kind: "dir" | "file") => {
    const missing: string[] = [];
    for (let p = target; p.length > rootfs.length && fs.lkind(p) === undefined;) {
      missing.unshift(p);
      p = p.slice(0, p.lastIndexOf("/"));
    }
    missing.forEach((p, i) =>
      ops.push({
        kind: i === missing.length - 1 && kind === "file" ? "mkfile" : "mkdir",
        target: p,
      })
    );
  };
  if (fake) {
    // The tmpfs goes on the image's /dev (a mount point anyway): an
    // existing directory that no host path a later bind names can be
    // under. The overlay then covers the image, tmpfs included; the
    // overlay's layers never see mounts, and pivot_root's detach of the
    // old root takes the hidden tmpfs mount away.
    const scratch = resolveInRoot(rootfs, "/dev", fs);
    if (kindOf(fs, scratch) !== "dir") {
      throw new DenError("--write-fake", `the image has no directory /dev: ${scratch}`);
    }
    ops.push({ kind: "tmpfs", target: scratch, options: `size=${opts.writeFake},mode=0755` });
    ops.push({ kind: "mkdir", target: `${scratch}/upper` });
    ops.push({ kind: "mkdir", target: `${scratch}/work` });
    ops.push({
      kind: "overlay",
      lower: rootfs,
      upper: `${scratch}/upper`,
      work: `${scratch}/work`,
      target: rootfs,
    });
  }

  // A mount point must exist in the image; with -w den creates it.
  const mountPoint = (
    containerPath: string,
    kind: "dir" | "file",
    tmpfs = false,
  ): string | undefined => {
    const target = resolveInRoot(rootfs, containerPath, fs);
    const have = kindOf(fs, target);
    if (have !== undefined) return target;
    if (fake) {
      makeInOverlay(target, kind);
      return target;
    }
    if (!opts.write) {
      const hint = `the image has no ${containerPath}; -w would create it`;
      if (tmpfs) {
        throw new DenError(`can't mount tmpfs at ${target}`, "No such file or directory", {
          code: "ENOENT",
          hint,
        });
      }
      throw new DenError("can't bind", `destination not found: ${target}`, { hint });
    }
    create.push({ path: target, kind });
    return target;
  };

  for (const d of DEFAULT_BINDS) {
    if (d.optional) {
      // Most hosts lack most of these: look in the image only when needed.
      const host = kindOf(fs, d.path);
      if (host === undefined || host === "other") continue;
      const target = resolveInRoot(rootfs, d.path, fs);
      // As ch-run: bound when the image has it; if it is another kind of
      // file there (a directory for /etc/hosts), the bind fails and says so.
      if (kindOf(fs, target) === undefined) continue;
      ops.push({ kind: "bind", source: d.path, target, recursive: host === "dir" });
      if (host === "dir") view.mounted(inside(target), d.path);
    } else {
      const target = mountPoint(d.path, "dir")!;
      ops.push({ kind: "bind", source: d.path, target, recursive: d.recursive });
      view.mounted(inside(target), d.path);
    }
  }

  const uid = opts.uid ?? facts.uid;
  const gid = opts.gid ?? facts.gid;
  if (!opts.noPasswd) {
    if (!facts.passwdEntry(uid)) notes.push(`UID ${uid} not found; using dummy info`);
    if (facts.groupName(gid) === undefined) notes.push(`GID ${gid} not found; using dummy info`);
    ops.push({
      kind: "bind-file",
      content: passwdFile(uid, gid, facts),
      target: mountPoint("/etc/passwd", "file")!,
    });
    ops.push({
      kind: "bind-file",
      content: groupFile(gid, facts),
      target: mountPoint("/etc/group", "file")!,
    });
  }

  const tmp = mountPoint("/tmp", "dir", opts.privateTmp)!;
  const hostTmp = facts.env.find(([k]) => k === "TMPDIR")?.[1] || "/tmp";
  if (opts.privateTmp) {
    ops.push({ kind: "tmpfs", target: tmp });
    view.mounted(inside(tmp));
  } else {
    if (kindOf(fs, hostTmp) !== "dir") {
      throw new DenError("can't bind", `source not found: ${hostTmp}`, {
        hint: "$TMPDIR names no directory",
      });
    }
    // Recursive: in a user namespace a plain bind of a directory with
    // mounts below it (locked ones) fails with EINVAL.
    ops.push({ kind: "bind", source: hostTmp, target: tmp, recursive: true });
    view.mounted(inside(tmp), hostTmp);
  }

  if (opts.home) {
    const home = facts.env.find(([k]) => k === "HOME")?.[1];
    if (!home) {
      throw new DenError("", "--home failed: $HOME not set");
    }
    if (!facts.env.some(([k, v]) => k === "USER" && v !== "")) {
      throw new DenError("", "--home failed: $USER not set");
    }
    // Both become paths: a "/" or ".." would leave the tmpfs at /home.
    const user = facts.user;
    if (!user || user === "." || user === ".." || /[/\0]/.test(user)) {
      throw new DenError("--home", `$USER is not a user name: ${JSON.stringify(user)}`);
    }
    if (!home.startsWith("/") || home.split("/").includes("..")) {
      throw new DenError(
        "--home",
        `$HOME is not an absolute path without "..": ${JSON.stringify(home)}`,
      );
    }
    if (kindOf(fs, home) !== "dir") {
      throw new DenError("can't bind", `source not found: ${home}`);
    }
    const homeDir = mountPoint("/home", "dir", true)!;
    ops.push({ kind: "tmpfs", target: homeDir });
    ops.push({ kind: "mkdir", target: `${homeDir}/${facts.user}` });
    ops.push({
      kind: "bind",
      source: home,
      target: `${homeDir}/${facts.user}`,
      recursive: true,
    });
    view.mounted(inside(homeDir));
    view.mounted(`${inside(homeDir)}/${facts.user}`, home);
  }

  for (const b of opts.binds) {
    const sourceKind = kindOf(fs, b.source);
    if (sourceKind === undefined) {
      throw new DenError("can't bind", `source not found: ${b.source}`);
    }
    const containerPath = b.target ?? b.source;
    if (!containerPath.startsWith("/")) {
      throw new DenError("", "--bind: destination must be absolute");
    }
    const dest = view.resolveDestination(containerPath);
    const resolved = dest.path;
    if (resolved === "/") throw new DenError("", "--bind: destination can't be /");
    const target = under(rootfs, resolved);
    if (!dest.exists) {
      const missing = under(rootfs, dest.missing!);
      const over = view.mountAt(dest.missing!);
      if (over) {
        // ch-run's rule: mount points are made in the image, never in a
        // tree mounted from the host (or a tmpfs) over part of it.
        throw new DenError(
          "can't mkdir",
          `${missing} under existing bind-mount ${
            under(rootfs, over.at)
          } (mount points are made in the image only)`,
        );
      }
      if (fake) makeInOverlay(target, sourceKind === "dir" ? "dir" : "file");
      else if (!opts.write) {
        // ch-run tries mkdir(2) in the read-only image; den says why first.
        throw new DenError("can't mkdir", `${missing}: Read-only file system`, {
          hint: `the image has no ${dest.missing}; -w would create it`,
        });
      } else create.push({ path: target, kind: sourceKind === "dir" ? "dir" : "file" });
    }
    ops.push({ kind: "bind", source: b.source, target, recursive: true });
    view.mounted(resolved, b.source);
  }

  if (!opts.write && !fake) ops.push({ kind: "remount-ro", target: rootfs });

  const cwd = opts.cd ?? image?.cwd ?? "/";
  return {
    rootfs,
    create,
    ops,
    uidMap: { inside: uid, outside: facts.uid },
    gidMap: { inside: gid, outside: facts.gid },
    cwd,
    cwdOptional: opts.cd === undefined,
    argv,
    env: planEnv(opts, facts, image, warnings, notes),
    tmpdir: hostTmp,
    warnings,
    notes,
  };
}
