import { deepStrictEqual, equal, ok } from "node:assert/strict";
import {
  addChildCalls,
  type ChainInputs,
  type ChainSink,
  generatedFilesDir,
  usernsHint,
} from "./spawn.ts";
import type { Plan } from "../run/plan.ts";
import {
  MS_BIND,
  MS_NODEV,
  MS_NOEXEC,
  MS_NOSUID,
  MS_RDONLY,
  MS_REC,
  MS_REMOUNT,
} from "./constants.ts";

const procWith = (files: Record<string, string>) => (path: string) => files[path];

Deno.test("usernsHint() names user.max_user_namespaces when it is 0", () => {
  equal(
    usernsHint(procWith({ "/proc/sys/user/max_user_namespaces": "0" })),
    "unprivileged user namespaces are disabled: sysctl user.max_user_namespaces is 0",
  );
});

Deno.test("usernsHint() names Debian's kernel.unprivileged_userns_clone when it is 0", () => {
  equal(
    usernsHint(procWith({
      "/proc/sys/user/max_user_namespaces": "96364",
      "/proc/sys/kernel/unprivileged_userns_clone": "0",
    })),
    "unprivileged user namespaces are disabled: sysctl kernel.unprivileged_userns_clone is 0",
  );
});

Deno.test("usernsHint() names Ubuntu's AppArmor restriction", () => {
  equal(
    usernsHint(procWith({ "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1" })),
    "AppArmor restricts user namespaces: sysctl kernel.apparmor_restrict_unprivileged_userns is 1",
  );
});

Deno.test("usernsHint() falls back to the sysctl to check", () => {
  equal(
    usernsHint(procWith({})),
    "user namespaces look unavailable (check sysctl user.max_user_namespaces)",
  );
});

/** Records the child's calls with string arguments spelled out. */
class Recorder implements ChainSink {
  calls: string[] = [];
  #names = new Map<bigint, string>();
  #next = 0x10000n;
  #alloc(label: string, size = 0x100n): bigint {
    const a = this.#next;
    this.#next += size;
    this.#names.set(a, label);
    return a;
  }
  #render(args: (bigint | number)[]): string {
    return args.map((a) => this.#names.get(BigInt(a)) ?? String(a)).join(", ");
  }
  str(s: string): bigint {
    return this.#alloc(JSON.stringify(s));
  }
  buffer(n: number): { bytes: Uint8Array<ArrayBuffer>; address: bigint } {
    const bytes = new Uint8Array(n);
    const address = this.#alloc(`buf${n}`, BigInt(n) + 16n);
    return { bytes, address };
  }
  strv(items: string[]): bigint {
    return this.#alloc(JSON.stringify(items));
  }
  words(values: bigint[]): bigint {
    return this.#alloc(`&${this.#render(values)}`);
  }
  call(name: string, ...args: (bigint | number)[]): void {
    this.calls.push(`${name}(${this.#render(args)})`);
  }
  reported(name: string, ...args: (bigint | number)[]): void {
    this.calls.push(`${name}(${this.#render(args)}) -> report`);
  }
  reportErrno(): void {
    this.calls.push("report errno");
  }
  clearErrno(): void {
    this.calls.push("clear errno");
  }
}

const PLAN: Plan = {
  rootfs: "/img",
  create: [],
  ops: [
    { kind: "bind", source: "/dev", target: "/img/dev", recursive: true },
    { kind: "bind-file", content: "root:x:0:0::/:/bin/sh\n", target: "/img/etc/passwd" },
    { kind: "tmpfs", target: "/img/tmp" },
    { kind: "remount-ro", target: "/img" },
  ],
  uidMap: { inside: 1000, outside: 1000 },
  gidMap: { inside: 1000, outside: 1000 },
  cwd: "/work",
  cwdOptional: false,
  argv: ["/bin/echo", "hi"],
  env: ["PATH=/bin"],
  tmpdir: "/tmp",
  warnings: [],
  notes: [],
};

const IO: ChainInputs = {
  syncRead: 7,
  syncWrite: 8,
  environ: 0xe000n,
  fileSource: () => "/tmp/den-passwd.x",
  // A nosuid,nodev,noexec source mount with other bits that are not locked.
  lockedFlags: () => MS_NOSUID | MS_NODEV | MS_NOEXEC | 0x40,
  pivotRootNr: 155,
};

Deno.test("addChildCalls() mounts, pivots and execs in order, each step reported", () => {
  const r = new Recorder();
  const { steps } = addChildCalls(r, PLAN, IO);
  const reported = r.calls.filter((c) => c.endsWith("-> report"));
  const ro = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  deepStrictEqual(reported, [
    `mount(0, "/", 0, ${MS_REC | (1 << 18)}, 0) -> report`,
    `mount("/img", "/img", 0, ${MS_BIND | MS_REC}, 0) -> report`,
    `mount("/dev", "/img/dev", 0, ${MS_BIND | MS_REC}, 0) -> report`,
    `mount("/tmp/den-passwd.x", "/img/etc/passwd", 0, ${MS_BIND}, 0) -> report`,
    `mount("tmpfs", "/img/tmp", "tmpfs", 0, "mode=1777") -> report`,
    `mount(0, "/img", 0, ${ro}, 0) -> report`,
    `chdir("/img") -> report`,
    `syscall(155, ".", ".") -> report`,
    `umount2(".", 2) -> report`,
    `chdir("/") -> report`,
    `chdir("/work") -> report`,
    `prctl(38, 1, 0, 0, 0) -> report`,
  ]);
  equal(steps.length, reported.length);
  equal(steps[5]!.op, "can't re-mount image read-only");
});

Deno.test("addChildCalls() with a files dir: a private tmpfs, a wait for den, binds from it", () => {
  const r = new Recorder();
  const { steps, files } = addChildCalls(r, PLAN, { ...IO, filesDir: "/mnt" });
  const fileCalls = r.calls.filter((c) => c.includes("/mnt"));
  deepStrictEqual(fileCalls, [
    `mount("tmpfs", "/mnt", "tmpfs", ${
      MS_NOSUID | MS_NODEV | MS_NOEXEC
    }, "size=1m,mode=0700") -> report`,
    `mount("/mnt/0-passwd", "/img/etc/passwd", 0, ${MS_BIND}, 0) -> report`,
    `unlink("/mnt/0-passwd")`,
  ]);
  // den writes the files after the tmpfs step, while the child waits.
  equal(steps[files!.after - 1]!.op, "can't mount tmpfs at /mnt");
  const tmpfs = r.calls.findIndex((c) => c.startsWith(`mount("tmpfs", "/mnt"`));
  ok(r.calls[tmpfs + 1]!.startsWith("read("), r.calls[tmpfs + 1]);
  deepStrictEqual(files!.entries, [{ name: "0-passwd", content: "root:x:0:0::/:/bin/sh\n" }]);
  ok(!r.calls.some((c) => c.includes("/tmp/den-passwd")), "no host file");
});

Deno.test("generatedFilesDir() skips candidates that hold or lie in the image or a source", () => {
  const dirs = new Set(["/mnt", "/media", "/srv", "/opt", "/boot"]);
  const host = (links: Record<string, string> = {}) => ({
    isDir: (p: string) => dirs.has(p),
    real: (p: string) => links[p] ?? p,
  });
  const plan = (rootfs: string, ...sources: string[]) => ({
    rootfs,
    ops: sources.map((source) => ({
      kind: "bind" as const,
      source,
      target: `${rootfs}/x`,
      recursive: false,
    })),
  });
  equal(generatedFilesDir(plan("/img", "/dev"), host()), "/mnt");
  equal(generatedFilesDir(plan("/mnt/images/a", "/dev"), host()), "/media");
  equal(generatedFilesDir(plan("/img", "/mnt/data", "/media"), host()), "/srv");
  equal(
    generatedFilesDir(plan("/img", "/home/u/data"), host({ "/home/u/data": "/mnt/d" })),
    "/media",
  );
  equal(generatedFilesDir(plan("/img", "/"), host()), undefined);
});

Deno.test("addChildCalls() waits for the id maps first and at the gate before execvp", () => {
  const r = new Recorder();
  const { gateByte } = addChildCalls(r, PLAN, IO);
  const firstMount = r.calls.findIndex((c) => c.startsWith("mount("));
  const mapsRead = r.calls.findIndex((c) => c.startsWith("read(7,"));
  ok(mapsRead >= 0 && mapsRead < firstMount, "reads the sync pipe before mounting");
  ok(r.calls.indexOf("prctl(1, 9, 0, 0, 0)") < mapsRead, "PDEATHSIG before waiting");
  ok(r.calls.indexOf("close(8)") < mapsRead, "closes its copy of the write end before waiting");
  deepStrictEqual(r.calls.slice(-5), [
    `memcpy(57344, &${'["PATH=/bin"]'}, 8)`,
    `read(7, buf10, 1)`,
    `execvp(buf10, ["/bin/echo","hi"])`,
    "report errno",
    "_exit(49)",
  ]);
  equal(gateByte, "/".charCodeAt(0));
});

Deno.test("addChildCalls() -W: tmpfs with its size, upper and work dirs, overlay with userxattr", () => {
  const r = new Recorder();
  const plan: Plan = {
    ...PLAN,
    rootfs: "/i,m:g",
    ops: [
      { kind: "tmpfs", target: "/i,m:g/dev", options: "size=12%,mode=0755" },
      { kind: "mkdir", target: "/i,m:g/dev/upper" },
      { kind: "mkdir", target: "/i,m:g/dev/work" },
      {
        kind: "overlay",
        lower: "/i,m:g",
        upper: "/i,m:g/dev/upper",
        work: "/i,m:g/dev/work",
        target: "/i,m:g",
      },
      { kind: "mkfile", target: "/i,m:g/f" },
    ],
  };
  const { steps } = addChildCalls(r, plan, IO);
  const reported = r.calls.filter((c) => c.endsWith("-> report")).slice(2, 7);
  deepStrictEqual(reported, [
    `mount("tmpfs", "/i,m:g/dev", "tmpfs", 0, "size=12%,mode=0755") -> report`,
    `mkdir("/i,m:g/dev/upper", 493) -> report`,
    `mkdir("/i,m:g/dev/work", 493) -> report`,
    `mount("overlay", "/i,m:g", "overlay", 0, ` +
    `"lowerdir=/i\\\\,m\\\\:g,upperdir=/i\\\\,m\\\\:g/dev/upper,workdir=/i\\\\,m\\\\:g/dev/work,userxattr") -> report`,
    `mknod("/i,m:g/f", ${0o100644}, 0) -> report`,
  ]);
  equal(steps[5]!.op, "can't overlay /i,m:g");
  ok(steps[5]!.hint?.includes("overlayfs"));
});
