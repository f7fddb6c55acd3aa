// decideJoin(): whether a `den run` shares its container with peers, and
// with which group, as plain data (pure; ffi/rendezvous.ts does the rest).
//
// ch-run's --join semantics: peers of one group (same tag) share the user and
// mount namespace of the first one to arrive. Peer count: --join-ct, else
// OMPI_COMM_WORLD_LOCAL_SIZE, SLURM_STEP_TASKS_PER_NODE, SLURM_CPUS_ON_NODE.
// Tag: --join-tag, else SLURM_STEP_ID, else the parent's pid.
//
// Beyond ch-run: under a launcher (mpirun, srun, a PMI/PMIx launcher) den
// joins by default (--no-join turns it off), so MPI ranks on a node share
// one user namespace and cross-memory attach (CMA) works between them.

import { DenError, EXIT_FAILURE } from "../error.ts";

/** What the user asked for on the command line. */
export interface JoinOptions {
  join: boolean;
  joinCount?: string;
  joinTag?: string;
  joinPid?: string;
  noJoin: boolean;
}

/** A peer group to rendezvous with. */
export interface JoinGroup {
  /** Peers expected on this node, this one included; undefined: unknown. */
  count?: number;
  tag: string;
  /** Chosen by den because a launcher was seen, not asked for. */
  auto: boolean;
}

export interface JoinDecision {
  group?: JoinGroup;
  /** --join-pid: join the namespaces of this process. */
  pid?: number;
  /** Lines for -v, in ch-run's wording. */
  notes: string[];
  /** Set when ranks of a launcher run in separate containers. */
  launcher?: string;
}

function joinError(msg: string): DenError {
  return new DenError("", msg, { exitCode: EXIT_FAILURE });
}

/** strtol(3) as ch-run's parse_int(): leading digits, int range. */
export function parseCount(
  text: string,
  what: string,
  extraOk: boolean,
): number {
  const m = /^[ \t\n\v\f\r]*([+-]?\d+)/.exec(text);
  if (!m) throw joinError(`${what}: no digits found`);
  const n = Number(m[1]);
  if (!Number.isSafeInteger(n) || n < -(2 ** 31) || n > 2 ** 31 - 1) {
    throw joinError(`${what}: out of range`);
  }
  if (!extraOk && m[0].length !== text.length) {
    throw joinError(`${what}: extra characters after digits`);
  }
  return n;
}

/**
 * Tasks on this node from SLURM_STEP_TASKS_PER_NODE ("2(x3),1"), picking
 * the entry of SLURM_NODEID; the first number when the node is unknown.
 */
export function slurmTasksHere(list: string, nodeId?: string): string {
  const here = nodeId !== undefined && /^\d+$/.test(nodeId) ? Number(nodeId) : 0;
  let node = 0;
  for (const part of list.split(",")) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return list;
    node += m[2] ? Number(m[2]) : 1;
    if (here < node) return m[1]!;
  }
  return list;
}

/** The environment variable a launcher sets in every rank, if any. */
export function launcherOf(env: Map<string, string>): string | undefined {
  return [
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "SLURM_STEP_TASKS_PER_NODE",
    "PMIX_RANK",
    "PMI_RANK",
  ].find((v) => env.has(v) && !(v === "SLURM_STEP_TASKS_PER_NODE" && !env.has("SLURM_STEP_ID")));
}

const COUNT_VARS = [
  "OMPI_COMM_WORLD_LOCAL_SIZE",
  "SLURM_STEP_TASKS_PER_NODE",
  "SLURM_CPUS_ON_NODE",
];

/** Peer count as ch-run's join_ct(); undefined when none is found. */
function peerCount(
  opts: JoinOptions,
  env: Map<string, string>,
  notes: string[],
  vars: string[],
): number | undefined {
  let n = 0;
  if (opts.joinCount !== undefined) {
    n = parseCount(opts.joinCount, "--join-ct", false);
    if (n !== 0) {
      notes.push("join: peer group size from command line");
      return n > 0 ? n : undefined;
    }
  }
  for (const v of vars) {
    let text = env.get(v);
    if (text === undefined) continue;
    if (v === "SLURM_STEP_TASKS_PER_NODE") text = slurmTasksHere(text, env.get("SLURM_NODEID"));
    n = parseCount(text, v, true);
    if (n !== 0) {
      notes.push(`join: peer group size from ${v}`);
      return n > 0 ? n : undefined;
    }
  }
  return undefined;
}

/** Peer tag as ch-run's join_tag(). */
function peerTag(
  opts: JoinOptions,
  env: Map<string, string>,
  ppid: number,
  notes: string[],
): string {
  let tag: string;
  if (opts.joinTag !== undefined) {
    tag = opts.joinTag;
    notes.push("join: peer group tag from command line");
  } else if (env.has("SLURM_STEP_ID")) {
    // Step ids repeat across jobs (job arrays share nodes): add the job id.
    const job = env.get("SLURM_JOB_ID");
    tag = job ? `${job}.${env.get("SLURM_STEP_ID")}` : env.get("SLURM_STEP_ID")!;
    notes.push(`join: peer group tag from ${job ? "SLURM_JOB_ID and " : ""}SLURM_STEP_ID`);
  } else if (env.has("PMIX_NAMESPACE")) {
    tag = env.get("PMIX_NAMESPACE")!;
    notes.push("join: peer group tag from PMIX_NAMESPACE");
  } else {
    tag = String(ppid);
    notes.push("join: peer group tag from getppid(2)");
  }
  if (tag === "") throw joinError("join: peer group tag cannot be empty string");
  return tag;
}

/** Decide how this run joins peers. Throws ch-run's errors for bad input. */
export function decideJoin(
  opts: JoinOptions,
  env: Map<string, string>,
  ppid: number,
): JoinDecision {
  const notes: string[] = [];
  const explicit = opts.join || opts.joinCount !== undefined || opts.joinTag !== undefined;
  let pid: number | undefined;
  if (opts.joinPid !== undefined) {
    if (explicit) throw joinError("--join-pid: can't use with --join, --join-ct or --join-tag");
    pid = parseCount(opts.joinPid, "--join-pid", false);
    if (pid < 1) throw joinError(`--join-pid: no such process: ${opts.joinPid}`);
  }
  const launcher = launcherOf(env);
  let group: JoinGroup | undefined;
  if (explicit) {
    const count = peerCount(opts, env, notes, COUNT_VARS);
    if (count === undefined) throw joinError("join: no valid peer group size found");
    group = { count, tag: peerTag(opts, env, ppid, notes), auto: false };
  } else if (launcher && !opts.noJoin && pid === undefined) {
    // Counts a launcher gives; a bad one only means "unknown".
    let count: number | undefined;
    try {
      count = peerCount(opts, env, notes, COUNT_VARS.slice(0, 2));
    } catch {
      count = undefined;
    }
    if (count !== 1) {
      group = { count, tag: peerTag(opts, env, ppid, notes), auto: true };
      notes.push(`join: automatic (launcher variable ${launcher}; --no-join turns it off)`);
    }
  }
  notes.push(
    `join: ${group ? 1 : 0} ${group?.count ?? 0} ${group?.tag ?? "(null)"} ${pid ?? 0}`,
  );
  return { group, pid, notes, launcher: group || pid ? undefined : launcher };
}
