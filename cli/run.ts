// `den run`: parseRunArgs() (pure) and runCommand().

import { countFlag, lastValue, type OptionSpec, parseArgv } from "./args.ts";
import { DenError, EXIT_USAGE, osMessage, usageError } from "../error.ts";
import type { EnvOp } from "../run/env.ts";
import {
  DEFAULT_BINDS,
  type HostFacts,
  type HostView,
  type ImageConfig,
  isTmpfsSize,
  type Plan,
  planContainer,
  resolveInRoot,
  type RunOptions,
  WRITE_FAKE_SIZE,
} from "../run/plan.ts";
import { out, output, verbose, warn } from "./output.ts";
import {
  decideJoin,
  type JoinDecision,
  type JoinGroup,
  type JoinOptions,
  parseCount,
} from "../run/join.ts";
import { VERSION } from "./version.ts";
import { lazy } from "./lazy.ts";
import { resolveImage } from "../image/store.ts";
import { readImageMetadata } from "../image/metadata.ts";
import { readFileInImage } from "../image/read_in_image.ts";
import { fileKind } from "../ffi/libc.ts";
import type { SquashMount } from "../ffi/squash.ts";
import type { Arrival, ArriveOptions, GroupServer, Namespaces } from "../ffi/rendezvous.ts";
import { type RunHooks, runPlan } from "../run/run_plan.ts";
import { hostUsers } from "../ffi/users.ts";

export const RUN_USAGE = `Usage: den run [OPTION...] IMAGE -- CMD [ARG...]

Run a command in an unpacked image directory, a SquashFS file (IMG.sqfs,
through squashfuse) or a named image in storage, as ch-run does:
unprivileged user and mount namespaces, no setuid, no daemon.

  -b, --bind=SRC[:DST]   mount SRC at guest DST (default: same as SRC)
  -c, --cd=DIR           initial working directory in container
      --env-no-expand    don't expand $ in --set-env input
      --feature=FEAT     exit successfully if FEAT is enabled ("list" lists)
  -g, --gid=GID          run as GID within container
      --home             mount host $HOME at guest /home/$USER
  -m, --mount=DIR        SquashFS image: mount it on host directory DIR, in
                         the container's mount namespace only (default: the
                         first free of /mnt /media /srv /opt /var/tmp /boot)
      --no-home          don't bind $HOME (the default; as ch-run 0.31)
      --no-image-env     don't apply the image's ENV (from den unpack)
      --no-passwd        don't bind-mount /etc/{passwd,group}
      --set-env[=ARG]    set environment variables per ARG (NAME=VALUE or a
                         file of such lines; no ARG: the image's
                         /ch/environment)
  -s, --storage=DIR      storage directory for named images
  -t, --private-tmp      use container-private /tmp
      --unset-env=GLOB   unset environment variable(s)
  -u, --uid=UID          run as UID within container
  -v, --verbose          be more verbose (can be repeated)
  -w, --write            mount image read-write (and create missing mount
                         points)
  -W, --write-fake[=SIZE]
                         overlay a writeable tmpfs of SIZE (4g, 512m, 50%;
                         default 12% of memory) on the image: the container
                         can write anywhere, writes vanish at exit, the image
                         stays unchanged
      --dry-run          print the plan as JSON and exit
  -j, --join             share the container with peers on this node (same
                         user and mount namespace; peers as ch-run counts)
      --join-ct=N        number of peers in the group (implies --join)
      --join-pid=PID     join the container of process PID (a den or a
                         process inside the container)
      --join-tag=TAG     label of the peer group (implies --join)
      --no-join          don't join peers automatically under a launcher
  -h, --help             give this help list
      --usage            give a short usage message
  -V, --version          print version and exit

Under mpirun, srun or another PMI launcher, ranks on one node share one
container unless --no-join (MPI shared memory between them works fully).

Exit status: the command's; 128+N if it died of signal N; 31 if den failed;
49 if the command could not be started; 64 for usage errors.

Example:

  $ den run /data/foo -- echo hello
  hello
`;

/** Features --feature knows; true when this build has them. */
export const FEATURES: Record<string, boolean> = {
  extglob: true,
  seccomp: false,
  squash: true,
  overlayfs: true,
  "image-env": true,
};

export type RunRequest =
  | { kind: "help" }
  | { kind: "usage" }
  | { kind: "version" }
  | { kind: "feature"; name: string }
  | { kind: "run"; options: RunOptions; cli: RunCliOptions; join: JoinOptions };

/** What `den run`'s command line asks of den itself, not of the container. */
export interface RunCliOptions {
  verbose: number;
  storage?: string;
  dryRun: boolean;
  /** -m: where a SquashFS image is mounted (in the container's namespace). */
  mount?: string;
}

/** --uid/--gid as ch-run parses them: an int, with its words when not. */
function parseId(name: string, text: string): number {
  const n = parseCount(text, `--${name}`, false);
  if (n < 0) throw new DenError("", `--${name}: must be non-negative`);
  return n;
}

const RUN_OPTIONS: Record<string, OptionSpec> = {
  bind: { short: "b", takes: "value" },
  cd: { short: "c", takes: "value" },
  "env-no-expand": { takes: "flag" },
  feature: { takes: "value" },
  gid: { short: "g", takes: "value" },
  home: { takes: "flag" },
  "no-image-env": { takes: "flag" },
  // ch-run 0.31's default, accepted so its command lines work unchanged.
  "no-home": { takes: "flag" },
  mount: { short: "m", takes: "value" },
  "no-passwd": { takes: "flag" },
  "set-env": { takes: "optional" },
  storage: { short: "s", takes: "value" },
  "private-tmp": { short: "t", takes: "flag" },
  "unset-env": { takes: "value" },
  uid: { short: "u", takes: "value" },
  verbose: { short: "v", takes: "flag" },
  write: { short: "w", takes: "flag" },
  "write-fake": { short: "W", takes: "optional" },
  "dry-run": { takes: "flag" },
  join: { short: "j", takes: "flag" },
  "join-ct": { takes: "value" },
  "join-pid": { takes: "value" },
  "join-tag": { takes: "value" },
  "no-join": { takes: "flag" },
  help: { short: "h", takes: "flag" },
  "?": { short: "?", takes: "flag" },
  usage: { takes: "flag" },
  version: { short: "V", takes: "flag" },
};

/**
 * `den run --usage`: every option in one short list, as argp (ch-run's
 * parser) prints it, with the argument names of the help text.
 */
export function runShortUsage(): string {
  const argOf = new Map<string, string>();
  for (const m of RUN_USAGE.matchAll(/--([a-z-]+)(?:=(\S+)|\[=([^\]]+)\])/g)) {
    argOf.set(m[1]!, m[2] ?? m[3]!);
  }
  const specs = Object.entries(RUN_OPTIONS);
  const flags = specs.filter(([, o]) => o.short && o.takes === "flag").map(([, o]) => o.short);
  const items = [`[-${flags.join("")}]`];
  for (const [name, o] of specs) {
    if (!o.short || o.takes === "flag") continue;
    const arg = argOf.get(name) ?? "ARG";
    items.push(o.takes === "value" ? `[-${o.short} ${arg}]` : `[-${o.short}[${arg}]]`);
  }
  for (const [name, o] of specs) {
    if (name === "?") continue;
    const arg = argOf.get(name) ?? "ARG";
    items.push(
      o.takes === "flag"
        ? `[--${name}]`
        : o.takes === "value"
        ? `[--${name}=${arg}]`
        : `[--${name}[=${arg}]]`,
    );
  }
  items.push("IMAGE -- CMD [ARG...]");
  const lines = ["Usage: den run"];
  for (const item of items) {
    if (lines.at(-1)!.length + 1 + item.length > 79) lines.push(`${" ".repeat(12)}${item}`);
    else lines[lines.length - 1] += ` ${item}`;
  }
  return lines.join("\n");
}

/** Parse the arguments of `den run` (everything after "run"). Pure. */
export function parseRunArgs(args: string[]): RunRequest {
  const parsed = parseArgv(args, RUN_OPTIONS, "den run --help");
  const has = (name: string) => countFlag(parsed, name) > 0;
  if (has("help") || has("?")) return { kind: "help" };
  if (has("usage")) return { kind: "usage" };
  if (has("version")) return { kind: "version" };
  const feature = lastValue(parsed, "feature");
  if (feature !== undefined) return { kind: "feature", name: feature };

  const [image, ...command] = parsed.positionals;
  if (image === undefined) {
    // As current ch-run: a fatal error (31), not an argp usage error.
    throw new DenError("", "IMAGE and/or CMD not specified", { hint: "try 'den run --help'" });
  }
  const envOps: EnvOp[] = [];
  for (const t of parsed.options) {
    if (t.name === "set-env") {
      const value = t.value ?? "";
      if (value.includes("=")) envOps.push({ kind: "set", text: value });
      else envOps.push({ kind: "file", path: value || "/ch/environment", text: "" });
    } else if (t.name === "unset-env") {
      if (!t.value) throw new DenError("", "--unset-env: GLOB must have non-zero length");
      envOps.push({ kind: "unset", glob: t.value });
    }
  }
  const binds = parsed.options.filter((o) => o.name === "bind").map(
    ({ value: b = "" }) => {
      // ch-run's checks and words; invalid values exit 31, not 64.
      const i = b.indexOf(":");
      const source = i < 0 ? b : b.slice(0, i);
      const target = i < 0 ? undefined : b.slice(i + 1);
      if (source === "") throw new DenError("", "--bind: no source provided");
      if (target === "") throw new DenError("", "--bind: no destination provided");
      if (target === "/") throw new DenError("", "--bind: destination can't be /");
      if (target !== undefined && !target.startsWith("/")) {
        throw new DenError("", "--bind: destination must be absolute");
      }
      return { source, target };
    },
  );
  // Each -u/-g is checked, as argp does; the last one wins.
  let uid: number | undefined, gid: number | undefined;
  for (const o of parsed.options) {
    if (o.name === "uid") uid = parseId("uid", o.value ?? "");
    else if (o.name === "gid") gid = parseId("gid", o.value ?? "");
  }
  let writeFake: string | undefined;
  if (has("write-fake")) {
    writeFake = lastValue(parsed, "write-fake") ?? WRITE_FAKE_SIZE;
    if (!isTmpfsSize(writeFake)) {
      throw usageError(
        `--write-fake: invalid size: ${JSON.stringify(writeFake)}`,
        "a tmpfs size: bytes with an optional k, m or g suffix (4g), or a share of memory (50%)",
      );
    }
    if (has("write")) {
      throw usageError("--write and --write-fake are mutually exclusive", "try 'den run --help'");
    }
  }
  return {
    kind: "run",
    options: {
      image,
      command,
      binds,
      cd: lastValue(parsed, "cd"),
      write: has("write"),
      writeFake,
      envOps,
      envNoExpand: has("env-no-expand"),
      imageEnv: !has("no-image-env"),
      uid,
      gid,
      home: has("home"),
      noPasswd: has("no-passwd"),
      privateTmp: has("private-tmp"),
    },
    cli: {
      verbose: countFlag(parsed, "verbose"),
      storage: lastValue(parsed, "storage"),
      dryRun: has("dry-run"),
      mount: lastValue(parsed, "mount"),
    },
    join: {
      join: has("join"),
      joinCount: lastValue(parsed, "join-ct"),
      joinTag: lastValue(parsed, "join-tag"),
      joinPid: lastValue(parsed, "join-pid"),
      noJoin: has("no-join"),
    },
  };
}

/** "No such file or directory" from Deno's "No such file or directory (os error 2): stat '/x'". */
function osReason(e: unknown): string {
  return osMessage(e).replace(/:.*$/, "");
}

/** The host's file system for the planner; each answer is kept for the
 * run (the planner asks again). */
const kinds = new Map<string, ReturnType<HostView["lkind"]>>();
const hostView: HostView = {
  lkind(path) {
    if (kinds.has(path)) return kinds.get(path);
    const kind = fileKind(path);
    kinds.set(path, kind);
    return kind;
  },
  readlink: (path) => Deno.readLinkSync(path),
};

/**
 * `den run docker://REF`: the image stored under REF's name, pulled first
 * when it is not there yet (no network when it is).
 */
async function pulledImage(image: string, storage?: string): Promise<string> {
  const ref = image.slice("docker://".length);
  const { parsePullRef, storageNameOf } = await lazy<typeof import("../image/registry/ref.ts")>(
    "../image/registry/ref.ts",
  );
  const name = storageNameOf(parsePullRef(ref));
  if (resolveImage(name, storage) !== name) return name; // stored already
  verbose(`pulling ${ref} into storage as ${name}`);
  const { pullCommand } = await lazy<typeof import("./pull.ts")>("./pull.ts");
  const code = await pullCommand(["-q", ...(storage ? ["-s", storage] : []), ref, name]);
  if (code !== 0) throw new DenError("", `can't pull ${ref}`, { exitCode: code });
  return name;
}

/** Check IMAGE the way ch-run does: a directory or a SquashFS file. */
async function imageOf(
  arg: string,
  storage?: string,
): Promise<{ path: string; squash: boolean }> {
  const path = resolveImage(arg, storage);
  const kind = fileKind(path, true);
  if (kind === undefined) {
    try {
      Deno.statSync(path); // for the reason, in Deno's words
    } catch (e) {
      throw new DenError("can't stat", `${path}: ${osReason(e)}`, {
        code: (e as { code?: string }).code,
      });
    }
  }
  if (kind === "dir") return { path: Deno.realPathSync(path), squash: false };
  if (kind === "file") {
    // As ch-run: a file is a SquashFS image when it starts with the magic.
    const head = new Uint8Array(4);
    try {
      using f = Deno.openSync(path);
      f.readSync(head);
    } catch (e) {
      throw new DenError("can't open", `${path}: ${osReason(e)}`, {
        code: (e as { code?: string }).code,
      });
    }
    // Loaded only for files: a directory image (every MPI rank) skips it.
    const { isSquashfs } = await lazy<typeof import("../run/squash.ts")>("../run/squash.ts");
    if (isSquashfs(head)) return { path: Deno.realPathSync(path), squash: true };
  }
  throw new DenError("", `unknown image type: ${path}`);
}

/** The planner's view when the image is mounted in a namespace den is not
 * in: paths under the mount point are looked up at `at`, a host path of the
 * image's top (through /proc/PID/root or a descriptor of the root). */
function squashView(mountPoint: string, at: string): HostView {
  const map = (p: string) =>
    p === mountPoint || p.startsWith(`${mountPoint}/`) ? `${at}${p.slice(mountPoint.length)}` : p;
  return {
    lkind: (p) => hostView.lkind(map(p)),
    readlink: (p) => hostView.readlink(map(p)),
  };
}

function realPathOr(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

/** Where a SquashFS image is mounted in the container's namespace. */
async function squashMountPointFor(
  image: string,
  opts: RunOptions,
  cli: RunCliOptions,
  facts: HostFacts,
): Promise<string> {
  const { squashMountPoint } = await lazy<typeof import("../run/squash.ts")>("../run/squash.ts");
  const env = new Map(facts.env);
  const pmix = envValue(facts.env, "PMIX_SERVER_TMPDIR"); // runImage() may bind it
  const sources = [
    ...DEFAULT_BINDS.map((d) => d.path),
    env.get("TMPDIR") || "/tmp",
    ...(opts.home && env.get("HOME") ? [env.get("HOME")!] : []),
    ...opts.binds.map((b) => b.source),
    ...(pmix ? [pmix] : []),
    image.slice(0, image.lastIndexOf("/")) || "/",
  ].map(realPathOr);
  return squashMountPoint({ sources, mount: cli.mount }, hostView);
}

/** Mount a SquashFS image in namespaces made for the container. */
async function mountImage(
  image: string,
  mountPoint: string,
  opts: RunOptions,
  facts: HostFacts,
): Promise<SquashMount> {
  const { isExecutableFile, squashfuseProgram } = await lazy<typeof import("../run/squash.ts")>(
    "../run/squash.ts",
  );
  const squashfuse = squashfuseProgram(Deno.env.get("PATH"), isExecutableFile);
  verbose(`squashfs: mounting ${image} on ${mountPoint} with ${squashfuse}`);
  const { mountSquash } = await lazy<typeof import("../ffi/squash.ts")>("../ffi/squash.ts");
  const uid = opts.uid ?? facts.uid, gid = opts.gid ?? facts.gid;
  return await mountSquash({
    image,
    mountPoint,
    squashfuse,
    uidMap: { inside: uid, outside: facts.uid },
    gidMap: { inside: gid, outside: facts.gid },
    timeoutMs: 1000 * Number(Deno.env.get("DEN_SQUASH_TIMEOUT") || 10),
  });
}

/** The image configuration `den unpack` stored (ch/metadata.json). */
function imageConfig(rootfs: string): ImageConfig | undefined {
  const m = readImageMetadata(rootfs);
  if (!m) return undefined;
  return { env: m.env_list, entrypoint: m.entrypoint, cmd: m.cmd, cwd: m.cwd || undefined };
}

/** Read --set-env files now: host paths, or /ch/environment in the image. */
function readEnvFiles(ops: EnvOp[], rootfs: string): EnvOp[] {
  return ops.map((op) => {
    if (op.kind !== "file") return op;
    if (op.path === "/ch/environment") {
      // Image content: read inside the image, following no links.
      const text = readFileInImage(rootfs, "ch/environment");
      if (text === undefined) {
        throw new DenError("can't open", `${op.path}: No such file or directory`, {
          code: "ENOENT",
        });
      }
      return { ...op, text };
    }
    try {
      return { ...op, text: Deno.readTextFileSync(op.path) };
    } catch (e) {
      const err = e as Error & { code?: string };
      throw new DenError("can't open", `${op.path}: ${osReason(e)}`, {
        code: err.code,
      });
    }
  });
}

/**
 * den's environment as it was started. Deno sets PATH itself when it is
 * missing (to its node_compat_bin), so Deno.env would hide an unset PATH
 * that ch-run warns about and passes on unset; /proc/self/environ has the
 * environment exec(2) gave.
 */
function hostEnvironment(): [string, string][] {
  try {
    const out: [string, string][] = [];
    for (const entry of Deno.readTextFileSync("/proc/self/environ").split("\0")) {
      const eq = entry.indexOf("=");
      if (eq > 0) out.push([entry.slice(0, eq), entry.slice(eq + 1)]);
    }
    return out;
  } catch {
    return Object.entries(Deno.env.toObject());
  }
}

/** A variable of den's environment (the first, as getenv(3) finds it). */
function envValue(env: [string, string][], name: string): string | undefined {
  return env.find(([k]) => k === name)?.[1];
}

/** Facts for the planner; env is den's environment, read once per run. */
export function hostFacts(env = hostEnvironment()): HostFacts {
  const users = hostUsers();
  return {
    env,
    uid: users.uid,
    gid: users.gid,
    user: envValue(env, "USER") || users.passwdEntry(users.uid)?.name || `uid${users.uid}`,
    passwdEntry: users.passwdEntry,
    groupName: users.groupName,
    fs: hostView,
  };
}

/** `den run`: returns the exit status. */
export async function runCommand(args: string[]): Promise<number> {
  const req = parseRunArgs(args);
  switch (req.kind) {
    case "help":
      out(RUN_USAGE);
      return 0;
    case "usage":
      out(runShortUsage());
      return 0;
    case "version":
      out(VERSION);
      return 0;
    case "feature": {
      if (req.name === "list") {
        for (const [name, on] of Object.entries(FEATURES)) if (on) out(name);
        return 0;
      }
      const on = FEATURES[req.name];
      if (on === undefined) {
        throw new DenError("", `unknown feature: ${req.name}`, {
          exitCode: EXIT_USAGE,
        });
      }
      return on ? 0 : 1;
    }
    case "run":
      break;
    default:
      req satisfies never;
  }
  const opts = req.options;
  const cli = req.cli;
  output.verbosity = Math.max(output.verbosity, cli.verbose);
  const env = hostEnvironment();
  const join = decideJoin(req.join, new Map(env), Deno.ppid);
  for (const note of join.notes) verbose(note);
  // Relative bind sources are relative to the host's working directory.
  const cwd = Deno.cwd();
  opts.binds = opts.binds.map((b) => ({
    source: b.source.startsWith("/") ? b.source : `${cwd}/${b.source}`.replace(/\/(\.\/)+/g, "/"),
    target: b.target ?? (b.source.startsWith("/") ? undefined : `${cwd}/${b.source}`),
  }));
  // As ch-run: a -s directory that is not there is worth a word, not an end.
  if (cli.storage !== undefined && fileKind(cli.storage, true) === undefined) {
    warn(`storage directory not found: ${cli.storage}`);
  }
  if (opts.image.startsWith("docker://")) opts.image = await pulledImage(opts.image, cli.storage);
  const image = await imageOf(opts.image, cli.storage);
  const facts = hostFacts(env);
  if (!image.squash) {
    return await runImage(opts, cli, join, facts, { rootfs: image.path, view: hostView });
  }
  return await runSquash(image.path, opts, cli, join, facts);
}

/**
 * `den run IMG.sqfs`. Joined peers (--join, a launcher, --join-pid) share
 * one mount: a peer group meets before anything is mounted, its first peer
 * mounts the image (ffi/squash.ts) and hands the namespaces and the
 * container's root to the others, who plan their command through that root
 * and mount nothing. The mount lives in the shared namespace as long as any
 * peer's process does.
 */
async function runSquash(
  image: string,
  opts: RunOptions,
  cli: RunCliOptions,
  join: JoinDecision,
  facts: HostFacts,
): Promise<number> {
  if (opts.write) {
    throw usageError("--write: a SquashFS image is read-only", "use -W (--write-fake) instead");
  }
  const mountPoint = await squashMountPointFor(image, opts, cli, facts);
  /** Plan through the root of a container that has the image mounted. */
  const joining = (ns: Namespaces): ImageAccess => {
    const at = `/proc/self/fd/${ns.rootFd}/.`;
    return { rootfs: mountPoint, view: squashView(mountPoint, at), readAt: at, join: ns };
  };
  const joins = !cli.dryRun && (join.group !== undefined || join.pid !== undefined);
  const rv = joins ? await rendezvous() : undefined;
  if (rv && join.pid !== undefined) {
    verbose(`join: joining namespaces of pid ${join.pid}`);
    const ns = rv.openNamespaces(containerPid(join.pid), { root: true });
    return await runImage(opts, cli, join, facts, joining(ns));
  }
  let server: GroupServer | undefined;
  let arriving: ArriveOptions | undefined;
  if (rv && join.group) {
    arriving = arrivingAt(join.group, image);
    const arrival = rv.arriveAtGroup(arriving);
    if (arrival.role === "peer") {
      return await runImage(opts, cli, join, facts, {
        ...joining(arrival.ns),
        peer: { arrival, arriving },
      });
    }
    server = arrival.server;
  }
  let squash: SquashMount | undefined;
  let used = false;
  try {
    squash = await mountImage(image, mountPoint, opts, facts);
    const at = `${squash.root}${mountPoint}`;
    const status = await runImage(opts, cli, join, facts, {
      rootfs: mountPoint,
      view: squashView(mountPoint, at),
      readAt: at,
      enter: { ...squash.ns, root: squash.root },
      server: server && { group: server, imageFd: squash.imageFd },
      onReady: () => {
        used = true;
        squash!.releaseHolder();
      },
    });
    if (server && used) await awaitPeers(server, arriving!);
    return status;
  } finally {
    // The group first: its copies of the namespace descriptors go with it.
    server?.close();
    squash?.close({ used });
  }
}

/**
 * After the command of a group's first den: wait for the peers still
 * expected (ranks of one launch start up to seconds apart on a loaded
 * node, and a quick command may be done before the last one arrives).
 */
async function awaitPeers(server: GroupServer, o: ArriveOptions): Promise<void> {
  const left = server.left;
  if (!left) return;
  verbose(`join: command done; waiting for ${left} peers`);
  if (!await server.awaitPeers(o.timeoutMs)) {
    verbose(`join: ${server.left} peers did not arrive within ${o.timeoutMs / 1000} s`);
  }
}

/** The peer-group rendezvous, loaded only by a den that joins one. */
function rendezvous(): Promise<typeof import("../ffi/rendezvous.ts")> {
  return lazy<typeof import("../ffi/rendezvous.ts")>("../ffi/rendezvous.ts");
}

/** How den sees the image and the namespaces it is to be run in. */
interface ImageAccess {
  /** The image's directory as the container child sees it. */
  rootfs: string;
  view: HostView;
  /** Where den reads the image's files (default: rootfs). */
  readAt?: string;
  /** Namespaces made beforehand (a mounted SquashFS image). */
  enter?: RunHooks["enter"];
  /** The container to join, decided before planning (SquashFS). */
  join?: Namespaces;
  /** A SquashFS peer group's peer: it serves the group if the first leaves. */
  peer?: { arrival: Arrival & { role: "peer" }; arriving: ArriveOptions };
  /** A SquashFS peer group's first peer (arrived before mounting), and the
   * image its peers are to see. */
  server?: { group: GroupServer; imageFd: number };
  /** The container is set up (its process waits to exec). */
  onReady?: (pid: number) => void;
}

/** Plan the container and run it. */
async function runImage(
  opts: RunOptions,
  cli: RunCliOptions,
  join: JoinDecision,
  facts: HostFacts,
  image: ImageAccess,
): Promise<number> {
  const rootfs = image.rootfs;
  const readAt = image.readAt ?? rootfs;
  const pmix = envValue(facts.env, "PMIX_SERVER_TMPDIR");
  const pmixDir = pmixServerDir(pmix, rootfs, image.view);
  if (pmixDir) opts.binds.push({ source: pmixDir, target: pmixDir });
  opts.envOps = readEnvFiles(opts.envOps, readAt);
  const plan = planContainer(opts, { ...facts, fs: image.view }, rootfs, imageConfig(readAt));
  for (const w of plan.warnings) warn(w);
  for (const n of plan.notes) verbose(n);
  if (cli.dryRun) {
    out(JSON.stringify(plan, null, 2));
    return 0;
  }
  verbose(`image: ${rootfs}`);
  verbose(`container uid: ${plan.uidMap.inside}, gid: ${plan.gidMap.inside}`);
  for (const op of plan.ops) {
    verbose(
      `${op.kind}: ${"source" in op ? op.source + " -> " : ""}${op.target}`,
    );
  }
  if (join.launcher) separateRanks(plan, join.launcher);
  if (pmix && !pmixDir) setDefault(plan, "PMIX_MCA_gds", "hash");
  verbose(`executing: ${plan.argv.join(" ")}`);
  return await runJoined(plan, join, image);
}

/**
 * Ranks of a launcher in separate containers (--no-join): OpenMPI's shared
 * memory transport sees peers in other user namespaces, turns off its
 * single-copy (CMA) path half-way and then hangs on large messages
 * (OpenMPI 4.1 prints cma-different-user-namespace-warning). Tell it up
 * front to copy through shared memory, unless the user chose.
 */
function separateRanks(plan: Plan, launcher: string): void {
  verbose(`ranks in separate containers (${launcher} set, not joined)`);
  setDefault(plan, "OMPI_MCA_btl_vader_single_copy_mechanism", "none");
}

/** Set a variable in the container unless the user or image did. */
function setDefault(plan: Plan, name: string, value: string): void {
  if (plan.env.some((e) => e.startsWith(`${name}=`))) return;
  plan.env.push(`${name}=${value}`);
  verbose(`environment: ${name}=${value}`);
}

/**
 * The PMIx server's directory (Slurm's srun --mpi=pmix: its shared-memory
 * key-value store lives there), to bind at the same path when the image has
 * a directory there. Without it, clients fall back to PMIX_MCA_gds=hash.
 */
function pmixServerDir(
  serverTmpdir: string | undefined,
  rootfs: string,
  view: HostView,
): string | undefined {
  const dir = serverTmpdir?.replace(/\/+$/, "");
  if (!dir?.startsWith("/") || hostView.lkind(dir) !== "dir") return undefined;
  return view.lkind(resolveInRoot(rootfs, dir, view)) === "dir" ? dir : undefined;
}

/** Start the container: alone, as a group's winner, or joining one. */
async function runJoined(
  plan: Plan,
  join: JoinDecision,
  image: ImageAccess,
): Promise<number> {
  const { enter, onReady, server, peer } = image;
  if (image.join) {
    // SquashFS: the group was met (or --join-pid opened) before planning.
    const rv = await rendezvous();
    const stop = peer ? rv.serveWhenFree(peer.arriving, peer.arrival) : undefined;
    try {
      return await runPlan(plan, { warn, join: image.join });
    } finally {
      stop?.();
    }
  }
  if (server) {
    const rv = await rendezvous();
    return await runPlan(plan, {
      warn,
      enter,
      onReady: (pid) => {
        onReady?.(pid);
        // Peers plan through the image itself, as this den did, not through
        // the container's root with its mounts.
        const ns = rv.openNamespaces(pid);
        server.group.ready({ ...ns, rootFd: server.imageFd, ownerPid: Deno.pid });
      },
    });
  }
  if (!join.group && join.pid === undefined) return await runPlan(plan, { warn, enter, onReady });
  const rv = await rendezvous();
  if (join.pid !== undefined) {
    verbose(`join: joining namespaces of pid ${join.pid}`);
    const ns = rv.openNamespaces(containerPid(join.pid));
    return await runPlan(plan, { warn, join: ns });
  }
  const arriving = arrivingAt(join.group!, plan.rootfs);
  const arrival = rv.arriveAtGroup(arriving);
  if (arrival.role === "winner") {
    try {
      const status = await runPlan(plan, {
        warn,
        onReady: (pid) => arrival.server.ready({ ...rv.openNamespaces(pid), ownerPid: Deno.pid }),
      });
      await awaitPeers(arrival.server, arriving);
      return status;
    } finally {
      arrival.server.close();
    }
  }
  const stop = rv.serveWhenFree(arriving, arrival);
  try {
    return await runPlan(plan, { warn, join: arrival.ns });
  } finally {
    stop();
  }
}

/** How a den arrives at its peer group; `image` is the image's host path. */
function arrivingAt(group: JoinGroup, image: string): ArriveOptions {
  return {
    name: groupName(group.tag, image),
    tag: group.tag,
    count: group.count,
    timeoutMs: 1000 * Number(Deno.env.get("DEN_JOIN_TIMEOUT") || 30),
    log: (m: string) => verbose(m),
  };
}

/** Abstract socket name of a peer group: per user, tag and image. */
function groupName(tag: string, rootfs: string): string {
  // Two FNV-1a lanes: names only need to differ (SO_PEERCRED, not the
  // name, keeps other users out), and WebCrypto costs each rank ~1 ms.
  let a = 0x811c9dc5, b = 0x01000193 ^ 0x5bd1e995;
  for (const byte of new TextEncoder().encode(`${tag}\0${rootfs}`)) {
    a = Math.imul(a ^ byte, 0x01000193);
    b = Math.imul(b ^ byte, 0x5bd1e995) ^ (b >>> 15);
  }
  const hex = (n: number) => (n >>> 0).toString(16).padStart(8, "0");
  return `den-join/${Deno.uid()}/${hex(a)}${hex(b)}`;
}

/** --join-pid of a den itself means the container it runs. */
function containerPid(pid: number): number {
  const userns = (p: number | string) => {
    try {
      return Deno.statSync(`/proc/${p}/ns/user`).ino;
    } catch {
      return undefined;
    }
  };
  const mine = userns("self");
  if (mine === undefined || userns(pid) !== mine) return pid;
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      const children = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/children`);
      for (const child of children.trim().split(/\s+/).filter(Boolean)) {
        const ino = userns(child);
        if (ino !== undefined && ino !== mine) return Number(child);
      }
    }
  } catch {
    // not ours to look at, or gone: openNamespaces() says so
  }
  return pid;
}
