// Integration tests of `den run IMG.sqfs` as the unprivileged test user:
// the image mounted by squashfuse in the container's own namespaces, and
// nothing (process, mount, temporary file) left on the host afterwards.

import { equal, match, ok } from "node:assert/strict";
import {
  buildBusyboxImage,
  den,
  denArgv,
  exists,
  hasUserns,
  HAVE_BUSYBOX,
  spawnDen,
  tempDir,
  testUser,
  testUserEnv,
  which,
} from "./_helpers.ts";

const ignore = !HAVE_BUSYBOX || !hasUserns() || !which("mksquashfs") || !which("squashfuse");
const work = ignore ? undefined : tempDir("den-squash-run-test-");
const SQFS = `${work?.path}/bb.sqfs`;
if (work) {
  const img = buildBusyboxImage(`${work.path}/img`);
  const tar = `${work.path}/bb.tar`;
  const r = new Deno.Command("tar", { args: ["-C", img, "-cf", tar, "."] }).outputSync();
  if (!r.success) throw new Error("tar failed");
  Deno.chmodSync(tar, 0o644);
  const u = await den(["unpack", "-q", tar, SQFS]);
  if (u.code !== 0) throw new Error(`den unpack: ${u.stderr}`);
}

function t(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn });
}

/** Pids of the test user's live squashfuse processes (not zombies: one
 * that outlived den is reaped by init, which may take its time). */
function squashfuses(): string[] {
  const { uid } = testUser();
  const r = new Deno.Command("pgrep", { args: ["-u", String(uid), "squashfuse"], stdout: "piped" })
    .outputSync();
  return new TextDecoder().decode(r.stdout).trim().split("\n").filter(Boolean).filter((pid) => {
    try {
      return !/^\d+ \(.*\) Z/.test(Deno.readTextFileSync(`/proc/${pid}/stat`));
    } catch {
      return false; // gone
    }
  });
}

/** Pids of the test user's processes in a mount namespace not ours. */
function containerProcesses(): string[] {
  const { uid } = testUser();
  const ours = Deno.readLinkSync("/proc/self/ns/mnt");
  const found: string[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      if (Deno.statSync(`/proc/${e.name}`).uid !== uid) continue;
      if (Deno.readLinkSync(`/proc/${e.name}/ns/mnt`) !== ours) found.push(e.name);
    } catch {
      // gone, or a zombie
    }
  }
  return found;
}

/** Nothing of a container is left: no squashfuse (it exits only when its
 * mount is gone) and no process in another mount namespace. */
async function nothingLeft(ms = 5000): Promise<void> {
  ok(
    await until(() => squashfuses().length === 0 && containerProcesses().length === 0, ms),
    `left: squashfuse ${squashfuses()}, container processes ${containerProcesses()}`,
  );
}

async function waitForFile(path: string, ms = 20_000): Promise<string> {
  ok(await until(() => exists(path), ms), `timed out waiting for ${path}`);
  return Deno.readTextFileSync(path);
}

/**
 * Shell for a container: write the id of the mount at / (mountinfo), the
 * mount namespace and the image's marker file to "$1" (atomically), then
 * run "$2" (more shell).
 */
const REPORT = '{ grep -E "^[0-9]+ [0-9]+ [^ ]+ [^ ]+ / " /proc/self/mountinfo | cut -d" " -f1; ' +
  "readlink /proc/self/ns/mnt; " +
  'cat /etc/image-marker; } > "$1.tmp" && busybox mv "$1.tmp" "$1"; eval "$2"';
const report = (file: string, then = "") => ["sh", "-c", REPORT, "sh", file, then];

function fuseMounts(): string[] {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .filter((l) => / - fuse/.test(l));
}

function tmpEntries(): string[] {
  return [...Deno.readDirSync("/tmp")].map((e) => e.name).filter((n) => n.startsWith("den"))
    .sort();
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (cond()) return true;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  return cond();
}

function sha(path: string): string {
  const r = new Deno.Command("sha256sum", { args: [path], stdout: "piped" }).outputSync();
  return new TextDecoder().decode(r.stdout).split(" ")[0]!;
}

t("den run IMG.sqfs runs the command in the image and leaves nothing behind", async () => {
  const before = tmpEntries();
  const fuseBefore = fuseMounts().length;
  const r = await den(["run", SQFS, "--", "sh", "-c", "cat /etc/image-marker; id -u; exit 3"]);
  equal(r.stderr, "");
  equal(r.stdout, `busybox test image\n${testUser().uid}\n`);
  equal(r.code, 3);
  ok(await until(() => squashfuses().length === 0, 2000), "squashfuse left running");
  equal(fuseMounts().length, fuseBefore);
  equal(tmpEntries().join(" "), before.join(" "));
});

t("den run IMG.sqfs: the image is read-only, -W writes over it, -w is a usage error", async () => {
  const hash = sha(SQFS);
  const ro = await den(["run", SQFS, "--", "touch", "/etc/x"]);
  equal(ro.code, 1);
  match(ro.stderr, /Read-only file system/);
  const w = await den(["run", "-W", SQFS, "--", "sh", "-c", "echo y > /etc/x && cat /etc/x"]);
  equal(w.stderr, "");
  equal(w.stdout, "y\n");
  equal(w.code, 0);
  const bad = await den(["run", "-w", SQFS, "--", "true"]);
  equal(bad.code, 64);
  equal(bad.stderr.split("\n")[0], "den: error: --write: a SquashFS image is read-only");
  equal(sha(SQFS), hash);
});

t("den run IMG.sqfs without squashfuse fails in one line, exit 31", async () => {
  // A PATH with setpriv (which runs den as the test user) but no squashfuse.
  const bin = `${work!.path}/bin`;
  Deno.mkdirSync(bin, { recursive: true });
  Deno.symlinkSync(which("setpriv")!, `${bin}/setpriv`);
  const r = await den(["run", SQFS, "--", "true"], { env: { PATH: bin } });
  equal(r.code, 31);
  const lines = r.stderr.trim().split("\n");
  equal(lines[0], "den: error: can't run a SquashFS image: squashfuse not found on $PATH");
  match(lines[1]!, /^den: hint: .*apt install squashfuse/);
  equal(lines.length, 2);
});

t(
  "a squashfuse that never mounts: one line after DEN_SQUASH_TIMEOUT, exit 31, nothing left",
  async () => {
    // Found before the real ones on PATH; den SIGKILLs it at the timeout.
    const bin = `${work!.path}/hang-bin`;
    Deno.mkdirSync(bin);
    Deno.writeTextFileSync(`${bin}/squashfuse_ll`, "#!/bin/sh\necho starting >&2\nexec sleep 37\n");
    Deno.chmodSync(`${bin}/squashfuse_ll`, 0o755);
    Deno.chmodSync(bin, 0o755);
    const started = Date.now();
    const r = await den(["run", SQFS, "--", "true"], {
      env: { PATH: `${bin}:/usr/bin:/bin`, DEN_SQUASH_TIMEOUT: "1" },
    });
    equal(r.code, 31, r.stderr);
    equal(
      r.stderr.split("\n")[0],
      `den: error: can't mount ${SQFS}: squashfuse did not mount it within 1 s`,
    );
    ok(Date.now() - started < 5000);
    const { uid } = testUser();
    const left = new Deno.Command("pgrep", {
      args: ["-u", String(uid), "-f", "sleep 37"],
      stdout: "piped",
    }).outputSync();
    equal(new TextDecoder().decode(left.stdout), "");
  },
);

t("den run of a file that is not SquashFS inside fails in one line, exit 31", async () => {
  const bad = `${work!.path}/bad.sqfs`;
  Deno.writeFileSync(bad, new TextEncoder().encode("hsqs but not really"));
  Deno.chmodSync(bad, 0o644);
  const r = await den(["run", bad, "--", "true"]);
  equal(r.code, 31);
  match(r.stderr.split("\n")[0]!, /^den: error: can't mount .*bad\.sqfs: squashfuse exited/);
  ok(await until(() => squashfuses().length === 0, 2000));
});

t("kill -9 of den running IMG.sqfs leaves no squashfuse and no mount", async () => {
  const fuseBefore = fuseMounts().length;
  const [cmd, ...args] = denArgv(["run", SQFS, "--", "sleep", "60"]);
  const child = new Deno.Command(cmd!, {
    args,
    env: testUserEnv(),
    clearEnv: true,
    cwd: "/",
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    ok(await until(() => squashfuses().length > 0, 10_000), "squashfuse never started");
    // setpriv execs den: the child is den itself.
    child.kill("SIGKILL");
    await child.status;
    ok(await until(() => squashfuses().length === 0, 5000), "squashfuse outlived den");
    equal(fuseMounts().length, fuseBefore);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
  }
});

t("a failed setup after the mount leaves no squashfuse and no mount", async () => {
  const r = await den(["run", "-b", "/nonexistent-den-src", SQFS, "--", "true"]);
  equal(r.code, 31, r.stderr);
  match(r.stderr, /can't bind: source not found/);
  await nothingLeft(2000);
});

t("the mount outlives the command while a background process it left runs", async () => {
  // ch-run 0.31 unmounts when the command exits (the background process
  // then reads ENOTCONN or dies of SIGBUS); den keeps the mount until the
  // last process of the container is gone.
  for (const [name, start] of [["bg", ""], ["setsid", "setsid "]]) {
    const out = `${work!.path}/${name}`;
    const bg = `${start}sh -c 'sleep 1; cat /etc/image-marker > ${out}.tmp 2>&1; ` +
      `mv ${out}.tmp ${out}' </dev/null >/dev/null 2>&1 &`;
    const r = await den(["run", SQFS, "--", "sh", "-c", `${bg} exit 0`]);
    equal(r.code, 0, r.stderr);
    equal(squashfuses().length, 1, `${name}: squashfuse should serve the background process`);
    equal(await waitForFile(out), "busybox test image\n", name);
    await nothingLeft();
  }
});

t("joined peers share one SquashFS mount and see the image; nothing is left", async () => {
  const files = [1, 2, 3].map((i) => `${work!.path}/share.${i}`);
  const args = (file: string, then: string) => [
    "run",
    "--join",
    "--join-ct=3",
    "--join-tag=share",
    SQFS,
    "--",
    ...report(file, then),
  ];
  const first = spawnDen(args(files[0]!, "sleep 2"));
  await waitForFile(files[0]!);
  const others = await Promise.all([den(args(files[1]!, "")), den(args(files[2]!, ""))]);
  for (const r of others) equal(r.code, 0, r.stderr);
  equal((await first.output).code, 0);
  const seen = files.map((f) => Deno.readTextFileSync(f));
  equal(new Set(seen).size, 1, `peers saw different mounts:\n${seen.join("\n")}`);
  match(seen[0]!, /^\d+\nmnt:\[\d+\]\nbusybox test image\n$/);
  await nothingLeft();
});

t(
  "a late peer finds the mount after the first peer was killed, while another peer lives",
  async () => {
    const late = (i: number, then: string) => [
      "run",
      "--join-ct=3",
      "--join-tag=late",
      SQFS,
      "--",
      ...report(`${work!.path}/late.${i}`, then),
    ];
    const first = spawnDen(late(1, "exec sleep 30")); // dies with den (PDEATHSIG)
    await waitForFile(`${work!.path}/late.1`);
    const second = spawnDen(late(2, "sleep 4"));
    await waitForFile(`${work!.path}/late.2`);
    first.kill();
    await first.output; // the den that mounted the image is gone
    await new Promise((r) => setTimeout(r, 600)); // the second peer serves the group
    const third = await den(late(3, ""));
    equal(third.code, 0, third.stderr);
    const seen = [1, 2, 3].map((i) => Deno.readTextFileSync(`${work!.path}/late.${i}`));
    equal(new Set(seen).size, 1, seen.join("\n"));
    second.kill();
    await second.output;
    await nothingLeft();
  },
);

t(
  "kill -9 of the den that mounted a joined image: peers keep it, then nothing is left",
  async () => {
    const out = `${work!.path}/k9`;
    const first = spawnDen([
      "run",
      "--join-ct=2",
      "--join-tag=k9",
      SQFS,
      "--",
      ...report(`${out}.1`, "exec sleep 60"),
    ]);
    await waitForFile(`${out}.1`);
    const second = spawnDen([
      "run",
      "--join-ct=2",
      "--join-tag=k9",
      SQFS,
      "--",
      ...report(`${out}.2`, `sleep 1.5; cat /etc/image-marker > ${out}.after`),
    ]);
    await waitForFile(`${out}.2`);
    first.kill();
    await first.output;
    const r = await second.output;
    equal(r.code, 0, r.stderr);
    equal(Deno.readTextFileSync(`${out}.after`), "busybox test image\n");
    equal(Deno.readTextFileSync(`${out}.1`), Deno.readTextFileSync(`${out}.2`));
    await nothingLeft();
  },
);

t("kill -9 of every den of a joined group leaves nothing", async () => {
  const out = `${work!.path}/kall`;
  const dens = [1, 2].map((i) =>
    spawnDen([
      "run",
      "--join-ct=2",
      "--join-tag=kall",
      SQFS,
      "--",
      ...report(`${out}.${i}`, "exec sleep 60"),
    ])
  );
  await waitForFile(`${out}.1`);
  await waitForFile(`${out}.2`);
  for (const d of dens) d.kill();
  for (const d of dens) await d.output;
  await nothingLeft();
});

t("--join-pid of a den running a SquashFS image sees its files", async () => {
  const out = `${work!.path}/jp`;
  const first = spawnDen(["run", SQFS, "--", ...report(`${out}.1`, "sleep 3")]);
  await waitForFile(`${out}.1`);
  const r = await den(["run", `--join-pid=${first.pid}`, SQFS, "--", ...report(`${out}.2`)]);
  equal(r.code, 0, r.stderr);
  equal(Deno.readTextFileSync(`${out}.2`), Deno.readTextFileSync(`${out}.1`));
  equal((await first.output).code, 0);
  await nothingLeft();
});

t(
  "under a launcher, ranks of a SquashFS image join (CMA stays on); --no-join turns CMA off",
  async () => {
    const joined = await den(["run", "-v", SQFS, "--", "env"], {
      env: { OMPI_COMM_WORLD_LOCAL_SIZE: "2", DEN_JOIN_TIMEOUT: "5" },
    });
    equal(joined.code, 0, joined.stderr);
    match(joined.stderr, /join: I won/);
    ok(!joined.stdout.includes("OMPI_MCA_btl_vader_single_copy_mechanism"), joined.stdout);
    // --no-join, and one rank on the node (nothing to join).
    const unjoined: [string[], Record<string, string>][] = [
      [["--no-join"], { OMPI_COMM_WORLD_LOCAL_SIZE: "2" }],
      [[], { OMPI_COMM_WORLD_LOCAL_SIZE: "1" }],
    ];
    for (const [opts, env] of unjoined) {
      const r = await den(["run", ...opts, SQFS, "--", "env"], { env });
      equal(r.code, 0, r.stderr);
      ok(r.stdout.split("\n").includes("OMPI_MCA_btl_vader_single_copy_mechanism=none"), r.stdout);
    }
  },
);

/**
 * The busybox image plus what real images hold and a SquashFS build could
 * get wrong: hard links, absolute and relative symbolic links (one
 * dangling), modes 0600/0700/0750/1777, empty files and directories, names
 * with spaces and non-ASCII, a file of several SquashFS blocks. Unpacked
 * from one archive to a directory and to a .sqfs.
 */
const RICH = work && await (async () => {
  const img = buildBusyboxImage(`${work.path}/rich-src`);
  const at = (p: string) => `${img}/${p}`;
  Deno.mkdirSync(at("usr/share/empty"), { recursive: true });
  Deno.mkdirSync(at("var/tmp"), { recursive: true });
  Deno.mkdirSync(at("root"), { mode: 0o700 });
  Deno.writeTextFileSync(at("etc/hard1"), "linked\n");
  Deno.linkSync(at("etc/hard1"), at("usr/hard2"));
  Deno.symlinkSync("/etc/image-marker", at("etc/abs-link"));
  Deno.symlinkSync("../../etc/hard1", at("usr/share/rel-link"));
  Deno.symlinkSync("nowhere", at("usr/dangling"));
  Deno.writeTextFileSync(at("usr/share/a b"), "space\n");
  Deno.writeTextFileSync(at("usr/share/\u00fcn\u00ef"), "utf-8\n");
  Deno.writeFileSync(at("usr/share/zero"), new Uint8Array());
  Deno.writeTextFileSync(at("root/secret"), "0600\n");
  Deno.chmodSync(at("root/secret"), 0o600);
  Deno.writeTextFileSync(at("usr/bin/tool"), "#!/bin/sh\necho tool\n");
  Deno.chmodSync(at("usr/bin/tool"), 0o750);
  Deno.chmodSync(at("var/tmp"), 0o1777);
  // den makes these (den run binds the host's there): /etc keeps its time.
  Deno.removeSync(at("etc/hosts"));
  Deno.removeSync(at("etc/resolv.conf"));
  const big = new Uint8Array(700_000);
  for (let i = 0; i < big.length; i += 65536) crypto.getRandomValues(big.subarray(i, i + 65536));
  Deno.writeFileSync(at("usr/share/big"), big);
  // Times to recognise: den must not change them by adding to these.
  for (const d of [".", "etc", "usr"]) Deno.utimeSync(at(d), 1e9, 1e9);
  const tar = `${work.path}/rich.tar`;
  const r = new Deno.Command("tar", { args: ["-C", img, "-cf", tar, "."] }).outputSync();
  if (!r.success) throw new Error("tar failed");
  Deno.chmodSync(tar, 0o644);
  const dir = `${work.path}/rich`;
  const sqfs = `${work.path}/rich.sqfs`;
  for (const dest of [dir, sqfs]) {
    const u = await den(["unpack", "-q", tar, dest]);
    if (u.code !== 0) throw new Error(`den unpack ${dest}: ${u.stderr}`);
  }
  return { dir, sqfs };
})();

/**
 * The image's tree as the container sees it: every entry of / but the
 * mount points den put there (/proc, /dev, /tmp, ...), with type and mode,
 * size, owner, mtime, link count and link target, then each regular file's
 * checksum. Sorted, one line each.
 */
const LIST_TREE = "set --; " +
  "for m in $(busybox cut -d' ' -f5 /proc/self/mountinfo); do " +
  '[ "$m" = / ] || set -- "$@" -o -path ".$m"; done; shift; cd / && ' +
  'busybox find . -xdev \\( "$@" \\) -prune -o -exec stat -c "%n|%f|%s|%u|%g|%Y|%h|%N" {} + ' +
  '| busybox sort && busybox find . -xdev \\( "$@" \\) -prune -o -type f ' +
  "-exec busybox md5sum {} + | busybox sort";

async function treeOf(image: string): Promise<string> {
  const r = await den(["run", "--no-passwd", image, "--", "sh", "-c", LIST_TREE]);
  equal(r.code, 0, r.stderr);
  equal(r.stderr, "");
  // A directory's size is its file system's business (ext4 says 4096,
  // squashfuse 0): not compared.
  return r.stdout.replace(/^([^|\n]*\|4[0-9a-f]{3}\|)\d+\|/gm, "$1-|");
}

t("one archive unpacked to a directory and to .sqfs: the same tree from inside", async () => {
  const dir = await treeOf(RICH!.dir);
  const sqfs = await treeOf(RICH!.sqfs);
  equal(sqfs, dir);
  // What the comparison covers is there (the listing is not empty).
  const { uid } = testUser();
  match(dir, new RegExp(`^\\./usr/hard2\\|81a4\\|7\\|${uid}\\|\\d+\\|\\d+\\|2\\|`, "m"));
  match(dir, /^\.\/var\/tmp\|43ff\|/m);
  match(dir, /^\.\/root\/secret\|8180\|/m);
  match(dir, /'\.\/usr\/dangling' -> 'nowhere'$/m);
  match(dir, /^\.\/usr\/share\/big\|81a4\|700000\|/m);
  // What den made has $SOURCE_DATE_EPOCH's time (0 here), and the root and
  // /etc, where it made ch/ and /etc/hosts, keep the archive's times.
  match(dir, /^\.\/ch\/metadata\.json\|81a4\|\d+\|\d+\|\d+\|0\|/m);
  for (const d of [".", "./etc", "./usr"]) {
    match(
      dir,
      new RegExp(`^${d.replaceAll(".", "\\.")}\\|41ed\\|-\\|\\d+\\|\\d+\\|1000000000\\|`, "m"),
    );
  }
  match(dir, /\.\/usr\/share\/\u00fcn\u00ef$/m);
});

t("-W writes over a directory and a .sqfs image; neither image changes", async () => {
  const before = await treeOf(RICH!.dir);
  const hash = sha(RICH!.sqfs);
  const change = "echo changed > /etc/image-marker && rm /usr/hard2 /usr/dangling && " +
    "mkdir /new && echo n > /new/f && touch /usr/share/empty/f && chmod 0644 /usr/bin/tool && " +
    "busybox rm -r /root && cat /etc/image-marker /new/f";
  for (const image of [RICH!.dir, RICH!.sqfs]) {
    const r = await den(["run", "-W", image, "--", "sh", "-c", change]);
    equal(r.code, 0, r.stderr);
    equal(r.stdout, "changed\nn\n");
  }
  equal(await treeOf(RICH!.dir), before);
  equal(await treeOf(RICH!.sqfs), before);
  equal(sha(RICH!.sqfs), hash);
});

t("8 containers from one .sqfs at once, each with its own mount; nothing left", async () => {
  const fuseBefore = fuseMounts().length;
  // Each container writes its mount namespace, then waits until all 8 have
  // (a namespace's number is reused once it is gone).
  const dir = `${work!.path}/eight`;
  Deno.mkdirSync(dir);
  Deno.chownSync(dir, testUser().uid, testUser().gid);
  const script = `readlink /proc/self/ns/mnt > ${dir}/$$; i=0; ` +
    `while [ "$(ls ${dir} | wc -l)" -lt 8 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; ` +
    `cat "/usr/share/a b"`;
  const runs = await Promise.all(
    Array.from({ length: 8 }, () => den(["run", RICH!.sqfs, "--", "sh", "-c", script])),
  );
  for (const r of runs) {
    equal(r.code, 0, r.stderr);
    equal(r.stdout, "space\n");
  }
  const namespaces = [...Deno.readDirSync(dir)].map((e) =>
    Deno.readTextFileSync(`${dir}/${e.name}`)
  );
  equal(namespaces.length, 8);
  equal(new Set(namespaces).size, 8, "containers shared a mount namespace");
  await nothingLeft();
  equal(fuseMounts().length, fuseBefore);
});

t("den run --feature=squash says it is there", async () => {
  equal((await den(["run", "--feature=squash"])).code, 0);
});

Deno.test({
  name: "squash run tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
