// Benchmark of `den run`: start-up latency beside ch-run, bwrap and the bare
// Deno runtime on one busybox image, then den's own memory while a container
// runs. Run as `deno run -A tests/bench_run.ts`; it reports, it never asserts.
//
// Everything runs as the unprivileged user (setpriv when we are root), as a
// user on a cluster would run it. Output is a table for people plus
// `key: value` lines for grep, e.g. `ratio den/floor: 1.50`.

import { asTestUser, buildBusyboxImage, ROOT, tempDir } from "./_helpers.ts";
import {
  emptyScript,
  fmt,
  hostLoad,
  isDeno,
  median,
  pad,
  print,
  processTree,
  userEnv,
} from "./_bench.ts";

/** Timed runs per command, after WARMUP rounds that are not counted. */
const RUNS = 30;
const WARMUP = 3;
/** The bar den is held to: median latency within 2x the runtime's floor. */
const BAR_FLOOR_RATIO = 2;
/** The bar for den's own private dirty memory, MiB. */
const BAR_PRIVATE_DIRTY_MIB = 16;
/** Samples per process in the memory part; the median is reported. */
const MEMORY_SAMPLES = 3;
/** When to read smaps_rollup: after start-up, while the container sleeps. */
const MEMORY_DELAY_MS = 1500;

interface Bench {
  name: string;
  /** What the user types, for the table's legend. */
  shown: string;
  argv: string[];
  times: number[];
}

interface Context {
  image: string;
  env: Record<string, string>;
  user: string;
}

function spawn(ctx: Context, argv: string[]): Deno.ChildProcess {
  // setpriv exec()s, so the child's pid is the pid of the measured program.
  const [cmd, ...args] = asTestUser(argv);
  return new Deno.Command(cmd!, {
    args,
    env: ctx.env,
    clearEnv: true,
    cwd: ROOT, // den is run from a checkout: `deno run -A cli/main.ts ...`
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

/** Run argv once as the user; milliseconds from spawn to exit status. */
async function timeOnce(ctx: Context, name: string, argv: string[]): Promise<number> {
  const start = performance.now();
  const child = spawn(ctx, argv);
  const { code, stderr } = await child.output();
  const elapsed = performance.now() - start;
  if (code !== 0) {
    const text = new TextDecoder().decode(stderr).trim();
    throw new Error(`bench ${name}: exit ${code}: ${argv.join(" ")}\n${text}`);
  }
  return elapsed;
}

function quantile(sorted: number[], q: number): number {
  // Nearest rank: a value that was measured, as hyperfine's report shows.
  const i = Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1);
  return sorted[Math.max(0, i)]!;
}

interface Stats {
  median: number;
  p90: number;
  min: number;
  mean: number;
}

function stats(times: number[]): Stats {
  const sorted = [...times].sort((a, b) => a - b);
  return {
    median: median(times),
    p90: quantile(sorted, 0.9),
    min: sorted[0]!,
    mean: times.reduce((a, b) => a + b, 0) / times.length,
  };
}

async function benchLatency(ctx: Context, tmp: string): Promise<void> {
  const deno = Deno.execPath();
  const empty = emptyScript(tmp);
  const img = ctx.image;
  const benches: Bench[] = [
    {
      name: "den",
      shown: `deno run -A cli/main.ts run IMG -- /bin/true`,
      argv: [deno, "run", "-A", "cli/main.ts", "run", img, "--", "/bin/true"],
      times: [],
    },
    {
      name: "ch-run",
      shown: "ch-run IMG -- /bin/true",
      argv: ["ch-run", img, "--", "/bin/true"],
      times: [],
    },
    {
      name: "bwrap",
      shown: "bwrap --unshare-user --ro-bind IMG / --dev /dev --proc /proc " +
        "/bin/true",
      argv: [
        "bwrap",
        "--unshare-user",
        "--ro-bind",
        img,
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "/bin/true",
      ],
      times: [],
    },
    {
      name: "floor",
      shown: "deno run -A EMPTY.ts (the runtime alone)",
      argv: [deno, "run", "-A", empty],
      times: [],
    },
  ];
  // A `deno compile`d den, if someone built one (`deno task compile`).
  const compiled = `${ROOT}/den`;
  const haveCompiled = isExecutable(compiled);
  if (haveCompiled) {
    benches.splice(1, 0, {
      name: "den-compiled",
      shown: "./den run IMG -- /bin/true",
      argv: [compiled, "run", img, "--", "/bin/true"],
      times: [],
    });
  }

  // Cold: empty DENO_DIR, so this run also transpiles den's modules.
  const cold = await timeOnce(ctx, "den", benches[0]!.argv);
  for (let round = 0; round < WARMUP; round++) {
    for (const b of benches) await timeOnce(ctx, b.name, b.argv);
  }
  // Round-robin, starting one further along each round, so drift on the host
  // (frequency, page cache, a noisy neighbour) spreads over every command.
  for (let round = 0; round < RUNS; round++) {
    for (let i = 0; i < benches.length; i++) {
      const b = benches[(round + i) % benches.length]!;
      b.times.push(await timeOnce(ctx, b.name, b.argv));
    }
  }

  print(
    `den run latency: ${RUNS} runs each, interleaved, after ${WARMUP} ` +
      `warm-up rounds; as user ${ctx.user}; /bin/true in a busybox image`,
  );
  print();
  print(
    `${"command".padEnd(13)}${pad("median ms", 10)}${pad("p90 ms", 9)}` +
      `${pad("min ms", 9)}${pad("mean ms", 9)}  what runs`,
  );
  const by = new Map<string, Stats>();
  for (const b of benches) {
    const s = stats(b.times);
    by.set(b.name, s);
    print(
      `${b.name.padEnd(13)}${pad(fmt(s.median), 10)}${pad(fmt(s.p90), 9)}` +
        `${pad(fmt(s.min), 9)}${pad(fmt(s.mean), 9)}  ${b.shown}`,
    );
  }
  print();
  print(`latency den cold_ms: ${fmt(cold)} (first run, empty DENO_DIR)`);
  for (const b of benches) {
    const s = by.get(b.name)!;
    print(`latency ${b.name} median_ms: ${fmt(s.median)}`);
    print(`latency ${b.name} p90_ms: ${fmt(s.p90)}`);
  }
  const den = by.get("den")!.median;
  for (const other of ["floor", "ch-run", "bwrap"]) {
    print(`ratio den/${other}: ${fmt(den / by.get(other)!.median, 2)}`);
  }
  const floor = by.get("floor")!.median;
  print(`overhead den-floor_ms: ${fmt(den - floor)}`);
  const ratio = den / floor;
  print(
    `bar den median <= ${BAR_FLOOR_RATIO}x floor: ` +
      `${ratio <= BAR_FLOOR_RATIO ? "pass" : "FAIL"} (${fmt(ratio, 2)}x)`,
  );
  if (haveCompiled) {
    const c = by.get("den-compiled")!.median;
    print(`ratio den-compiled/ch-run: ${fmt(c / by.get("ch-run")!.median, 2)}`);
  } else {
    print(
      "caveat: no compiled den measured: `deno compile` downloads denort " +
        "from dl.deno.land, unreachable here, so den is timed as `deno run` " +
        "(a compiled binary skips module loading and transpile-cache lookups)",
    );
  }
  print();
}

function isExecutable(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

interface Memory {
  rss: number;
  pss: number;
  privateDirty: number;
}

/** Rss, Pss and Private_Dirty of one process, MiB (smaps_rollup, 4.14+). */
function readMemory(pid: number): Memory {
  const text = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
  const kib = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    if (!m) throw new Error(`smaps_rollup of ${pid}: no ${field}`);
    return Number(m[1]) / 1024;
  };
  return { rss: kib("Rss"), pss: kib("Pss"), privateDirty: kib("Private_Dirty") };
}

function sumMemory(ms: Memory[]): Memory {
  return {
    rss: ms.reduce((a, m) => a + m.rss, 0),
    pss: ms.reduce((a, m) => a + m.pss, 0),
    privateDirty: ms.reduce((a, m) => a + m.privateDirty, 0),
  };
}

interface MemorySample {
  /** Processes that are the Deno runtime: den itself. */
  own: Memory;
  /** Everything else in the tree: the container's command. */
  rest: Memory;
  ownCount: number;
  threads: number;
}

/**
 * Start argv (which runs `sleep 5` somewhere), wait, read smaps_rollup of the
 * whole process tree, then end it early with SIGTERM to the container's
 * command: the numbers are taken, and ten more seconds of sleep teach nothing.
 */
async function sampleMemory(ctx: Context, argv: string[]): Promise<MemorySample> {
  const child = spawn(ctx, argv);
  await new Promise((r) => setTimeout(r, MEMORY_DELAY_MS));
  const own: Memory[] = [];
  const rest: number[] = [];
  let threads = 0;
  for (const pid of processTree(child.pid)) {
    if (isDeno(pid)) {
      own.push(readMemory(pid));
      threads += [...Deno.readDirSync(`/proc/${pid}/task`)].length;
    } else {
      rest.push(pid);
    }
  }
  const sample = {
    own: sumMemory(own),
    rest: sumMemory(rest.map(readMemory)),
    ownCount: own.length,
    threads,
  };
  for (const pid of rest.length ? rest : [child.pid]) {
    try {
      Deno.kill(pid, "SIGTERM");
    } catch {
      // Already gone.
    }
  }
  const { code, stderr } = await child.output();
  // 143: the command died of SIGTERM, and den (like ch-run) says so.
  if (code !== 0 && code !== 143) {
    const text = new TextDecoder().decode(stderr).trim();
    throw new Error(`bench memory: exit ${code}: ${argv.join(" ")}\n${text}`);
  }
  return sample;
}

function medianMemory(samples: Memory[]): Memory {
  return {
    rss: median(samples.map((m) => m.rss)),
    pss: median(samples.map((m) => m.pss)),
    privateDirty: median(samples.map((m) => m.privateDirty)),
  };
}

async function benchMemory(ctx: Context, tmp: string): Promise<void> {
  const deno = Deno.execPath();
  const sleeper = `${tmp}/sleep.ts`;
  Deno.writeTextFileSync(
    sleeper,
    "await new Promise((resolve) => setTimeout(resolve, 5000));\n",
  );
  Deno.chmodSync(sleeper, 0o644);
  const img = ctx.image;
  const denArgv = [deno, "run", "-A", "cli/main.ts", "run", img, "--", "sleep", "5"];

  const dens: MemorySample[] = [];
  const floors: MemorySample[] = [];
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    dens.push(await sampleMemory(ctx, denArgv));
    floors.push(await sampleMemory(ctx, [deno, "run", "-A", sleeper]));
  }
  // ch-run exec()s into the command, so its pid is the container's sleep.
  const chRun = await sampleMemory(ctx, ["ch-run", img, "--", "sleep", "5"]);

  const den = medianMemory(dens.map((s) => s.own));
  const guest = medianMemory(dens.map((s) => s.rest));
  const floor = medianMemory(floors.map((s) => s.own));
  const { ownCount, threads } = dens[0]!;
  print(
    `den run memory: smaps_rollup ${MEMORY_DELAY_MS} ms into ` +
      `\`den run IMG -- sleep 5\`, median of ${MEMORY_SAMPLES}; MiB`,
  );
  print();
  print(`${"process".padEnd(30)}${pad("private dirty", 14)}${pad("pss", 8)}${pad("rss", 8)}`);
  const rows: [string, string, Memory][] = [
    ["den", `den (${ownCount} deno, ${threads} threads)`, den],
    ["container-sleep", "container's sleep (den)", guest],
    ["floor", "deno run SLEEP.ts", floor],
    ["ch-run-sleep", "ch-run's sleep", chRun.rest],
  ];
  for (const [, label, m] of rows) {
    print(
      `${label.padEnd(30)}${pad(fmt(m.privateDirty), 14)}${pad(fmt(m.pss), 8)}` +
        `${pad(fmt(m.rss), 8)}`,
    );
  }
  print();
  print(
    `den private dirty: ${fmt(den.privateDirty)} MiB ` +
      `(bar ${BAR_PRIVATE_DIRTY_MIB} MiB: ` +
      `${den.privateDirty <= BAR_PRIVATE_DIRTY_MIB ? "pass" : "FAIL"})`,
  );
  for (const [key, , m] of rows) {
    print(`memory ${key} private_dirty_mib: ${fmt(m.privateDirty)}`);
    print(`memory ${key} pss_mib: ${fmt(m.pss)}`);
    print(`memory ${key} rss_mib: ${fmt(m.rss)}`);
  }
  print(`memory den-floor private_dirty_mib: ${fmt(den.privateDirty - floor.privateDirty)}`);
  print();
}

/** Latency and memory of `den run` beside ch-run, bwrap and bare Deno. */
export async function benchRun(): Promise<void> {
  await using tmp = tempDir("den-bench-");
  const image = buildBusyboxImage(`${tmp.path}/img`);
  const ctx: Context = { image, ...userEnv(tmp.path) };
  print(`deno ${Deno.version.deno}, v8 ${Deno.version.v8}; ${ROOT}`);
  print(`host: ${hostLoad()}`);
  print();
  await benchLatency(ctx, tmp.path);
  await benchMemory(ctx, tmp.path);
  // Others' jobs on a shared node skew every row alike, but widen p90s.
  print(`host after: ${hostLoad()}`);
}

if (import.meta.main) await benchRun();
