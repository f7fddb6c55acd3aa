// Benchmark: den pull from a loopback registry against what a user does
// without it, same image, same machine, same run:
//   (a) `skopeo copy` to an OCI layout, then `den unpack` of it;
//   (b) `skopeo copy` into containers-storage (what `podman pull` does);
// and a warm `den pull` (every layer in den's blob cache).
//
//   deno run -A tests/bench_pull.ts        (DEN_BENCH_DIR to move scratch)
//
// Bars (issue 9): den pull at most 0.9x the time of (a); peak RSS 256 MiB.
// The image is bench_unpack.ts's: three gzip layers, ~480 MB of real files.
import { info } from "../cli/output.ts";
import { startRegistry } from "./registry_helpers.ts";
import { buildArchive, removeOld, run, timed } from "./bench_unpack.ts";
import { median } from "./_bench.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const DEN = ["deno", "run", "-A", `${REPO}/cli/main.ts`];

/** containers-storage's overlay driver leaves its home directory mounted on itself. */
async function unmountStorage(dir: string): Promise<void> {
  await run(["umount", `${dir}/root/overlay`]).catch(() => "");
}

export async function benchPull(): Promise<void> {
  const base = Deno.env.get("DEN_BENCH_DIR") ?? `/var/tmp/den-bench-${Deno.uid()}`;
  const rounds = Number(Deno.env.get("DEN_BENCH_ROUNDS") ?? 3);
  Deno.mkdirSync(base, { recursive: true });
  info("bench: preparing the image (first run builds it; takes a minute)");
  const { archive, bytes } = await buildArchive(base);
  const dir = `${base}/pull`;
  Deno.mkdirSync(dir, { recursive: true });
  for (const e of Deno.readDirSync(dir)) await unmountStorage(`${dir}/${e.name}`);
  await removeOld(dir);
  await using registry = await startRegistry();
  const ref = `${registry.host}/bench:1`;
  await run([
    "skopeo",
    "copy",
    "--quiet",
    "--dest-tls-verify=false",
    `docker-archive:${archive}`,
    `docker://${ref}`,
  ]);
  // The registry's blobs in the page cache, for every contender alike.
  await run(["sh", "-c", `find ${registry.root} -type f -exec cat {} + >/dev/null`]);

  const times: Record<string, number[]> = { den: [], skopeoUnpack: [], storage: [], warm: [] };
  let rss = 0;
  let skopeoRss = 0;
  const den = async (args: string[]) => {
    const r = await timed([...DEN, ...args]);
    rss = Math.max(rss, r.rssKiB);
    return r.seconds;
  };
  /** skopeo's copy of the bench image from the loopback registry to dest. */
  const skopeoCopy = (dest: string) => [
    "skopeo",
    "copy",
    "--quiet",
    "--src-tls-verify=false",
    `docker://${ref}`,
    dest,
  ];
  const contenders: [string, (i: number) => Promise<number>][] = [
    ["den", (i) => den(["pull", "-q", "-s", `${dir}/out-store-${i}`, ref, `${dir}/out-den-${i}`])],
    ["skopeoUnpack", async (i) => {
      const layout = `${dir}/out-layout-${i}`;
      const copy = await timed(skopeoCopy(`oci:${layout}:bench`));
      skopeoRss = Math.max(skopeoRss, copy.rssKiB);
      return copy.seconds + await den(["unpack", "-q", layout, `${dir}/out-unpack-${i}`]);
    }],
    ["storage", async (i) => {
      const r = await timed(
        skopeoCopy(
          `containers-storage:[overlay@${dir}/out-cs-${i}/root+${dir}/out-cs-${i}/run]bench:1`,
        ),
      );
      await unmountStorage(`${dir}/out-cs-${i}`);
      return r.seconds;
    }],
  ];
  try {
    for (let round = 0; round < rounds; round++) {
      // Alternate the order so that none always goes first.
      const order = round % 2 ? [...contenders].reverse() : contenders;
      for (const [name, fn] of order) {
        await run(["sync"]);
        times[name]!.push(await fn(round));
      }
      // Warm: the same storage again, a new name; every blob is cached.
      await run(["sync"]);
      times.warm!.push(
        await den([
          "pull",
          "-q",
          "-s",
          `${dir}/out-store-${round}`,
          ref,
          `${dir}/out-warm-${round}`,
        ]),
      );
      info(
        `bench: round ${round + 1}: ` +
          Object.entries(times).map(([k, v]) => `${k} ${v.at(-1)!.toFixed(2)} s`).join(", "),
      );
    }
  } finally {
    for (const e of Deno.readDirSync(dir)) {
      if (e.name.startsWith("out")) {
        await run(["rm", "-rf", `${dir}/${e.name}`]).catch(() => "");
      }
    }
  }
  const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
  const mb = bytes / 1e6;
  info(`bench: pull of 3 gzip layers, ${mb.toFixed(0)} MB of content, median of ${rounds}`);
  info(`bench: den pull (cold):                  ${m.den!.toFixed(2)} s`);
  info(`bench: skopeo copy oci: + den unpack:    ${m.skopeoUnpack!.toFixed(2)} s`);
  info(`bench: skopeo copy containers-storage:   ${m.storage!.toFixed(2)} s`);
  info(`bench: den pull (warm, layers cached):   ${m.warm!.toFixed(2)} s`);
  info(
    `bench: ratio den pull / (skopeo + den unpack): ${
      (m.den! / m.skopeoUnpack!).toFixed(2)
    }x (bar: 0.9x); / containers-storage: ${(m.den! / m.storage!).toFixed(2)}x`,
  );
  info(
    `bench: den peak RSS: ${(rss / 1024).toFixed(0)} MiB (bar: < 256 MiB); skopeo ${
      (skopeoRss / 1024).toFixed(0)
    } MiB`,
  );
}

if (import.meta.main) await benchPull();
