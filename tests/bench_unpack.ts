// Benchmark: den unpack vs GNU tar on a multi-layer gzip docker-archive of
// real files (many small headers, some big libraries), same machine, same run.
//
//   deno run -A tests/bench_unpack.ts        (DEN_BENCH_DIR to move scratch)
//
// Bar: den at least 1.25x GNU tar's speed, peak RSS under 256 MiB.
import { createHash } from "node:crypto";
import { info } from "../cli/output.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Layers: [name, tar -C / arguments]. About 480 MB of content. */
const LAYERS: [string, string[]][] = [
  ["small", ["usr/include"]],
  ["mixed", ["usr/share/locale", "usr/share/perl", "usr/lib/python3"]],
  ["large", [
    "usr/lib/x86_64-linux-gnu/libLLVM-15.so.1",
    "usr/lib/x86_64-linux-gnu/libicudata.so.72.1",
    "usr/lib/x86_64-linux-gnu/libz3.so.4",
  ]],
];

export async function run(cmd: string[], opts: { cwd?: string } = {}): Promise<string> {
  const out = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    cwd: opts.cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd.join(" ")} failed: ${text}`);
  return text;
}

async function sha256File(path: string): Promise<string> {
  return "sha256:" + (await run(["sha256sum", path])).split(" ")[0];
}

/** Build (once) the archive; returns its path and the layer files. */
export async function buildArchive(
  dir: string,
): Promise<{ archive: string; layers: string[]; bytes: number }> {
  // v2: the config is named by its digest, as docker and podman write it
  // (den refuses a config whose digest nothing declares).
  const archive = `${dir}/bench-docker-v2.tar`;
  const layers = LAYERS.map(([n]) => `${dir}/layers/${n}.tar.gz`);
  const sizeOf = async () => {
    let bytes = 0;
    for (const [, paths] of LAYERS) {
      bytes += Number(
        (await run(["du", "-sbL", "--", ...paths.map((p) => `/${p}`)]))
          .trim().split("\n").reduce((n, l) => n + Number(l.split("\t")[0]), 0),
      );
    }
    return bytes;
  };
  try {
    Deno.statSync(archive);
    return { archive, layers, bytes: await sizeOf() };
  } catch {
    // build it
  }
  Deno.mkdirSync(`${dir}/layers`, { recursive: true });
  const diffIds = await Promise.all(LAYERS.map(async ([name, paths]) => {
    const raw = `${dir}/layers/${name}.tar`;
    await run(["tar", "-C", "/", "-cf", raw, "--", ...paths.filter((p) => exists(`/${p}`))]);
    const id = await sha256File(raw);
    await run(["gzip", "-f", raw]);
    return id;
  }));
  const stage = `${dir}/stage`;
  Deno.mkdirSync(stage, { recursive: true });
  const names: string[] = [];
  for (const [i, [name]] of LAYERS.entries()) {
    Deno.copyFileSync(`${dir}/layers/${name}.tar.gz`, `${stage}/${i}-${name}.tar.gz`);
    names.push(`${i}-${name}.tar.gz`);
  }
  const config = JSON.stringify({
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/usr/bin:/bin"], Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: diffIds },
  });
  const configName = `${createHash("sha256").update(config).digest("hex")}.json`;
  Deno.writeTextFileSync(`${stage}/${configName}`, config);
  Deno.writeTextFileSync(
    `${stage}/manifest.json`,
    JSON.stringify([{ Config: configName, RepoTags: ["bench:latest"], Layers: names }]),
  );
  await run(["tar", "-C", stage, "-cf", archive, "manifest.json", configName, ...names]);
  Deno.removeSync(stage, { recursive: true });
  return { archive, layers, bytes: await sizeOf() };
}

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** Run under /usr/bin/time -v: wall seconds and peak RSS in KiB. */
export async function timed(cmd: string[]): Promise<{ seconds: number; rssKiB: number }> {
  const t0 = performance.now();
  const text = await run(["/usr/bin/time", "-v", ...cmd]);
  const seconds = (performance.now() - t0) / 1000;
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(text)?.[1] ?? NaN);
  return { seconds, rssKiB: rss };
}

/** Remove trees left by an earlier run; wait out ext4's reuse delay if any. */
export async function removeOld(dir: string): Promise<void> {
  let removed = false;
  for (const e of Deno.readDirSync(dir)) {
    if (e.name.startsWith("out")) {
      Deno.removeSync(`${dir}/${e.name}`, { recursive: true });
      removed = true;
    }
  }
  if (removed) {
    // ext4 without a journal skips inodes freed in the last ~30-60 s when it
    // allocates new ones (fs/ext4/ialloc.c, recently_deleted()), scanning the
    // whole group for each create: right after a big `rm -rf` every create is
    // several times slower. Timed runs must not pay for the previous cleanup.
    info("bench: waiting 70 s for freed inodes to age (ext4 recently_deleted)");
    await run(["sync"]);
    await new Promise((r) => setTimeout(r, 70_000));
  }
}

/** Build the archive if needed, time both tools (best of 3), print results. */
export async function benchUnpack(): Promise<void> {
  const dir = Deno.env.get("DEN_BENCH_DIR") ?? `/var/tmp/den-bench-${Deno.uid()}`;
  const rounds = Number(Deno.env.get("DEN_BENCH_ROUNDS") ?? 3);
  Deno.mkdirSync(dir, { recursive: true });
  info("bench: preparing archive (first run builds it; takes a minute)");
  const { archive, layers, bytes } = await buildArchive(dir);
  await removeOld(dir);
  // Warm the page cache so both read from memory.
  await run(["cat", archive, ...layers], {}).catch(() => "");
  // Every run writes a fresh tree, and nothing is deleted until all are done
  // (see removeOld); the order alternates so neither always goes first.
  const tarTimes: number[] = [];
  const denTimes: number[] = [];
  let rss = 0;
  const runTar = async (out: string) => {
    Deno.mkdirSync(out);
    const t0 = performance.now();
    for (const l of layers) await run(["tar", "-xzf", l, "-C", out]);
    tarTimes.push((performance.now() - t0) / 1000);
  };
  const runDen = async (out: string) => {
    const r = await timed([
      "deno",
      "run",
      "-A",
      `${REPO}/cli/main.ts`,
      "unpack",
      "-q",
      archive,
      out,
    ]);
    denTimes.push(r.seconds);
    rss = Math.max(rss, r.rssKiB);
  };
  try {
    for (let round = 0; round < rounds; round++) {
      await run(["sync"]);
      if (round % 2 === 0) {
        await runTar(`${dir}/out-tar-${round}`);
        await runDen(`${dir}/out-den-${round}`);
      } else {
        await runDen(`${dir}/out-den-${round}`);
        await runTar(`${dir}/out-tar-${round}`);
      }
      info(
        `bench: round ${round + 1}: tar ${tarTimes.at(-1)!.toFixed(2)} s, den ${
          denTimes.at(-1)!.toFixed(2)
        } s`,
      );
    }
  } finally {
    for (const e of Deno.readDirSync(dir)) {
      if (e.name.startsWith("out")) Deno.removeSync(`${dir}/${e.name}`, { recursive: true });
    }
  }
  const tarBest = Math.min(...tarTimes);
  const denBest = Math.min(...denTimes);
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const mb = bytes / 1e6;
  info(`bench: ${LAYERS.length} gzip layers, ${mb.toFixed(0)} MB of content, best of ${rounds}`);
  info(
    `bench: GNU tar -xzf per layer: ${tarBest.toFixed(2)} s (${(mb / tarBest).toFixed(0)} MB/s)` +
      ` median ${median(tarTimes).toFixed(2)} s`,
  );
  info(
    `bench: den unpack:            ${denBest.toFixed(2)} s (${(mb / denBest).toFixed(0)} MB/s)` +
      ` median ${median(denTimes).toFixed(2)} s`,
  );
  info(`bench: speed ratio den/tar: ${(tarBest / denBest).toFixed(2)}x (bar: 1.25x)`);
  info(`bench: den peak RSS: ${(rss / 1024).toFixed(0)} MiB (bar: < 256 MiB)`);
}

if (import.meta.main) await benchUnpack();
