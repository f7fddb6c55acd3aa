// Integration tests: the real `den run` on a busybox image, as an
// unprivileged user, checking outputs, exit codes, exact error lines,
// isolation and cleanup. Where ch-run is installed, den is compared to it.

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import {
  asTestUser,
  buildBusyboxImage,
  canMountTmpfs,
  den,
  denArgv,
  denPlainArgv,
  hasUserns,
  HAVE_BUSYBOX,
  mountsContaining,
  ROOT,
  runAsTestUser,
  tempDir,
  TEST_USER,
  testUser,
  testUserEnv,
  which,
} from "./_helpers.ts";

const ignore = !HAVE_BUSYBOX || !hasUserns();
const work = ignore ? undefined : tempDir("den-run-test-");
const IMG = work ? buildBusyboxImage(`${work.path}/img`) : "/nonexistent";
const userName = Deno.uid() === 0 ? TEST_USER : Deno.env.get("USER") ?? "";

function t(name: string, fn: () => Promise<void>, skip = false) {
  Deno.test({ name, ignore: ignore || skip, sanitizeResources: false, sanitizeOps: false, fn });
}

t("den run prints the command's output and exits 0", async () => {
  const r = await den(["run", IMG, "--", "echo", "hello"]);
  equal(r.stderr, "");
  equal(r.stdout, "hello\n");
  equal(r.code, 0);
});

t("den run works without -- like ch-run", async () => {
  const r = await den(["run", IMG, "echo", "hi"]);
  equal(r.stdout, "hi\n");
});

t("den run exits with the command's status", async () => {
  equal((await den(["run", IMG, "--", "sh", "-c", "exit 7"])).code, 7);
});

t("den run exits 128+N when the command dies of signal N", async () => {
  equal((await den(["run", IMG, "--", "sh", "-c", "kill -TERM $$"])).code, 143);
  equal((await den(["run", IMG, "--", "sh", "-c", "kill -KILL $$"])).code, 137);
});

t("den run exits 49 with ch-run's words when the command is not found", async () => {
  const r = await den(["run", IMG, "--", "nope"]);
  equal(r.stderr, "den: error: can't execve(2): nope: No such file or directory (ENOENT)\n");
  equal(r.code, 49);
});

t("den run exits 49 when the command is not executable", async () => {
  const r = await den(["run", IMG, "--", "/etc/image-marker"]);
  equal(r.stderr, "den: error: can't execve(2): /etc/image-marker: Permission denied (EACCES)\n");
  equal(r.code, 49);
});

t("den run searches the container's PATH, not the host's", async () => {
  const r = await den(["run", IMG, "--", "sh", "-c", "echo $PATH"], {
    env: { PATH: "/usr/local/bin:/usr/bin" },
  });
  equal(r.stdout, "/usr/local/bin:/usr/bin:/bin\n");
  const r2 = await den(["run", "--set-env=PATH=/nowhere", IMG, "--", "true"]);
  equal(r2.code, 49);
});

t("den run passes stdin through", async () => {
  const r = await den(["run", IMG, "--", "cat"], { stdin: "piped line\n" });
  equal(r.stdout, "piped line\n");
});

t("the image is read-only unless -w", async () => {
  const r = await den(["run", IMG, "--", "touch", "/new-file"]);
  equal(r.code, 1);
  match(r.stderr, /Read-only file system/);
  const w = await den(["run", "-w", IMG, "--", "touch", "/new-file"]);
  equal(w.code, 0);
  ok(Deno.statSync(`${IMG}/new-file`).isFile);
  Deno.removeSync(`${IMG}/new-file`);
});

t("host files outside binds are not visible", async () => {
  // /tmp in the container is the host's $TMPDIR: point it at an empty
  // directory, so that the checkout and the test's files (maybe under /tmp)
  // are outside every bind.
  const tmp = `${work!.path}/emptytmp`;
  Deno.mkdirSync(tmp);
  Deno.chmodSync(tmp, 0o777);
  Deno.writeTextFileSync(`${work!.path}/secret`, "host secret\n");
  const env = { TMPDIR: tmp };
  const script = `test -e ${ROOT}/deno.json || test -e ${work!.path}/secret || echo hidden`;
  const r = await den(["run", IMG, "--", "sh", "-c", script], { env });
  equal(r.stdout, "hidden\n");
  const root = await den(["run", IMG, "--", "ls", "/root"], { env });
  equal(root.code, 1);
  const marker = await den(["run", IMG, "--", "cat", "/etc/image-marker"], { env });
  equal(marker.stdout, "busybox test image\n");
});

t("the user keeps their ids and name; no_new_privs is set", async () => {
  const { uid, gid } = testUser();
  const r = await den([
    "run",
    IMG,
    "--",
    "sh",
    "-c",
    "id -u; id -g; id -un; grep NoNewPrivs /proc/self/status",
  ]);
  equal(r.stdout, `${uid}\n${gid}\n${userName}\nNoNewPrivs:\t1\n`);
});

t("-u and -g map the user to other ids", async () => {
  const r = await den(["run", "-u", "0", "-g", "0", IMG, "--", "id"]);
  equal(r.stdout, "uid=0(root) gid=0(root) groups=0(root)\n");
});

t("--no-passwd leaves the image's /etc/passwd", async () => {
  const r = await den(["run", "--no-passwd", IMG, "--", "cat", "/etc/passwd"]);
  equal(r.stdout, "");
});

t("the environment is the host's, adjusted as ch-run does", async () => {
  const r = await den(["run", IMG, "--", "sh", "-c", 'echo "$CH_RUNNING|${TMPDIR-unset}|$FOO"'], {
    env: { TMPDIR: "/tmp", FOO: "bar" },
  });
  equal(r.stdout, "Weird Al Yankovic|unset|bar\n");
});

t("--set-env and --unset-env apply in order", async () => {
  const r = await den([
    "run",
    "--unset-env=FO*",
    "--set-env=A=1",
    "--set-env=B=$A:2",
    IMG,
    "--",
    "sh",
    "-c",
    'echo "$A $B ${FOO-gone}"',
  ], { env: { FOO: "x" } });
  equal(r.stdout, "1 1:2 gone\n");
});

t("--set-env reads a file of NAME=VALUE lines", async () => {
  const f = `${work!.path}/env`;
  Deno.writeTextFileSync(f, "X=1\nY='quoted'\n\nZ=$X:z\n");
  Deno.chmodSync(f, 0o644);
  const r = await den(["run", `--set-env=${f}`, IMG, "--", "sh", "-c", 'echo "$X $Y $Z"']);
  equal(r.stdout, "1 quoted 1:z\n");
});

t("-b binds a host directory, -c sets the working directory", async () => {
  const dir = `${work!.path}/data`;
  Deno.mkdirSync(dir);
  Deno.writeTextFileSync(`${dir}/f`, "bound\n");
  Deno.chmodSync(dir, 0o777);
  const r = await den([
    "run",
    "-b",
    `${dir}:/mnt`,
    "-c",
    "/mnt",
    IMG,
    "--",
    "sh",
    "-c",
    "pwd; cat f; touch g",
  ]);
  equal(r.stdout, "/mnt\nbound\n");
  ok(Deno.statSync(`${dir}/g`).isFile, "binds are writable");
});

t("missing bind source: one line, exit 31", async () => {
  const r = await den(["run", "-b", "/nope", IMG, "--", "true"]);
  equal(r.stderr, "den: error: can't bind: source not found: /nope\n");
  equal(r.code, 31);
});

t("missing bind destination: ch-run's words, and a hint that -w would create it", async () => {
  const r = await den(["run", "-b", "/etc:/nope", IMG, "--", "true"]);
  equal(r.code, 31);
  equal(
    r.stderr,
    `den: error: can't mkdir: ${IMG}/nope: Read-only file system\n` +
      "den: hint: the image has no /nope; -w would create it\n",
  );
});

t("-c to a missing directory fails like ch-run", async () => {
  const r = await den(["run", "-c", "/nope", IMG, "--", "pwd"]);
  equal(r.stderr, "den: error: can't cd to /nope: No such file or directory (ENOENT)\n");
  equal(r.code, 31);
});

t("missing image, image that is a file, unknown option", async () => {
  const r = await den(["run", "/nonexistent-image", "--", "true"]);
  equal(
    r.stderr,
    "den: error: can't stat: /nonexistent-image: No such file or directory (ENOENT)\n",
  );
  equal(r.code, 31);
  const f = await den(["run", `${IMG}/etc/image-marker`, "--", "true"]);
  equal(f.stderr, `den: error: unknown image type: ${IMG}/etc/image-marker\n`);
  const u = await den(["run", "--foo", IMG, "--", "true"]);
  equal(u.code, 64);
  match(u.stderr, /^den: error: unrecognized option '--foo'\n/);
});

t("an image without /proc is refused, naming it", async () => {
  const img2 = buildBusyboxImage(`${work!.path}/noproc`);
  Deno.removeSync(`${img2}/proc`);
  const r = await den(["run", img2, "--", "true"]);
  equal(r.code, 31, r.stderr);
  match(
    r.stderr,
    new RegExp(
      `destination not found: ${img2}/proc\nden: hint: the image has no /proc; -w would create it`,
    ),
  );
  const w = await den(["run", "-w", img2, "--", "true"]);
  equal(w.code, 0, w.stderr);
  ok(Deno.statSync(`${img2}/proc`).isDirectory);
});

t("-t gives a private /tmp; the default /tmp is the host's", async () => {
  const r = await den(["run", "-t", IMG, "--", "sh", "-c", "ls -A /tmp | wc -l"]);
  equal(r.stdout.trim(), "0");
  const host = `${work!.path}/hosttmp`;
  Deno.mkdirSync(host);
  Deno.writeTextFileSync(`${host}/seen`, "");
  Deno.chmodSync(host, 0o777);
  const r2 = await den(["run", IMG, "--", "ls", "/tmp"], { env: { TMPDIR: host } });
  equal(r2.stdout, "seen\n");
});

t("nothing is left behind: no mounts, no temporary files", async () => {
  const tmp = `${work!.path}/cleantmp`;
  Deno.mkdirSync(tmp);
  Deno.chmodSync(tmp, 0o777);
  await den(["run", IMG, "--", "true"], { env: { TMPDIR: tmp } });
  await den(["run", "-b", "/nope", IMG, "--", "true"], { env: { TMPDIR: tmp } });
  await den(["run", IMG, "--", "nope"], { env: { TMPDIR: tmp } });
  deepStrictEqual([...Deno.readDirSync(tmp)], []);
  deepStrictEqual(mountsContaining(IMG), []);
});

for (const sig of ["SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"] as const) {
  t(`${sig} to den reaches the command`, async () => {
    const name = sig.slice(3);
    const [cmd, ...args] = denArgv([
      "run",
      IMG,
      "--",
      "sh",
      "-c",
      `trap "echo got ${name}; exit 3" ${name}; echo ready; while :; do sleep 0.1; done`,
    ]);
    const child = new Deno.Command(cmd!, { args, stdout: "piped", stderr: "piped" }).spawn();
    const reader = child.stdout.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    equal(first, "ready\n");
    child.kill(sig);
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    const status = await child.status;
    await child.stderr.cancel();
    equal(rest, `got ${name}\n`);
    equal(status.code, 3);
  });
}

t("killing den kills the container's process", async () => {
  const dir = `${work!.path}/pid`;
  Deno.mkdirSync(dir);
  Deno.chmodSync(dir, 0o777);
  const [cmd, ...args] = denArgv([
    "run",
    "-b",
    `${dir}:/mnt`,
    IMG,
    "--",
    "sh",
    "-c",
    "echo $$ > /mnt/pid; exec sleep 60",
  ]);
  const child = new Deno.Command(cmd!, { args, stdout: "null", stderr: "null" }).spawn();
  let pid = "";
  for (let i = 0; i < 100 && !pid; i++) {
    await new Promise((r) => setTimeout(r, 50));
    try {
      pid = Deno.readTextFileSync(`${dir}/pid`).trim();
    } catch { /* not yet */ }
  }
  ok(pid, "container wrote its pid");
  child.kill("SIGKILL");
  await child.status;
  let alive = true;
  for (let i = 0; i < 40 && alive; i++) {
    await new Promise((r) => setTimeout(r, 50));
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      alive = !/\) Z /.test(stat);
    } catch {
      alive = false;
    }
  }
  ok(!alive, `container process ${pid} outlived den`);
});

t("a named image in storage runs by name", async () => {
  const storage = `${work!.path}/storage`;
  Deno.mkdirSync(`${storage}/img`, { recursive: true, mode: 0o700 });
  buildBusyboxImage(`${storage}/img/bb`);
  // The storage belongs to the user who runs den (checked before use).
  const { uid, gid } = testUser();
  Deno.chownSync(storage, uid, gid);
  Deno.chownSync(`${storage}/img`, uid, gid);
  const r = await den(["run", "-s", storage, "bb", "--", "cat", "/etc/image-marker"]);
  equal(r.stdout, "busybox test image\n");
  const e = await den(["run", "bb", "--", "true"], { env: { DEN_STORAGE: storage } });
  equal(e.code, 0);
});

t("--dry-run prints the plan without running", async () => {
  const r = await den(["run", "--dry-run", IMG, "--", "touch", "/x"]);
  equal(r.code, 0);
  const plan = JSON.parse(r.stdout);
  deepStrictEqual(plan.argv, ["touch", "/x"]);
  equal(plan.ops.at(-1).kind, "remount-ro");
});

t(
  "mpirun -np 4 den run: ranks see their variables, output and status come back",
  async () => {
    // mpirun runs as the test user too.
    const mpirun = async (np: number, script: string) => {
      const argv = [
        "mpirun",
        "--oversubscribe",
        "-np",
        String(np),
        ...denPlainArgv(["run", IMG, "--", "sh", "-c", script]),
      ];
      const r = await runAsTestUser(argv);
      return { code: r.code, out: r.stdout, err: r.stderr };
    };
    const r = await mpirun(4, 'echo "rank $OMPI_COMM_WORLD_RANK of $OMPI_COMM_WORLD_SIZE"');
    const out = r.out.trim().split("\n").sort();
    deepStrictEqual(out, ["rank 0 of 4", "rank 1 of 4", "rank 2 of 4", "rank 3 of 4"], r.err);
    equal(r.code, 0);
    // A failing rank's status comes back through den and mpirun.
    const f = await mpirun(2, "exit $((OMPI_COMM_WORLD_RANK + 3))");
    ok(f.code === 3 || f.code === 4, `mpirun exit status ${f.code}`);
  },
  !which("mpirun"),
);

t(
  "den and ch-run 0.31 write the same /etc/passwd, /etc/group, ids, PATH and cwd",
  async () => {
    const script = "cat /etc/passwd /etc/group; id; echo $PATH; pwd; echo ${TMPDIR-unset}";
    for (
      const ids of [[], ["-u", "0"], ["-u", "0", "-g", "0"], ["-u", "65534", "-g", "0"], [
        "-u",
        "4242",
        "-g",
        "4242",
      ]]
    ) {
      const env = { PATH: "/usr/bin", TMPDIR: "/tmp" };
      const d = await den(["run", ...ids, IMG, "--", "sh", "-c", script], { env });
      const [cmd, ...args] = asTestUser(["ch-run", ...ids, IMG, "--", "sh", "-c", script]);
      const c = await new Deno.Command(cmd!, {
        args,
        env: { ...env, USER: userName },
        clearEnv: true,
        cwd: "/",
        stdout: "piped",
        stderr: "piped",
      }).output();
      equal(d.stdout, new TextDecoder().decode(c.stdout), `ids ${ids.join(" ")}`);
    }
  },
  !which("ch-run"),
);

if (work) {
  addEventListener("unload", () => {
    try {
      Deno.removeSync(work.path, { recursive: true });
    } catch { /* best effort */ }
  });
}

interface DenTerm {
  code: number;
  out: string;
}

/** Spawn argv (a script(1) that makes a terminal), type keys after delayMs,
 * and collect what the terminal showed; killed after 30 s more. */
async function typeOn(
  argv: string[],
  env: Record<string, string>,
  keys: string,
  when: number | string,
): Promise<DenTerm> {
  const [cmd, ...args] = argv;
  const child = new Deno.Command(cmd!, {
    args,
    env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const w = child.stdin.getWriter();
  const timer = setTimeout(() => child.kill("SIGKILL"), 30000);
  let out = "";
  let typed = !keys;
  const type = async () => {
    if (typed) return;
    typed = true;
    await w.write(new TextEncoder().encode(keys)).catch(() => {}); // exited already
  };
  // A number: type after that many ms; a string: once the output shows it
  // (a loaded machine may take seconds to get there), and a moment later,
  // for the command to be waiting.
  let typing = typeof when === "number" ? setTimeout(type, when) : undefined;
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    out += decoder.decode(chunk, { stream: true }).replaceAll("\r", "");
    if (typeof when === "string" && !typing && out.includes(when)) typing = setTimeout(type, 300);
  }
  clearTimeout(typing);
  const { code } = await child.status.finally(() => clearTimeout(timer));
  await w.close().catch(() => {});
  return { code, out };
}

/** Run argv on a new terminal (script(1)), writing input after a delay or
 * once the output shows a text. */
function onTerminal(argv: string[], input: string, when: number | string): Promise<DenTerm> {
  const quoted = asTestUser(argv).map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  // exec: no shell in between to take its own share of a Ctrl-C.
  return typeOn(["script", "-qec", `exec ${quoted}`, "/dev/null"], testUserEnv(), input, when);
}

/** Run a script in an interactive bash (job control on) on a terminal
 * made by script(1); `keys` are typed after `when` (ms, or a text in the
 * output). */
async function inInteractiveBash(
  script: string,
  keys = "",
  when: number | string = 0,
): Promise<string> {
  const argv = asTestUser([
    "script",
    "-qec",
    `bash --norc -i -c ${JSON.stringify(script)}`,
    "/dev/null",
  ]);
  const env = { ...testUserEnv(), TERM: "dumb", DEN: denPlainArgv([]).join(" "), IMG };
  return (await typeOn(argv, env, keys, when)).out;
}

t(
  "Ctrl-C on a terminal interrupts the command once",
  async () => {
    const r = await onTerminal(
      denPlainArgv([
        "run",
        IMG,
        "--",
        "sh",
        "-c",
        'trap "echo got INT" INT; echo ready; i=0; while [ $i -lt 25 ]; do sleep 0.1; i=$((i+1)); done; echo done',
      ]),
      "\x03",
      "ready",
    );
    equal(r.out.match(/got INT/g)?.length, 1, r.out);
    match(r.out, /done/);
    equal(r.code, 0);
  },
  !which("script"),
);

t(
  "an interactive shell works on a terminal",
  async () => {
    const r = await onTerminal(
      denPlainArgv(["run", IMG, "--", "sh", "-i"]),
      "tty >/dev/null && echo on-a-tty-$CH_RUNNING\nexit 5\n",
      1500,
    );
    match(r.out, /on-a-tty-Weird Al Yankovic/);
    equal(r.code, 5);
  },
  !which("script"),
);

// user.max_user_namespaces is per user namespace: set it to 0 in a
// namespace of the test's own (unshare), never on the host.
t(
  "disabled user namespaces: one line naming the sysctl, exit 31",
  async () => {
    const knob = "/proc/sys/user/max_user_namespaces";
    const host = Deno.readTextFileSync(knob);
    const r = await runAsTestUser([
      "unshare",
      "--user",
      "--map-root-user",
      "sh",
      "-c",
      `echo 0 > ${knob} && exec "$@"`,
      "sh",
      ...denPlainArgv(["run", IMG, "--", "true"]),
    ]);
    equal(Deno.readTextFileSync(knob), host, "the host's sysctl changed");
    equal(r.code, 31);
    equal(
      r.stderr,
      "den: error: can't clone a user namespace: No space left on device (ENOSPC)\n" +
        "den: hint: unprivileged user namespaces are disabled: sysctl user.max_user_namespaces is 0\n",
    );
  },
  !which("unshare"),
);

t(
  "an image on a nosuid,nodev mount under $TMPDIR runs read-only, keeping the locked flags",
  async () => {
    const mnt = `${work!.path}/nosuid`;
    Deno.mkdirSync(mnt);
    const sh = (cmd: string, ...args: string[]) => new Deno.Command(cmd, { args }).outputSync();
    ok(sh("mount", "-t", "tmpfs", "-o", "nosuid,nodev,size=20m,mode=0755", "tmpfs", mnt).success);
    try {
      const img = buildBusyboxImage(`${mnt}/img`);
      // The image's mount sits below the host /tmp that den binds at /tmp.
      const r = await den(["run", img, "--", "sh", "-c", 'mount | grep " / "; touch /x'], {
        env: { TMPDIR: work!.path },
      });
      match(r.stdout, /^tmpfs on \/ type tmpfs \(ro,nosuid,nodev/);
      match(r.stderr, /Read-only file system/);
      equal(r.code, 1);
    } finally {
      sh("umount", "-l", mnt);
    }
  },
  !canMountTmpfs(),
);

t("started with SIGCHLD ignored, den still reports the command's status", async () => {
  const r = await runAsTestUser([
    "env",
    "--ignore-signal=CHLD",
    ...denPlainArgv(["run", IMG, "--", "sh", "-c", "exit 5"]),
  ]);
  equal(r.code, 5, r.stderr);
});

t("image files den reads on the host are never followed out of the image", async () => {
  // A hostile image: ch/environment points at the caller's private file.
  const img = `${work!.path}/hostile-env`;
  buildBusyboxImage(img);
  const secret = `${work!.path}/secret.env`;
  Deno.writeTextFileSync(secret, "SECRET=leaked\n");
  Deno.symlinkSync(secret, `${img}/ch/environment`);
  const r = await den(["run", "--set-env", img, "--", "env"]);
  equal(r.code, 31, r.stderr);
  ok(!r.stdout.includes("leaked"));
  equal(
    r.stderr,
    `den: error: can't read image file ch/environment ${img}: ch/environment is a symlink\n`,
  );
  // ch/metadata.json is read on every run: same rule.
  Deno.removeSync(`${img}/ch/environment`);
  Deno.writeTextFileSync(secret, '{"env_list":["SECRET=leaked"]}');
  Deno.symlinkSync(secret, `${img}/ch/metadata.json`);
  const m = await den(["run", img, "--", "env"]);
  equal(m.code, 31, m.stderr);
  ok(!m.stdout.includes("leaked"));
  match(m.stderr, /ch\/metadata.json is a symlink/);
});

t(
  "a pipeline reading the terminal is not stopped (the command stays in den's group)",
  async () => {
    const out = await inInteractiveBash(
      "$DEN run $IMG -- sleep 1 | sh -c 'sleep 0.3; stty sane </dev/tty && echo pipeline-ok'; " +
        "echo status=$?",
    );
    match(out, /pipeline-ok\nstatus=0/);
    ok(!/Stopped/.test(out), out);
  },
  !which("script"),
);

t(
  "Ctrl-C in an interactive bash (job control) reaches the command once",
  async () => {
    const out = await inInteractiveBash(
      "$DEN run $IMG -- sh -c 'trap \"echo got-int\" INT; sleep 3 & echo ready; wait; echo done'; " +
        "echo status=$?",
      "\x03",
      "ready\n",
    );
    equal(out.match(/got-int/g)?.length, 1, out);
    match(out, /done\nstatus=0/);
  },
  !which("script"),
);

// A setgid copy of this Deno (only root can make one for another group).
t(
  "a setgid den refuses to run, as ch-run does",
  async () => {
    const copy = `${work!.path}/deno-setgid`;
    Deno.copyFileSync(Deno.execPath(), copy);
    Deno.chownSync(copy, 0, 65534);
    Deno.chmodSync(copy, 0o2755);
    const r = await runAsTestUser([copy, ...denPlainArgv(["run", IMG, "--", "true"]).slice(1)]);
    Deno.removeSync(copy);
    equal(r.code, 31);
    match(
      r.stderr,
      /^den: error: den must not be setuid or setgid: real and effective ids differ\n/,
    );
  },
  Deno.uid() !== 0,
);

t("-s naming a directory that is not there warns, as ch-run does, and runs", async () => {
  const r = await den(["run", "-s", `${work!.path}/no-storage`, IMG, "--", "true"]);
  equal(r.code, 0);
  equal(r.stderr, `den: warning: storage directory not found: ${work!.path}/no-storage\n`);
});

t("an image whose /etc/hosts is a directory is refused, as ch-run does", async () => {
  const img = `${work!.path}/hosts-dir`;
  buildBusyboxImage(img);
  Deno.removeSync(`${img}/etc/hosts`);
  Deno.mkdirSync(`${img}/etc/hosts`);
  const r = await den(["run", img, "--", "true"]);
  equal(r.code, 31);
  equal(
    r.stderr,
    `den: error: can't bind /etc/hosts to ${img}/etc/hosts: Not a directory (ENOTDIR)\n`,
  );
});

t(
  "job control: a background den run is reported Done; one stopped reading the tty resumes with fg",
  async () => {
    const done = await inInteractiveBash(
      "set -m; $DEN run $IMG -- sleep 1 & sleep 3; jobs; echo end",
    );
    match(done, /Done\s+\S+ run -A --no-lock \S+ run \S+ -- sleep 1\n/);
    // `cat &` stops on SIGTTIN like any background job reading the
    // terminal; `fg` gives it the terminal and it reads what is typed.
    const fg = await inInteractiveBash(
      "set -m; $DEN run $IMG -- cat & sleep 2; jobs; fg; echo status=$?",
      "typed-line\n\x04",
      4000,
    );
    match(fg, /Stopped\s+\S+ run -A --no-lock \S+ run \S+ -- cat/);
    match(fg, /typed-line\ntyped-line\n/);
    match(fg, /status=0/);
  },
  !which("script"),
);
