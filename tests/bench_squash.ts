// Benchmark of SquashFS images (issue 10, item 6): `den run IMG.sqfs` beside
// the same image as a directory, in one run: the launch of /bin/true, a
// metadata-heavy start (python3 imports and a find over the image when the
// MPI test image is there, a find over busybox's otherwise), and the size
// of the file against the directory. Run as `deno run -A
// tests/bench_squash.ts`; it reports, it never asserts.
//
// Every command runs as the unprivileged user (setpriv when we are root);
// rounds are interleaved, each starting one further along, so drift on the
// host falls on every row alike. The .sqfs is made with den's own
// mksquashfs arguments (cli/squash.ts).

import { buildBusyboxImage, exists, mpiImage, ROOT, runAsTestUser, tempDir } from "./_helpers.ts";
import { fmt, hostLoad, median, pad, print, userEnv } from "./_bench.ts";
import { mksquashfsArgs } from "../cli/squash.ts";

/** Timed runs of each row, after WARMUP untimed rounds. */
const LAUNCH_RUNS = 20;
const HEAVY_RUNS = 8;
const WARMUP = 2;
/** The bar of issue 10: a .sqfs launches within 1.2x the directory's time. */
const BAR_LAUNCH_RATIO = 1.2;
const PYTHON_IMPORTS = "import email, json, http.client, xml.dom.minidom, unittest";
/**
 * The host's directories bound into the container: a directory image shares
 * the host's /tmp filesystem, so -xdev alone would walk the host's /tmp.
 */
const FIND_PRUNE = String.raw`\( -path /tmp -o -path /dev -o -path /proc -o -path /sys \)`;

interface Context {
  env: Record<string, string>;
  user: string;
}

interface Image {
  /** Short name for the key lines: "busybox", "bookworm". */
  name: string;
  dir: string;
  sqfs: string;
  hasPython: boolean;
}

interface Row {
  key: string;
  argv: string[];
  times: number[];
  /** What the command printed the first time (a sanity check of the pair). */
  said?: string;
}

/** `den run IMAGE -- CMD...` as the user runs it from a checkout. */
function denRun(image: string, cmd: string[]): string[] {
  return [Deno.execPath(), "run", "-A", "cli/main.ts", "run", image, "--", ...cmd];
}

/** Run argv once as the user: milliseconds from spawn to exit, and stdout. */
async function timeOnce(ctx: Context, row: Row): Promise<number> {
  const start = performance.now();
  const r = await runAsTestUser(row.argv, { env: ctx.env, cwd: ROOT });
  const ms = performance.now() - start;
  if (r.code !== 0) {
    throw new Error(`bench ${row.key}: exit ${r.code}: ${row.argv.join(" ")}\n${r.stderr.trim()}`);
  }
  row.said ??= r.stdout.trim();
  return ms;
}

/** Interleaved rounds of rows; returns their medians by key. */
async function measure(ctx: Context, rows: Row[], runs: number): Promise<Map<string, number>> {
  for (let round = 0; round < WARMUP; round++) {
    for (const row of rows) await timeOnce(ctx, row);
  }
  for (let round = 0; round < runs; round++) {
    for (let i = 0; i < rows.length; i++) {
      const row = rows[(round + i) % rows.length]!;
      row.times.push(await timeOnce(ctx, row));
    }
  }
  return new Map(rows.map((r) => [r.key, median(r.times)]));
}

/** Pack dir into file as `den unpack ... IMG.sqfs` does; seconds taken. */
function packSquash(dir: string, file: string): number {
  const started = performance.now();
  const r = new Deno.Command("mksquashfs", {
    args: mksquashfsArgs(dir, file, 0),
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!r.success) {
    throw new Error(`mksquashfs ${dir}: ${new TextDecoder().decode(r.stderr).trim()}`);
  }
  Deno.chmodSync(file, 0o644);
  return (performance.now() - started) / 1000;
}

/** Bytes of disk du counts for path, and its entries (files, dirs, links). */
function diskUsage(path: string): { bytes: number; entries: number } {
  const du = new Deno.Command("du", { args: ["-sx", "-B1", path], stdout: "piped" }).outputSync();
  const bytes = Number(new TextDecoder().decode(du.stdout).split("\t")[0]);
  const find = new Deno.Command("find", { args: [path, "-xdev"], stdout: "piped" }).outputSync();
  const entries = new TextDecoder().decode(find.stdout).split("\n").filter(Boolean).length;
  return { bytes, entries };
}

/** The images: busybox always, the MPI test image (python3) when there is one. */
function images(tmp: string): { list: Image[]; note?: string } {
  const bb = buildBusyboxImage(`${tmp}/busybox`);
  // busybox's find, for the metadata-heavy row (the helper's applets lack it).
  Deno.symlinkSync("busybox", `${bb}/bin/find`);
  const list: Image[] = [{
    name: "busybox",
    dir: bb,
    sqfs: `${tmp}/busybox.sqfs`,
    hasPython: false,
  }];
  let mpi: string | undefined;
  let note: string | undefined;
  try {
    mpi = mpiImage();
    if (!mpi) note = "no MPI test image (needs root, debootstrap and mpirun)";
  } catch (e) {
    note = `no MPI test image: ${(e as Error).message}`;
  }
  if (mpi) {
    list.push({
      name: "bookworm",
      dir: mpi,
      sqfs: `${tmp}/bookworm.sqfs`,
      hasPython: exists(`${mpi}/usr/bin/python3`),
    });
  }
  return { list, note };
}

function table(title: string, rows: Row[], medians: Map<string, number>): void {
  print(title);
  print(`${"row".padEnd(26)}${pad("median ms", 10)}${pad("min ms", 9)}${pad("max ms", 9)}`);
  for (const r of rows) {
    print(
      `${r.key.padEnd(26)}${pad(fmt(medians.get(r.key)!), 10)}` +
        `${pad(fmt(Math.min(...r.times)), 9)}${pad(fmt(Math.max(...r.times)), 9)}`,
    );
  }
}

/** Launch, metadata-heavy start and size of .sqfs images against directories. */
export async function benchSquash(): Promise<void> {
  print(`SquashFS images: den run IMG.sqfs against the same image as a directory`);
  const missing = ["mksquashfs", "squashfuse"].filter((c) =>
    !(Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":").some((d) => exists(`${d}/${c}`))
  );
  if (missing.length) {
    print(`skipped: ${missing.join(", ")} not found (apt-get install squashfs-tools squashfuse)`);
    print(`squash: skipped (${missing.join(", ")} not found)`);
    print();
    return;
  }
  await using tmp = tempDir("den-bench-squash-");
  const ctx: Context = userEnv(tmp.path);
  const { list, note } = images(tmp.path);
  if (note) print(`note: ${note}; busybox rows only`);
  print(`host: ${hostLoad()}; as user ${ctx.user}`);
  print();

  // Size, and how long packing takes.
  for (const img of list) {
    const seconds = packSquash(img.dir, img.sqfs);
    const dir = diskUsage(img.dir);
    const sqfs = Deno.statSync(img.sqfs).size;
    print(
      `${img.name}: directory ${fmt(dir.bytes / 1048576)} MiB on disk (${dir.entries} entries), ` +
        `.sqfs ${fmt(sqfs / 1048576)} MiB (zstd, mksquashfs ${fmt(seconds, 1)} s)`,
    );
    print(`squash ${img.name} dir_mib: ${fmt(dir.bytes / 1048576)}`);
    print(`squash ${img.name} sqfs_mib: ${fmt(sqfs / 1048576)}`);
    print(`squash ${img.name} entries: ${dir.entries}`);
    print(`ratio squash ${img.name} size sqfs/dir: ${fmt(sqfs / dir.bytes, 2)}`);
  }
  print();

  // Launch: /bin/true, every image both ways, all rows interleaved.
  const launch: Row[] = list.flatMap((img) => [
    { key: `${img.name} dir`, argv: denRun(img.dir, ["/bin/true"]), times: [] },
    { key: `${img.name} sqfs`, argv: denRun(img.sqfs, ["/bin/true"]), times: [] },
  ]);
  // The first den run fills the empty DENO_DIR: not a launch to time.
  await timeOnce(ctx, { key: "cold", argv: denRun(list[0]!.dir, ["/bin/true"]), times: [] });
  const lm = await measure(ctx, launch, LAUNCH_RUNS);
  table(
    `launch: den run IMG -- /bin/true, ${LAUNCH_RUNS} runs each, interleaved, ` +
      `after ${WARMUP} warm-up rounds`,
    launch,
    lm,
  );
  print();
  for (const img of list) {
    const dir = lm.get(`${img.name} dir`)!, sqfs = lm.get(`${img.name} sqfs`)!;
    print(`launch squash ${img.name} dir median_ms: ${fmt(dir)}`);
    print(`launch squash ${img.name} sqfs median_ms: ${fmt(sqfs)}`);
    print(`ratio launch ${img.name} sqfs/dir: ${fmt(sqfs / dir, 2)}`);
    print(`overhead launch ${img.name} sqfs-dir_ms: ${fmt(sqfs - dir)}`);
    print(
      `bar ${img.name} sqfs launch <= ${BAR_LAUNCH_RATIO}x dir: ` +
        `${sqfs / dir <= BAR_LAUNCH_RATIO ? "pass" : "FAIL"} (${fmt(sqfs / dir, 2)}x)`,
    );
  }
  print();

  // Metadata-heavy starts: many lookups and small reads in the image.
  const heavy: Row[] = [];
  for (const img of list) {
    const tasks: [string, string[]][] = [
      ["find", ["sh", "-c", `find / -xdev ${FIND_PRUNE} -prune -o -print 2>/dev/null | wc -l`]],
    ];
    if (img.hasPython) tasks.unshift(["python", ["python3", "-c", PYTHON_IMPORTS]]);
    for (const [task, cmd] of tasks) {
      for (const kind of ["dir", "sqfs"] as const) {
        heavy.push({
          key: `${img.name} ${task} ${kind}`,
          argv: denRun(kind === "dir" ? img.dir : img.sqfs, cmd),
          times: [],
        });
      }
    }
  }
  const hm = await measure(ctx, heavy, HEAVY_RUNS);
  table(
    `metadata-heavy start: den run IMG -- CMD, ${HEAVY_RUNS} runs each, interleaved ` +
      `(python: python3 -c '${PYTHON_IMPORTS}'; find: find / -xdev | wc -l, host binds pruned)`,
    heavy,
    hm,
  );
  print();
  for (let i = 0; i < heavy.length; i += 2) {
    const dir = heavy[i]!, sqfs = heavy[i + 1]!;
    const name = dir.key.replace(/ dir$/, "");
    const d = hm.get(dir.key)!, s = hm.get(sqfs.key)!;
    print(`heavy squash ${name} dir median_ms: ${fmt(d)}`);
    print(`heavy squash ${name} sqfs median_ms: ${fmt(s)}`);
    print(`ratio heavy ${name} sqfs/dir: ${fmt(s / d, 2)}`);
    if (dir.said !== sqfs.said) {
      print(`  note: ${name} printed "${dir.said}" from the directory, "${sqfs.said}" from .sqfs`);
    }
  }
  print(`host after: ${hostLoad()}`);
  print();
}

if (import.meta.main) await benchSquash();
