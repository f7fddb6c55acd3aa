// --join, --join-ct, --join-tag, --join-pid on real containers (busybox
// image, as the unprivileged test user): peers share user and mount
// namespaces, ch-run's messages and errors, nothing left behind.

import { equal, match, notEqual, ok } from "node:assert/strict";
import { buildBusyboxImage, den, hasUserns, HAVE_BUSYBOX, spawnDen, tempDir } from "./_helpers.ts";

const ignore = !HAVE_BUSYBOX || !hasUserns();
const work = ignore ? undefined : tempDir("den-join-test-");
const IMG = work ? buildBusyboxImage(`${work.path}/img`) : "/nonexistent";
const OUT = work?.path ?? "/nonexistent";

function t(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn });
}

/** Shell that writes the container's user and mount namespace ids to FILE,
 * then sleeps SECONDS. */
const PRINTNS = '{ readlink /proc/self/ns/user; readlink /proc/self/ns/mnt; } > "$1.tmp" && ' +
  'busybox mv "$1.tmp" "$1"; sleep "$2"';

async function waitForFile(path: string, ms = 20000): Promise<string> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      return Deno.readTextFileSync(path);
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`timed out waiting for ${path}`);
}

/** den run args: print namespaces to OUT/file, sleep secs; with join options. */
const printns = (join: string[], file: string, secs: number) => [
  "run",
  "-v",
  ...join,
  IMG,
  "--",
  "sh",
  "-c",
  PRINTNS,
  "sh",
  `${OUT}/${file}`,
  String(secs),
];
const peer = (tag: string, ct: number, file: string, secs: number) =>
  printns([`--join-ct=${ct}`, `--join-tag=${tag}`], file, secs);

/** den's rendezvous sockets, from /proc/net/unix (abstract: "@den-join/"). */
const joinSockets = () =>
  Deno.readTextFileSync("/proc/net/unix").split("\n").filter((l) => l.includes("@den-join/"));

t("two peers share user and mount namespaces; ch-run's messages", async () => {
  const before = joinSockets().length;
  const first = spawnDen(peer("two", 2, "two.1", 3));
  const ns1 = await waitForFile(`${OUT}/two.1`);
  const second = await den(peer("two", 2, "two.2", 0));
  equal(second.code, 0, second.stderr);
  equal(Deno.readTextFileSync(`${OUT}/two.2`), ns1);
  const r1 = await first.output;
  equal(r1.code, 0, r1.stderr);
  match(r1.stderr, /^den\[\d+\]: join: 1 2 two 0$/m);
  match(r1.stderr, /join: I won/);
  match(r1.stderr, /join: 1 peers left excluding myself/);
  match(second.stderr, /join: I lost/);
  match(second.stderr, new RegExp(`joining namespaces of pid ${first.pid}`));
  match(second.stderr, /join: 0 peers left/);
  // Not the host's namespaces.
  notEqual(ns1.split("\n")[0], Deno.readLinkSync("/proc/self/ns/user"));
  equal(joinSockets().length, before, "a rendezvous socket is left");
});

t("--join-pid joins a running den's container", async () => {
  const first = spawnDen(printns([], "pid.1", 3));
  const ns1 = await waitForFile(`${OUT}/pid.1`);
  const second = await den(printns([`--join-pid=${first.pid}`], "pid.2", 0));
  equal(second.code, 0, second.stderr);
  match(second.stderr, new RegExp(`join: 0 0 \\(null\\) ${first.pid}`));
  equal(Deno.readTextFileSync(`${OUT}/pid.2`), ns1);
  equal((await first.output).code, 0);
});

t("a peer that starts after the first peer's command ended still joins its group", async () => {
  const first = spawnDen(peer("after", 2, "after.1", 0));
  const ns1 = await waitForFile(`${OUT}/after.1`);
  await new Promise((r) => setTimeout(r, 500)); // the first command is long done
  const second = await den(peer("after", 2, "after.2", 0));
  equal(second.code, 0, second.stderr);
  match(second.stderr, new RegExp(`joining namespaces of pid ${first.pid}`));
  equal(Deno.readTextFileSync(`${OUT}/after.2`), ns1);
  const r1 = await first.output; // the first den waited for it, then left
  equal(r1.code, 0, r1.stderr);
  match(r1.stderr, /join: command done; waiting for 1 peers/);
});

t("a late peer joins after the first one was killed, while another peer lives", async () => {
  const first = spawnDen(peer("late", 3, "late.1", 30));
  await waitForFile(`${OUT}/late.1`);
  const second = spawnDen(peer("late", 3, "late.2", 4));
  const ns2 = await waitForFile(`${OUT}/late.2`);
  first.kill();
  await first.output; // the server is gone; the second peer takes over
  await new Promise((r) => setTimeout(r, 600));
  const third = await den(peer("late", 3, "late.3", 0));
  equal(third.code, 0, third.stderr);
  match(third.stderr, /join: I lost/);
  match(third.stderr, new RegExp(`joining namespaces of pid ${second.pid}`));
  equal(Deno.readTextFileSync(`${OUT}/late.3`), ns2);
  equal(Deno.readTextFileSync(`${OUT}/late.1`), ns2);
  second.kill();
  await second.output;
});

t("kill -9 of the first peer leaves nothing; the next run starts a new group", async () => {
  const shm = [...Deno.readDirSync("/dev/shm")].length;
  const sockets = joinSockets().length;
  const first = spawnDen(peer("killed", 2, "killed.1", 30));
  const ns1 = await waitForFile(`${OUT}/killed.1`);
  first.kill();
  await first.output;
  equal(joinSockets().length, sockets, "the killed peer's socket is left");
  const again = await den(peer("killed", 2, "killed.2", 0), {
    env: { DEN_JOIN_TIMEOUT: "5" },
  });
  // Alone now: it wins a new group and runs (the group never completes).
  equal(again.code, 0, again.stderr);
  match(again.stderr, /join: I won/);
  notEqual(Deno.readTextFileSync(`${OUT}/killed.2`), ns1);
  equal([...Deno.readDirSync("/dev/shm")].length, shm, "something was left in /dev/shm");
});

t("many peers whose commands exit at once all succeed", async () => {
  // The first peer's container may be gone before the others connect: they
  // start over (a new group) instead of failing.
  for (let round = 0; round < 3; round++) {
    const peers = Array.from(
      { length: 8 },
      () => den(["run", "--join-ct=8", `--join-tag=fast${round}`, IMG, "--", "true"]),
    );
    for (const r of await Promise.all(peers)) equal(r.code, 0, r.stderr);
  }
});

t("a peer gives up after DEN_JOIN_TIMEOUT with one line naming the tag", async () => {
  const first = spawnDen(peer("stuck", 2, "stuck.1", 30));
  await waitForFile(`${OUT}/stuck.1`);
  Deno.kill(first.pid, "SIGSTOP"); // the server can no longer answer
  try {
    const t0 = Date.now();
    const r = await den(peer("stuck", 2, "stuck.2", 0), { env: { DEN_JOIN_TIMEOUT: "2" } });
    equal(r.code, 31, r.stderr);
    match(
      r.stderr,
      new RegExp(
        `^den: error: join: timed out after 2 s waiting for peer group "stuck": ` +
          `the first peer \\(pid ${first.pid}\\) did not answer$`,
        "m",
      ),
    );
    ok(Date.now() - t0 < 15000);
  } finally {
    Deno.kill(first.pid, "SIGCONT");
    first.kill();
    await first.output;
  }
});

t("join errors: one line, exit 31, ch-run's wording", async () => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["--join"], {}, /^den: error: join: no valid peer group size found$/m],
    [["--join-ct=a"], {}, /--join-ct: no digits found/],
    [["--join-ct=1a"], {}, /--join-ct: extra characters after digits/],
    [["--join-ct=2147483648"], {}, /--join-ct: out of range/],
    [["--join"], { SLURM_CPUS_ON_NODE: "-1" }, /join: no valid peer group size found/],
    [["--join"], { SLURM_CPUS_ON_NODE: "a" }, /SLURM_CPUS_ON_NODE: no digits found/],
    [["--join-tag="], { SLURM_CPUS_ON_NODE: "1" }, /join: peer group tag cannot be empty string/],
    [["--join-pid=1"], {}, /join: can't open \/proc\/1\/ns\/user: Permission denied/],
    [
      ["--join-pid=2147483647"],
      {},
      /join: no PID 2147483647: \/proc\/2147483647\/ns\/user not found/,
    ],
  ];
  for (const [opts, env, want] of cases) {
    const r = await den(["run", ...opts, IMG, "--", "true"], { env });
    equal(r.code, 31, `${opts}: ${r.stderr}`);
    match(r.stderr, want);
    equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  // From the environment, extra characters are fine (strtol), as in ch-run.
  const r = await den(["run", "-v", "--join", IMG, "--", "true"], {
    env: { SLURM_CPUS_ON_NODE: "1foo" },
  });
  equal(r.code, 0, r.stderr);
  match(r.stderr, /join: peer group size from SLURM_CPUS_ON_NODE/);
  ok(/join: peer group tag from getppid\(2\)/.test(r.stderr));
});

Deno.test({
  name: "join tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
