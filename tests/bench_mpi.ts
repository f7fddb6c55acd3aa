// Benchmark of den under MPI launchers: ping-pong latency and bandwidth of
// ranks in den (joined into one container, and not) beside the host, ch-run
// --join and srun; the cost of launching 64 ranks at once; and den's own
// memory per waiting rank. Run as `deno run -A tests/bench_mpi.ts`; it
// reports, it never asserts.
//
// Everything runs as the unprivileged user (setpriv when we are root), the
// launcher too, as a user on a cluster would run it. The host is small and
// noisy, so the configurations take turns, round after round, and medians
// are reported. Output is tables for people plus `key: value` lines for grep,
// e.g. `ratio mpi den/host bw16m: 0.98`.

import {
  asTestUser,
  buildBusyboxImage,
  denPlainArgv,
  ROOT,
  slurmMissing,
  tempDir,
  which,
} from "./_helpers.ts";
import {
  emptyScript,
  fmt,
  hostLoad,
  isDeno,
  median,
  pad,
  print,
  processTree,
  sleep,
  userEnv,
} from "./_bench.ts";

/** Timed ping-pong rounds (every configuration once a round). */
const PINGPONG_ROUNDS = 5;
/** pingpong's iteration scale: 5 makes about a second of messages a run. */
const PINGPONG_SCALE = 5;
/** Ranks, and timed rounds, of the launch-cost part. */
const LAUNCH_NP = 64;
const LAUNCH_ROUNDS = 5;
/** Ranks, seconds of sleep, and samples of the memory part. */
const MEMORY_NP = 4;
const MEMORY_SLEEP_S = 3;
const MEMORY_SAMPLES = 3;
/**
 * Any one command that takes longer has hung: it is killed, shown so, and
 * its configuration is not run again. 64 ranks of /bin/true take a second or
 * two here, so the launch part waits less.
 */
const TIMEOUT_MS = 120_000;
const LAUNCH_TIMEOUT_MS = 60_000;
/** Targets and bars, as ratios to the host (or the runtime's floor). */
const TARGET_WITHIN = 0.05;
const BAR_BW16M = 0.9;
const BAR_LAUNCH = 1.3;

/** pingpong in the MPI image (tests/mpi_image.sh). */
const IMAGE_PINGPONG = "/usr/local/bin/pingpong";
const SIZES = [
  { bytes: 8, key: "lat8", label: "8 B" },
  { bytes: 1 << 20, key: "bw1m", label: "1 MiB" },
  { bytes: 16 << 20, key: "bw16m", label: "16 MiB" },
] as const;

const decoder = new TextDecoder();

interface Context {
  env: Record<string, string>;
  /** Where commands start: the temporary directory, readable by the user. */
  cwd: string;
  user: string;
}

// ---------------------------------------------------------------------------
// Running commands with a time limit.

interface Run {
  status: "ok" | "fail" | "hung";
  /** The time limit it had. */
  timeoutMs: number;
  code: number;
  ms: number;
  stdout: string;
  stderr: string;
}

/** Fields of /proc/PID/stat after the command name. */
function procStat(pid: number): { ppid: number; session: number; start: string } | undefined {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
    // state ppid pgrp session ... starttime is field 22 (index 19 here).
    return { ppid: Number(f[1]), session: Number(f[3]), start: f[19] ?? "" };
  } catch {
    return undefined;
  }
}

/**
 * Every process we started for a run: the tree under pid, and everything in
 * the sessions it made (setsid), which catches ranks a launcher or den left
 * behind under init. Each with its start time, so a reused pid is not hit.
 */
function ourProcesses(pid: number): Map<number, string> {
  const own = procStat(Deno.pid)?.session;
  const found = new Map<number, string>();
  const sessions = new Set<number>();
  for (const p of processTree(pid)) {
    const st = procStat(p);
    if (!st) continue;
    found.set(p, st.start);
    if (st.session > 1 && st.session !== own) sessions.add(st.session);
  }
  if (sessions.size) {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      const st = procStat(Number(e.name));
      if (st && sessions.has(st.session)) found.set(Number(e.name), st.start);
    }
  }
  return found;
}

function signalAll(procs: Map<number, string>, signal: Deno.Signal): void {
  for (const [pid, start] of procs) {
    if (procStat(pid)?.start !== start) continue;
    try {
      Deno.kill(pid, signal);
    } catch {
      // Gone.
    }
  }
}

/**
 * Run argv as the user, in a session of its own, at most TIMEOUT_MS; on
 * timeout everything it started gets SIGTERM, then SIGKILL, and `onHang`
 * (e.g. scancel) runs.
 */
async function run(
  ctx: Context,
  argv: string[],
  opts: { onHang?: () => void; onSpawn?: (pid: number) => void; timeoutMs?: number } = {},
): Promise<Run> {
  const { onHang, onSpawn, timeoutMs = TIMEOUT_MS } = opts;
  const [cmd, ...args] = ["setsid", "-w", ...asTestUser(argv)];
  const start = performance.now();
  const child = new Deno.Command(cmd!, {
    args,
    env: ctx.env,
    clearEnv: true,
    cwd: ctx.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  onSpawn?.(child.pid);
  let hung = false;
  const timer = setTimeout(async () => {
    hung = true;
    const procs = ourProcesses(child.pid);
    signalAll(procs, "SIGTERM");
    onHang?.();
    await sleep(3000);
    for (const [p, s] of ourProcesses(child.pid)) procs.set(p, s);
    signalAll(procs, "SIGKILL");
  }, timeoutMs);
  const r = await child.output();
  clearTimeout(timer);
  const ms = performance.now() - start;
  return {
    status: hung ? "hung" : r.code === 0 ? "ok" : "fail",
    timeoutMs,
    code: r.code,
    ms,
    stdout: decoder.decode(r.stdout),
    stderr: decoder.decode(r.stderr),
  };
}

/** The last meaningful stderr line of a failed run, for the report. */
function why(r: Run): string {
  if (r.status === "hung") {
    return `hung (killed after ${r.timeoutMs / 1000} s; not run again)`;
  }
  const lines = r.stderr.split("\n").map((l) => l.trim())
    .filter((l) => l && !/^-+$/.test(l));
  const den = lines.find((l) => l.startsWith("den:"));
  return `exit ${r.code}: ${den ?? lines.at(-1) ?? "(no stderr)"}`.slice(0, 160);
}

interface Tally {
  ok: number;
  fail: number;
  hung: number;
  /** Runs left out after a hang. */
  skipped: number;
  firstError?: string;
}

const newTally = (): Tally => ({ ok: 0, fail: 0, hung: 0, skipped: 0 });

function tally(t: Tally, r: Run): void {
  t[r.status]++;
  if (r.status !== "ok" && !t.firstError) t.firstError = why(r);
}

function shownRuns(t: Tally): string {
  const n = t.ok + t.fail + t.hung + t.skipped;
  let s = `${t.ok}/${n}`;
  if (t.fail) s += ` ${t.fail} failed`;
  if (t.hung) s += ` ${t.hung} hung`;
  if (t.skipped) s += ` ${t.skipped} skipped`;
  return s;
}

const runsOk = (t: Tally) => `${t.ok}/${t.ok + t.fail + t.hung + t.skipped}`;

/** Run a configuration unless it hung before; count the outcome. */
async function attempt(
  ctx: Context,
  t: Tally,
  argv: string[],
  opts: Parameters<typeof run>[2] = {},
): Promise<Run | undefined> {
  if (t.hung) {
    t.skipped++;
    return undefined;
  }
  const r = await run(ctx, argv, opts);
  tally(t, r);
  return r;
}

/** mpirun's argv; --oversubscribe only where ranks outnumber cores. */
function mpirun(np: number, rest: string[]): string[] {
  const over = np > navigator.hardwareConcurrency ? ["--oversubscribe"] : [];
  return ["mpirun", ...over, "-np", String(np), ...rest];
}

// ---------------------------------------------------------------------------
// Part 1: ping-pong.

/** Why srun cannot be measured here, or undefined when it can. */
function srunMissing(): string | undefined {
  const slurm = slurmMissing();
  if (slurm) return slurm;
  const list = new Deno.Command("timeout", {
    args: ["10", "srun", "--mpi=list"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const text = decoder.decode(list.stdout) + decoder.decode(list.stderr);
  if (!/\bpmix\b/.test(text)) return "srun has no pmix plugin (srun --mpi=list)";
  return undefined;
}

/** The MPI image's directory, or why there is none. */
function mpiImage(): { dir?: string; missing?: string } {
  if (Deno.uid() !== 0) return { missing: "not root: tests/mpi_image.sh needs root" };
  const r = new Deno.Command("timeout", {
    args: ["900", "bash", `${ROOT}/tests/mpi_image.sh`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const dir = decoder.decode(r.stdout).trim().split("\n").at(-1);
  if (!r.success || !dir) {
    const text = decoder.decode(r.stderr).trim().split("\n").at(-1) ?? "";
    const hint = which("debootstrap") ? "" : " (debootstrap not installed)";
    return { missing: `tests/mpi_image.sh failed (exit ${r.code})${hint}: ${text}` };
  }
  return { dir };
}

/** Compile pingpong.c on the host, into dir; the path, or why not. */
function hostPingpong(dir: string): { bin?: string; missing?: string } {
  if (!which("mpicc")) return { missing: "mpicc not found (apt-get install libopenmpi-dev)" };
  const bin = `${dir}/pingpong`;
  const r = new Deno.Command("mpicc", {
    args: ["-O2", "-o", bin, `${ROOT}/tests/fixtures/pingpong.c`],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!r.success) return { missing: `mpicc failed: ${decoder.decode(r.stderr).trim()}` };
  Deno.chmodSync(bin, 0o755);
  return { bin };
}

interface PingpongConfig {
  name: string;
  shown: string;
  argv: (scale: number) => string[];
  /** The row its ratios are taken against. */
  base: string;
  onHang?: () => void;
  tally: Tally;
  values: Record<(typeof SIZES)[number]["key"], number[]>;
}

/** pingpong's lines: microseconds one way and MB/s, by message size. */
function parsePingpong(out: string): Map<number, { usec: number; mbs: number }> | undefined {
  const got = new Map<number, { usec: number; mbs: number }>();
  for (const m of out.matchAll(/^pingpong (\d+) (\d+) ([\d.]+) ([\d.]+)$/gm)) {
    got.set(Number(m[1]), { usec: Number(m[3]), mbs: Number(m[4]) });
  }
  return SIZES.every((s) => got.has(s.bytes)) ? got : undefined;
}

async function benchPingpong(ctx: Context, tmp: string): Promise<void> {
  print("MPI ping-pong (tests/fixtures/pingpong.c, 2 ranks on this node)");
  const image = mpiImage();
  if (!image.dir) {
    print(`skipped: ${image.missing}`);
    print(`mpi pingpong: skipped (${image.missing})`);
    print();
    return;
  }
  const host = hostPingpong(tmp);
  if (!host.bin) {
    print(`skipped: ${host.missing}`);
    print(`mpi pingpong: skipped (${host.missing})`);
    print();
    return;
  }
  const img = image.dir;
  const bin = host.bin;
  const inImage = (scale: number) => [IMAGE_PINGPONG, String(scale)];
  const job = `den-bench-mpi-${Deno.pid}`;
  const scancel = () => {
    // Our own job steps only: by name and user.
    new Deno.Command("scancel", {
      args: ["-n", job, "-u", ctx.user],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync();
  };
  const srun = ["srun", "--mpi=pmix", "-n", "2", "-J", job];
  const configs: PingpongConfig[] = [];
  const add = (
    name: string,
    shown: string,
    argv: (scale: number) => string[],
    base = "host",
    onHang?: () => void,
  ) =>
    configs.push({
      name,
      shown,
      argv,
      base,
      onHang,
      tally: newTally(),
      values: { lat8: [], bw1m: [], bw16m: [] },
    });
  add("host", "mpirun -np 2 HOSTBIN", (s) => mpirun(2, [bin, String(s)]));
  // What den sets for ranks it does not join: OpenMPI's shared memory without
  // single-copy (CMA), which needs ranks in one user namespace.
  const noCma = ["--mca", "btl_vader_single_copy_mechanism", "none"];
  add(
    "host-nocma",
    "mpirun --mca btl_vader_single_copy_mechanism none -np 2 HOSTBIN",
    (s) => mpirun(2, [...noCma, bin, String(s)]),
  );
  add(
    "den",
    "mpirun -np 2 den run IMG -- pingpong",
    (s) => mpirun(2, denPlainArgv(["run", img, "--", ...inImage(s)])),
  );
  add(
    "den-nojoin",
    "mpirun -np 2 den run --no-join IMG -- pingpong",
    (s) => mpirun(2, denPlainArgv(["run", "--no-join", img, "--", ...inImage(s)])),
  );
  if (which("ch-run")) {
    add(
      "ch-run-join",
      "mpirun -np 2 ch-run --join IMG -- pingpong",
      (s) => mpirun(2, ["ch-run", "--join", img, "--", ...inImage(s)]),
    );
  }
  const slurm = srunMissing();
  if (!slurm) {
    add(
      "srun-host",
      "srun --mpi=pmix -n 2 HOSTBIN",
      (s) => [...srun, bin, String(s)],
      "host",
      scancel,
    );
    add(
      "srun-den",
      "srun --mpi=pmix -n 2 den run IMG -- pingpong",
      (s) => [...srun, ...denPlainArgv(["run", img, "--", ...inImage(s)])],
      "srun-host",
      scancel,
    );
  }

  // One untimed round at scale 1: page cache, and a first sign of trouble.
  for (const c of configs) {
    const r = await run(ctx, c.argv(1), { onHang: c.onHang });
    if (r.status === "hung") tally(c.tally, r);
  }
  const started = performance.now();
  for (let round = 0; round < PINGPONG_ROUNDS; round++) {
    for (let i = 0; i < configs.length; i++) {
      const c = configs[(round + i) % configs.length]!;
      const r = await attempt(ctx, c.tally, c.argv(PINGPONG_SCALE), { onHang: c.onHang });
      if (r?.status !== "ok") continue;
      const parsed = parsePingpong(r.stdout);
      if (!parsed) {
        c.tally.ok--;
        tally(c.tally, { ...r, status: "fail", stderr: "no pingpong lines in output" });
        continue;
      }
      c.values.lat8.push(parsed.get(8)!.usec);
      c.values.bw1m.push(parsed.get(1 << 20)!.mbs);
      c.values.bw16m.push(parsed.get(16 << 20)!.mbs);
    }
  }
  const seconds = (performance.now() - started) / 1000;

  print(
    `${PINGPONG_ROUNDS} rounds, interleaved, after 1 warm-up round; pingpong scale ` +
      `${PINGPONG_SCALE}; as user ${ctx.user}; medians; ${fmt(seconds, 0)} s`,
  );
  print(`IMG=${img}; HOSTBIN: the same source built on the host`);
  if (slurm) print(`srun rows skipped: ${slurm}`);
  print();
  const med = new Map<string, Record<string, number>>();
  for (const c of configs) {
    med.set(c.name, {
      lat8: median(c.values.lat8),
      bw1m: median(c.values.bw1m),
      bw16m: median(c.values.bw16m),
    });
  }
  print(
    `${"config".padEnd(12)}${pad("8 B us", 8)}${pad("1 MiB MB/s", 12)}${pad("16 MiB MB/s", 13)}` +
      `${pad("lat x", 7)}${pad("1M x", 7)}${pad("16M x", 7)}  ${"vs".padEnd(10)}runs`,
  );
  const ratios = new Map<string, Record<string, number>>();
  for (const c of configs) {
    const m = med.get(c.name)!;
    const b = med.get(c.base)!;
    const r = { lat8: m.lat8! / b.lat8!, bw1m: m.bw1m! / b.bw1m!, bw16m: m.bw16m! / b.bw16m! };
    ratios.set(c.name, r);
    const isBase = c.name === c.base;
    const x = (v: number) => pad(isBase ? "" : fmt(v, 2), 7);
    print(
      `${c.name.padEnd(12)}${pad(fmt(m.lat8!, 3), 8)}${pad(fmt(m.bw1m!, 0), 12)}` +
        `${pad(fmt(m.bw16m!, 0), 13)}${x(r.lat8)}${x(r.bw1m)}${x(r.bw16m)}  ` +
        `${(isBase ? "" : c.base).padEnd(10)}${shownRuns(c.tally)}`,
    );
  }
  print();
  print("  lat x: latency / base (lower is better); 1M x, 16M x: bandwidth / base");
  for (const c of configs) print(`  ${c.name.padEnd(12)} ${c.shown}`);
  for (const c of configs) {
    if (c.tally.firstError) print(`  ${c.name}: ${c.tally.firstError}`);
  }
  print();

  for (const c of configs) {
    const m = med.get(c.name)!;
    print(`mpi ${c.name} lat8_us: ${fmt(m.lat8!, 3)}`);
    print(`mpi ${c.name} bw1m_mbs: ${fmt(m.bw1m!, 0)}`);
    print(`mpi ${c.name} bw16m_mbs: ${fmt(m.bw16m!, 0)}`);
    print(`mpi ${c.name} runs_ok: ${runsOk(c.tally)}`);
  }
  for (const c of configs) {
    if (c.name === c.base) continue;
    const r = ratios.get(c.name)!;
    for (const s of SIZES) {
      print(`ratio mpi ${c.name}/${c.base} ${s.key}: ${fmt(r[s.key]!, 2)}`);
    }
  }
  for (const c of configs) {
    if (c.name === c.base) continue;
    const r = ratios.get(c.name)!;
    const within = r.lat8! <= 1 + TARGET_WITHIN && r.bw1m! >= 1 - TARGET_WITHIN &&
      r.bw16m! >= 1 - TARGET_WITHIN;
    print(
      `target mpi ${c.name} within ${TARGET_WITHIN * 100}% of ${c.base}: ` +
        `${within ? "met" : "missed"} (lat ${fmt(r.lat8!, 2)}x, ` +
        `1 MiB ${fmt(r.bw1m!, 2)}x, 16 MiB ${fmt(r.bw16m!, 2)}x)`,
    );
    print(
      `bar mpi ${c.name} bw16m >= ${BAR_BW16M}x ${c.base}: ` +
        `${r.bw16m! >= BAR_BW16M ? "pass" : "FAIL"} (${fmt(r.bw16m!, 2)}x)`,
    );
  }
  print();
}

// ---------------------------------------------------------------------------
// Part 2: launch cost at scale.

async function benchLaunch(ctx: Context, img: string, tmp: string): Promise<void> {
  const empty = emptyScript(tmp);
  const deno = Deno.execPath();
  const np = LAUNCH_NP;
  const configs = [
    {
      name: "floor",
      shown: `mpirun -np ${np} deno run -A EMPTY.ts`,
      argv: mpirun(np, [deno, "run", "-A", empty]),
    },
    {
      name: "den",
      shown: `mpirun -np ${np} den run IMG -- /bin/true (joined)`,
      argv: mpirun(np, denPlainArgv(["run", img, "--", "/bin/true"])),
    },
    {
      name: "den-nojoin",
      shown: `mpirun -np ${np} den run --no-join IMG -- /bin/true`,
      argv: mpirun(np, denPlainArgv(["run", "--no-join", img, "--", "/bin/true"])),
    },
    ...(which("ch-run")
      ? [
        {
          name: "ch-run",
          shown: `mpirun -np ${np} ch-run IMG -- /bin/true`,
          argv: mpirun(np, ["ch-run", img, "--", "/bin/true"]),
        },
        {
          name: "ch-run-join",
          shown: `mpirun -np ${np} ch-run --join IMG -- /bin/true`,
          argv: mpirun(np, ["ch-run", "--join", img, "--", "/bin/true"]),
        },
      ]
      : []),
  ].map((c) => ({ ...c, times: [] as number[], tally: newTally() }));

  const timeoutMs = LAUNCH_TIMEOUT_MS;
  for (const c of configs) { // warm-up, not counted (but a hang is)
    const r = await run(ctx, c.argv, { timeoutMs });
    if (r.status === "hung") tally(c.tally, r);
  }
  for (let round = 0; round < LAUNCH_ROUNDS; round++) {
    for (let i = 0; i < configs.length; i++) {
      const c = configs[(round + i) % configs.length]!;
      const r = await attempt(ctx, c.tally, c.argv, { timeoutMs });
      if (r?.status === "ok") c.times.push(r.ms);
    }
  }

  print(
    `launch cost: ${np} ranks of a command that exits at once (busybox image), ` +
      `${LAUNCH_ROUNDS} runs each, interleaved, after 1 warm-up round; ` +
      `wall time of mpirun; medians of successful runs`,
  );
  print();
  print(
    `${"config".padEnd(12)}${pad("median ms", 10)}${pad("min ms", 9)}${pad("x floor", 9)}  runs`,
  );
  const floor = median(configs[0]!.times);
  const med = new Map<string, number>();
  for (const c of configs) {
    const m = median(c.times);
    med.set(c.name, m);
    print(
      `${c.name.padEnd(12)}${pad(fmt(m, 0), 10)}${pad(fmt(Math.min(...c.times), 0), 9)}` +
        `${pad(fmt(m / floor, 2), 9)}  ${shownRuns(c.tally)}`,
    );
  }
  print();
  for (const c of configs) print(`  ${c.name.padEnd(12)} ${c.shown}`);
  for (const c of configs) {
    if (c.tally.firstError) print(`  ${c.name}: ${c.tally.firstError}`);
  }
  print();
  for (const c of configs) {
    print(`launch${np} ${c.name} median_ms: ${fmt(med.get(c.name)!, 0)}`);
    print(
      `launch${np} ${c.name} runs_ok: ${runsOk(c.tally)}`,
    );
  }
  for (const name of ["den", "den-nojoin", "ch-run", "ch-run-join"]) {
    if (med.has(name)) print(`ratio launch${np} ${name}/floor: ${fmt(med.get(name)! / floor, 2)}`);
  }
  const den = configs.find((c) => c.name === "den")!;
  const ratio = med.get("den")! / floor;
  const allOk = den.tally.ok === LAUNCH_ROUNDS;
  print(
    `bar launch${np} den <= ${BAR_LAUNCH}x floor: ` +
      `${ratio <= BAR_LAUNCH && allOk ? "pass" : "FAIL"} (${fmt(ratio, 2)}x` +
      `${allOk ? "" : `; ${shownRuns(den.tally)} runs succeeded`})`,
  );
  print();
}

// ---------------------------------------------------------------------------
// Part 3: private memory per waiting rank.

interface Memory {
  privateDirty: number;
  privateClean: number;
  pss: number;
  rss: number;
}

/** One process's memory, MiB (smaps_rollup, 4.14+). */
function readMemory(pid: number): Memory | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
  } catch {
    return undefined;
  }
  const kib = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return m ? Number(m[1]) / 1024 : NaN;
  };
  return {
    privateDirty: kib("Private_Dirty"),
    privateClean: kib("Private_Clean"),
    pss: kib("Pss"),
    rss: kib("Rss"),
  };
}

function comm(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return "";
  }
}

/**
 * Start argv (NP ranks that end up waiting), wait until ready() says every
 * rank waits, read smaps_rollup of each Deno process, and let the run end.
 */
async function sampleRanks(
  ctx: Context,
  argv: string[],
  ready: (tree: number[]) => boolean,
): Promise<{ ranks: Memory[]; threads: number[]; ready: boolean; run: Run }> {
  let root: number | undefined;
  const done = run(ctx, argv, { onSpawn: (pid) => root = pid });
  const deadline = performance.now() + 30_000;
  let ok = false;
  while (performance.now() < deadline) {
    if (root !== undefined && ready(processTree(root))) {
      ok = true;
      break;
    }
    await sleep(50);
  }
  await sleep(200); // settle: the last rank's den reaches its wait
  const ranks: Memory[] = [];
  const threads: number[] = [];
  if (root !== undefined) {
    for (const pid of processTree(root)) {
      if (!isDeno(pid)) continue;
      const m = readMemory(pid);
      if (!m) continue;
      ranks.push(m);
      try {
        threads.push([...Deno.readDirSync(`/proc/${pid}/task`)].length);
      } catch {
        // Gone.
      }
    }
  }
  return { ranks, threads, ready: ok, run: await done };
}

async function benchMemory(ctx: Context, img: string, tmp: string): Promise<void> {
  const np = MEMORY_NP;
  const readyDir = `${tmp}/ready`;
  Deno.mkdirSync(readyDir);
  Deno.chmodSync(readyDir, 0o777);
  const sleeper = `${tmp}/sleep.ts`;
  Deno.writeTextFileSync(
    sleeper,
    `Deno.writeTextFileSync(\`\${Deno.args[0]}/\${Deno.pid}\`, "");\n` +
      `await new Promise((resolve) => setTimeout(resolve, ${MEMORY_SLEEP_S * 1000}));\n`,
  );
  Deno.chmodSync(sleeper, 0o644);
  const deno = Deno.execPath();
  const denArgv = mpirun(np, denPlainArgv(["run", img, "--", "sleep", String(MEMORY_SLEEP_S)]));
  const floorArgv = mpirun(np, [deno, "run", "-A", sleeper, readyDir]);

  const dens: Memory[] = [];
  const floors: Memory[] = [];
  const denThreads: number[] = [];
  const problems: string[] = [];
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    // den's ranks wait once the container's sleep runs (one per rank).
    const d = await sampleRanks(
      ctx,
      denArgv,
      (tree) => tree.filter((p) => comm(p) === "sleep").length >= np,
    );
    if (!d.ready) problems.push(`den sample ${i}: ranks' sleep not all seen`);
    if (d.run.status !== "ok") problems.push(`den sample ${i}: ${why(d.run)}`);
    if (d.ranks.length !== np) problems.push(`den sample ${i}: ${d.ranks.length} deno processes`);
    dens.push(...d.ranks);
    denThreads.push(...d.threads);
    // The floor's ranks wait once each has written its file.
    for (const f of Deno.readDirSync(readyDir)) Deno.removeSync(`${readyDir}/${f.name}`);
    const f = await sampleRanks(ctx, floorArgv, () => [...Deno.readDirSync(readyDir)].length >= np);
    if (!f.ready) problems.push(`floor sample ${i}: not all ranks ready`);
    if (f.run.status !== "ok") problems.push(`floor sample ${i}: ${why(f.run)}`);
    floors.push(...f.ranks);
  }

  const priv = (m: Memory) => m.privateDirty + m.privateClean;
  const rows: [string, string, Memory[]][] = [
    ["den", `den rank (mpirun -np ${np} den run IMG -- sleep ${MEMORY_SLEEP_S})`, dens],
    ["floor", `deno rank (mpirun -np ${np} deno run SLEEP.ts)`, floors],
  ];
  print(
    `memory per waiting rank: smaps_rollup of each Deno process while ${np} ranks ` +
      `wait; median over ${MEMORY_SAMPLES} runs x ${np} ranks; MiB`,
  );
  print();
  print(
    `${"process".padEnd(10)}${pad("private", 9)}${pad("priv dirty", 12)}${pad("priv clean", 12)}` +
      `${pad("pss", 7)}${pad("rss", 7)}${pad("max priv", 10)}${pad("n", 4)}`,
  );
  const med = new Map<string, Memory & { priv: number }>();
  for (const [key, , ms] of rows) {
    const m = {
      priv: median(ms.map(priv)),
      privateDirty: median(ms.map((x) => x.privateDirty)),
      privateClean: median(ms.map((x) => x.privateClean)),
      pss: median(ms.map((x) => x.pss)),
      rss: median(ms.map((x) => x.rss)),
    };
    med.set(key, m);
    print(
      `${key.padEnd(10)}${pad(fmt(m.priv), 9)}${pad(fmt(m.privateDirty), 12)}` +
        `${pad(fmt(m.privateClean), 12)}${pad(fmt(m.pss), 7)}${pad(fmt(m.rss), 7)}` +
        `${pad(fmt(Math.max(...ms.map(priv))), 10)}${pad(String(ms.length), 4)}`,
    );
  }
  const den = med.get("den")!;
  const floor = med.get("floor")!;
  print(
    `${"den-floor".padEnd(10)}${pad(fmt(den.priv - floor.priv), 9)}` +
      `${pad(fmt(den.privateDirty - floor.privateDirty), 12)}` +
      `${pad(fmt(den.privateClean - floor.privateClean), 12)}` +
      `${pad(fmt(den.pss - floor.pss), 7)}${pad(fmt(den.rss - floor.rss), 7)}`,
  );
  print();
  for (const [key, label] of rows) print(`  ${key.padEnd(10)} ${label}`);
  print("  private = Private_Dirty + Private_Clean; den-floor is den's own");
  if (denThreads.length) print(`  den threads per rank: median ${median(denThreads)}`);
  for (const p of problems) print(`  problem: ${p}`);
  print();
  for (const [key] of rows) {
    const m = med.get(key)!;
    print(`memory rank ${key} private_mib: ${fmt(m.priv)}`);
    print(`memory rank ${key} private_dirty_mib: ${fmt(m.privateDirty)}`);
    print(`memory rank ${key} pss_mib: ${fmt(m.pss)}`);
    print(`memory rank ${key} rss_mib: ${fmt(m.rss)}`);
  }
  print(`memory rank den-floor private_mib: ${fmt(den.priv - floor.priv)}`);
  print(`memory rank den-floor private_dirty_mib: ${fmt(den.privateDirty - floor.privateDirty)}`);
  print();
}

// ---------------------------------------------------------------------------

/** MPI ping-pong, launch at 64 ranks and memory per rank, den beside peers. */
export async function benchMpi(): Promise<void> {
  print(`den under MPI launchers; deno ${Deno.version.deno}; ${ROOT}`);
  print(`host: ${hostLoad()}`);
  for (const cmd of ["mpirun", "setsid"]) {
    if (!which(cmd)) {
      print(`skipped: ${cmd} not found (apt-get install openmpi-bin util-linux)`);
      print(`mpi: skipped (${cmd} not found)`);
      print();
      return;
    }
  }
  await using tmp = tempDir("den-bench-mpi-");
  const busybox = buildBusyboxImage(`${tmp.path}/img`);
  const ctx: Context = { ...userEnv(tmp.path), cwd: tmp.path };
  // Warm the DENO_DIR: every timed den below finds its modules transpiled.
  const cold = await run(ctx, denPlainArgv(["run", busybox, "--", "/bin/true"]));
  if (cold.status !== "ok") {
    print(`skipped: den run fails: ${why(cold)}`);
    print(`mpi: skipped (den run fails)`);
    print();
    return;
  }
  print(`den cold start (empty DENO_DIR, fills it): ${fmt(cold.ms, 0)} ms`);
  print();
  const started = performance.now();
  await benchPingpong(ctx, tmp.path);
  await benchLaunch(ctx, busybox, tmp.path);
  await benchMemory(ctx, busybox, tmp.path);
  print(`mpi bench seconds: ${fmt((performance.now() - started) / 1000, 0)}`);
  print(`host after: ${hostLoad()}`);
}

if (import.meta.main) await benchMpi();
