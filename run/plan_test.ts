import { deepStrictEqual, ok, strictEqual, throws } from "node:assert/strict";
import {
  CH_RUNNING,
  groupFile,
  type HostFacts,
  type HostView,
  type ImageConfig,
  type MountOp,
  passwdFile,
  type Plan,
  planContainer,
  resolveInRoot,
  type RunOptions,
} from "./plan.ts";
import { DenError } from "../error.ts";

// An in-memory file system: path -> "dir", "file" or a symlink target.
type Node = "dir" | "file" | { link: string };

/** Lexical normalisation, enough for the absolute paths these tests use. */
function normalize(path: string): string {
  const out: string[] = [];
  for (const p of path.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") out.pop();
    else out.push(p);
  }
  return "/" + out.join("/");
}

/** A HostView over a tree; parents of every entry are directories. */
function fakeFs(entries: Record<string, Node>): HostView {
  const tree = new Map<string, Node>([["/", "dir"]]);
  for (const [path, node] of Object.entries(entries)) {
    const parts = normalize(path).split("/").slice(1);
    for (let i = 1; i < parts.length; i++) {
      tree.set("/" + parts.slice(0, i).join("/"), "dir");
    }
    tree.set(normalize(path), node);
  }
  return {
    lkind(path) {
      const node = tree.get(normalize(path));
      if (node === undefined) return undefined;
      return typeof node === "string" ? node : "symlink";
    },
    readlink(path) {
      const node = tree.get(normalize(path));
      if (node === undefined || typeof node === "string") {
        throw new Error(`readlink ${path}: not a symlink`);
      }
      return node.link;
    },
  };
}

const HOST: Record<string, Node> = {
  "/dev": "dir",
  "/proc": "dir",
  "/sys": "dir",
  "/tmp": "dir",
  "/home/den": "dir",
  "/etc/hosts": "file",
  "/etc/resolv.conf": "file",
  "/data": "dir",
  "/data/file.txt": "file",
};

const IMAGE: Record<string, Node> = {
  "/img/dev": "dir",
  "/img/proc": "dir",
  "/img/sys": "dir",
  "/img/tmp": "dir",
  "/img/home": "dir",
  "/img/etc/hosts": "file",
  "/img/etc/resolv.conf": "file",
  "/img/etc/passwd": "file",
  "/img/etc/group": "file",
  "/img/bin/sh": "file",
  "/img/data": "dir",
  "/img/mnt": "dir",
};

const HOST_ENV: [string, string][] = [
  ["PATH", "/usr/bin:/bin"],
  ["HOME", "/home/den"],
  ["USER", "den"],
];

function facts(
  over: Partial<HostFacts> = {},
  fs: Record<string, Node> = {},
): HostFacts {
  return {
    env: HOST_ENV,
    uid: 1000,
    gid: 1000,
    user: "den",
    passwdEntry: (uid) => uid === 1000 ? { name: "den", gecos: "Den User" } : undefined,
    groupName: (gid) => gid === 1000 ? "den" : undefined,
    fs: fakeFs({ ...HOST, ...IMAGE, ...fs }),
    ...over,
  };
}

function opts(over: Partial<RunOptions> = {}): RunOptions {
  return {
    image: "/img",
    command: ["true"],
    binds: [],
    write: false,
    envOps: [],
    envNoExpand: false,
    imageEnv: true,
    home: false,
    noPasswd: false,
    privateTmp: false,
    ...over,
  };
}

function plan(
  o: Partial<RunOptions> = {},
  f: Partial<HostFacts> = {},
  image?: ImageConfig,
): Plan {
  return planContainer(opts(o), facts(f), "/img", image);
}

/** A DenError with exactly this message (and optionally exit code, hint). */
function denError(message: string, more: { exit?: number; hint?: string } = {}) {
  return (e: unknown) =>
    e instanceof DenError && e.message === message &&
    e.exitCode === (more.exit ?? 31) &&
    (more.hint === undefined || e.hint === more.hint);
}

const PASSWD_DEN = "root:x:0:0:root:/root:/bin/sh\n" +
  "nobody:x:65534:65534:nobody:/:/bin/false\n" +
  "den:x:1000:1000:Den User:/:/bin/sh\n";
const GROUP_DEN = "root:x:0:\nnogroup:x:65534:\nden:x:1000:\n";

const DEFAULT_OPS: MountOp[] = [
  { kind: "bind", source: "/dev", target: "/img/dev", recursive: true },
  { kind: "bind", source: "/proc", target: "/img/proc", recursive: true },
  { kind: "bind", source: "/sys", target: "/img/sys", recursive: true },
  {
    kind: "bind",
    source: "/etc/hosts",
    target: "/img/etc/hosts",
    recursive: false,
  },
  {
    kind: "bind",
    source: "/etc/resolv.conf",
    target: "/img/etc/resolv.conf",
    recursive: false,
  },
  { kind: "bind-file", content: PASSWD_DEN, target: "/img/etc/passwd" },
  { kind: "bind-file", content: GROUP_DEN, target: "/img/etc/group" },
  { kind: "bind", source: "/tmp", target: "/img/tmp", recursive: true },
];

// resolveInRoot()

Deno.test("resolveInRoot() joins a plain path under rootfs", () => {
  const fs = fakeFs(IMAGE);
  strictEqual(resolveInRoot("/img", "/etc/hosts", fs), "/img/etc/hosts");
  strictEqual(resolveInRoot("/img", "etc//./hosts", fs), "/img/etc/hosts");
  strictEqual(resolveInRoot("/img", "/", fs), "/img");
});

Deno.test("resolveInRoot() keeps missing components", () => {
  strictEqual(
    resolveInRoot("/img", "/nope/x", fakeFs(IMAGE)),
    "/img/nope/x",
  );
});

Deno.test("resolveInRoot() resolves an absolute symlink from the image root", () => {
  const fs = fakeFs({ "/img/etc/resolv.conf": { link: "/run/resolv.conf" } });
  strictEqual(
    resolveInRoot("/img", "/etc/resolv.conf", fs),
    "/img/run/resolv.conf",
  );
});

Deno.test("resolveInRoot() resolves a relative symlink from its directory", () => {
  const fs = fakeFs({
    "/img/bin": { link: "usr/bin" },
    "/img/usr/bin/sh": "file",
    "/img/etc/mtab": { link: "../proc/self/mounts" },
  });
  strictEqual(resolveInRoot("/img", "/bin/sh", fs), "/img/usr/bin/sh");
  strictEqual(
    resolveInRoot("/img", "/etc/mtab", fs),
    "/img/proc/self/mounts",
  );
});

Deno.test("resolveInRoot() follows symlinks in the middle of a path", () => {
  const fs = fakeFs({
    "/img/scratch": { link: "/mnt/scratch" },
    "/img/mnt/scratch": { link: "../data" },
  });
  strictEqual(resolveInRoot("/img", "/scratch/x", fs), "/img/data/x");
});

Deno.test("resolveInRoot() clamps '..' at the image root", () => {
  const fs = fakeFs({
    "/img/up": { link: "../../../../etc" },
    "/img/root": { link: "/" },
    "/img/abs": { link: "/../../host" },
  });
  strictEqual(resolveInRoot("/img", "/../../etc/passwd", fs), "/img/etc/passwd");
  strictEqual(resolveInRoot("/img", "/up/passwd", fs), "/img/etc/passwd");
  strictEqual(resolveInRoot("/img", "/root", fs), "/img");
  strictEqual(resolveInRoot("/img", "/root/etc", fs), "/img/etc");
  strictEqual(resolveInRoot("/img", "/abs", fs), "/img/host");
});

Deno.test("resolveInRoot() refuses a symlink loop with ELOOP", () => {
  const fs = fakeFs({
    "/img/a": { link: "b" },
    "/img/b": { link: "/a" },
    "/img/self": { link: "self" },
  });
  throws(
    () => resolveInRoot("/img", "/a/x", fs),
    denError("can't resolve /a/x: Too many levels of symbolic links (ELOOP)"),
  );
  throws(
    () => resolveInRoot("/img", "/self", fs),
    (e: unknown) => e instanceof DenError && e.options.code === "ELOOP",
  );
});

Deno.test("resolveInRoot() follows a chain of 40 symlinks", () => {
  const entries: Record<string, Node> = { "/img/l40": "file" };
  for (let i = 0; i < 40; i++) entries[`/img/l${i}`] = { link: `l${i + 1}` };
  strictEqual(resolveInRoot("/img", "/l0", fakeFs(entries)), "/img/l40");
});

// passwdFile(), groupFile()

Deno.test("passwdFile() writes root, nobody and the user, as ch-run", () => {
  strictEqual(passwdFile(1000, 1000, facts()), PASSWD_DEN);
  strictEqual(
    passwdFile(1000, 0, facts()),
    "root:x:0:0:root:/root:/bin/sh\n" +
      "nobody:x:65534:65534:nobody:/:/bin/false\n" +
      "den:x:1000:0:Den User:/:/bin/sh\n",
  );
});

Deno.test("passwdFile() adds the user line even for uid 0, as ch-run 0.31", () => {
  const f = facts({
    passwdEntry: (uid) => uid === 0 ? { name: "root", gecos: "root" } : undefined,
  });
  strictEqual(
    passwdFile(0, 1000, f),
    "nobody:x:65534:65534:nobody:/:/bin/false\n" +
      "root:x:0:1000:root:/:/bin/sh\n",
  );
});

Deno.test("passwdFile() names a uid the host does not know charlie, as ch-run", () => {
  const f = facts({ passwdEntry: () => undefined });
  strictEqual(
    passwdFile(1000, 1000, f).split("\n")[2],
    "charlie:x:1000:1000:Charlie:/:/bin/sh",
  );
  strictEqual(
    passwdFile(1234, 1000, facts()).split("\n")[2],
    "charlie:x:1234:1000:Charlie:/:/bin/sh",
  );
});

Deno.test("groupFile() writes root, nogroup and the group, as ch-run", () => {
  strictEqual(groupFile(1000, facts()), GROUP_DEN);
  strictEqual(
    groupFile(4321, facts()),
    "root:x:0:\nnogroup:x:65534:\ncharliegroup:x:4321:\n",
  );
});

Deno.test("groupFile() writes gid 0 or 65534 once, in the group's place, as ch-run", () => {
  const f = facts({
    groupName: (gid) => ({ 0: "root", 65534: "nogroup" } as Record<number, string>)[gid],
  });
  strictEqual(groupFile(0, f), "nogroup:x:65534:\nroot:x:0:\n");
  strictEqual(groupFile(65534, f), "root:x:0:\nnogroup:x:65534:\n");
});

// planContainer(): mounts

Deno.test("planContainer() default ops, in order, remount-ro last", () => {
  const p = plan();
  deepStrictEqual(p.ops, [
    ...DEFAULT_OPS,
    { kind: "remount-ro", target: "/img" },
  ]);
  deepStrictEqual(p.create, []);
  strictEqual(p.rootfs, "/img");
  strictEqual(p.tmpdir, "/tmp");
  deepStrictEqual(p.warnings, []);
});

Deno.test("planContainer() puts the read-only remount last", () => {
  const p = plan({
    home: true,
    binds: [{ source: "/data" }],
    privateTmp: true,
  });
  deepStrictEqual(p.ops.at(-1), { kind: "remount-ro", target: "/img" });
  strictEqual(p.ops.filter((o) => o.kind === "remount-ro").length, 1);
});

Deno.test("planContainer() with -w does not remount read-only", () => {
  deepStrictEqual(plan({ write: true }).ops, DEFAULT_OPS);
});

Deno.test("planContainer() binds /etc/hosts only when host and image have it", () => {
  const targets = (p: Plan) => p.ops.map((o) => o.target);
  const host = { ...HOST };
  delete host["/etc/hosts"];
  const noHostHosts = planContainer(
    opts(),
    { ...facts(), fs: fakeFs({ ...host, ...IMAGE }) },
    "/img",
  );
  deepStrictEqual(targets(noHostHosts).includes("/img/etc/hosts"), false);
  const image = { ...IMAGE };
  delete image["/img/etc/resolv.conf"];
  const noImageResolv = planContainer(
    opts(),
    { ...facts(), fs: fakeFs({ ...HOST, ...image }) },
    "/img",
  );
  deepStrictEqual(targets(noImageResolv), [
    "/img/dev",
    "/img/proc",
    "/img/sys",
    "/img/etc/hosts",
    "/img/etc/passwd",
    "/img/etc/group",
    "/img/tmp",
    "/img",
  ]);
});

Deno.test("planContainer() optional binds are skipped even with -w", () => {
  const image = { ...IMAGE };
  delete image["/img/etc/hosts"];
  const p = planContainer(
    opts({ write: true }),
    { ...facts(), fs: fakeFs({ ...HOST, ...image }) },
    "/img",
  );
  deepStrictEqual(p.create, []);
  strictEqual(p.ops.some((o) => o.target === "/img/etc/hosts"), false);
});

Deno.test("planContainer() follows symlinks for /etc/resolv.conf on both sides", () => {
  const p = plan({}, {
    fs: fakeFs({
      ...HOST,
      ...IMAGE,
      "/etc/resolv.conf": { link: "../run/systemd/resolve/stub-resolv.conf" },
      "/run/systemd/resolve/stub-resolv.conf": "file",
      "/img/etc/resolv.conf": { link: "/run/resolv.conf" },
      "/img/run/resolv.conf": "file",
    }),
  });
  deepStrictEqual(p.ops[4], {
    kind: "bind",
    source: "/etc/resolv.conf",
    target: "/img/run/resolv.conf",
    recursive: false,
  });
});

Deno.test("planContainer() refuses an image without /dev", () => {
  const image = { ...IMAGE };
  delete image["/img/dev"];
  throws(
    () => planContainer(opts(), { ...facts(), fs: fakeFs({ ...HOST, ...image }) }, "/img"),
    denError("can't bind: destination not found: /img/dev", {
      hint: "the image has no /dev; -w would create it",
    }),
  );
});

Deno.test("planContainer() with -w creates missing mount points", () => {
  const p = planContainer(
    opts({ write: true, home: true }),
    { ...facts(), fs: fakeFs({ ...HOST, "/img/bin/sh": "file" }) },
    "/img",
  );
  deepStrictEqual(p.create, [
    { path: "/img/dev", kind: "dir" },
    { path: "/img/proc", kind: "dir" },
    { path: "/img/sys", kind: "dir" },
    { path: "/img/etc/passwd", kind: "file" },
    { path: "/img/etc/group", kind: "file" },
    { path: "/img/tmp", kind: "dir" },
    { path: "/img/home", kind: "dir" },
  ]);
  deepStrictEqual(p.ops.map((o) => o.target), [
    "/img/dev",
    "/img/proc",
    "/img/sys",
    "/img/etc/passwd",
    "/img/etc/group",
    "/img/tmp",
    "/img/home",
    "/img/home/den",
    "/img/home/den",
  ]);
});

Deno.test("planContainer() mounts at the target of an image symlink", () => {
  const p = plan({}, {
    fs: fakeFs({ ...HOST, ...IMAGE, "/img/tmp": { link: "/var/tmp" }, "/img/var/tmp": "dir" }),
  });
  deepStrictEqual(p.ops[7], {
    kind: "bind",
    source: "/tmp",
    target: "/img/var/tmp",
    recursive: true,
  });
});

Deno.test("planContainer() binds passwd and group unless --no-passwd", () => {
  const image = { ...IMAGE };
  delete image["/img/etc/passwd"];
  delete image["/img/etc/group"];
  const p = planContainer(
    opts({ noPasswd: true }),
    { ...facts(), fs: fakeFs({ ...HOST, ...image }) },
    "/img",
  );
  deepStrictEqual(p.ops, [
    ...DEFAULT_OPS.filter((o) => o.kind !== "bind-file"),
    { kind: "remount-ro", target: "/img" },
  ]);
});

Deno.test("planContainer() writes passwd and group for -u and -g", () => {
  const p = plan({ uid: 0, gid: 0 });
  deepStrictEqual(p.ops.filter((o) => o.kind === "bind-file"), [
    {
      kind: "bind-file",
      content: passwdFile(0, 0, facts()),
      target: "/img/etc/passwd",
    },
    {
      kind: "bind-file",
      content: groupFile(0, facts()),
      target: "/img/etc/group",
    },
  ]);
});

Deno.test("planContainer() binds host $TMPDIR at /tmp", () => {
  const p = plan({}, {
    env: [...HOST_ENV, ["TMPDIR", "/scratch/tmp"]],
    fs: fakeFs({ ...HOST, ...IMAGE, "/scratch/tmp": "dir" }),
  });
  deepStrictEqual(p.ops[7], {
    kind: "bind",
    source: "/scratch/tmp",
    target: "/img/tmp",
    recursive: true,
  });
  strictEqual(p.tmpdir, "/scratch/tmp");
});

Deno.test("planContainer() treats an empty $TMPDIR as /tmp", () => {
  const p = plan({}, { env: [...HOST_ENV, ["TMPDIR", ""]] });
  strictEqual(p.tmpdir, "/tmp");
  deepStrictEqual(p.ops[7], DEFAULT_OPS[7]);
});

Deno.test("planContainer() refuses a $TMPDIR that is no directory", () => {
  throws(
    () => plan({}, { env: [...HOST_ENV, ["TMPDIR", "/scratch/none"]] }),
    denError("can't bind: source not found: /scratch/none", {
      hint: "$TMPDIR names no directory",
    }),
  );
});

Deno.test("planContainer() --private-tmp mounts a tmpfs at /tmp", () => {
  const p = plan({ privateTmp: true }, {
    env: [...HOST_ENV, ["TMPDIR", "/scratch/none"]],
  });
  deepStrictEqual(p.ops[7], { kind: "tmpfs", target: "/img/tmp" });
  strictEqual(p.tmpdir, "/scratch/none");
});

Deno.test("planContainer() --home: tmpfs on /home, mkdir, bind $HOME", () => {
  const p = plan({ home: true, binds: [{ source: "/data" }] });
  deepStrictEqual(p.ops.slice(8), [
    { kind: "tmpfs", target: "/img/home" },
    { kind: "mkdir", target: "/img/home/den" },
    {
      kind: "bind",
      source: "/home/den",
      target: "/img/home/den",
      recursive: true,
    },
    { kind: "bind", source: "/data", target: "/img/data", recursive: true },
    { kind: "remount-ro", target: "/img" },
  ]);
});

Deno.test("planContainer() --home needs $HOME", () => {
  throws(
    () => plan({ home: true }, { env: [["PATH", "/bin"]] }),
    denError("--home failed: $HOME not set"),
  );
  throws(
    () => plan({ home: true }, { env: [["HOME", "/home/gone"], ["USER", "den"]] }),
    denError("can't bind: source not found: /home/gone"),
  );
});

Deno.test("planContainer() --home needs $USER, as ch-run", () => {
  throws(
    () => plan({ home: true }, { env: [["PATH", "/bin"], ["HOME", "/home/den"]] }),
    denError("--home failed: $USER not set"),
  );
});

Deno.test("planContainer() binds user directories recursively, in order", () => {
  const p = plan({
    binds: [{ source: "/data", target: "/mnt" }, { source: "/data" }],
  });
  deepStrictEqual(p.ops.slice(8), [
    { kind: "bind", source: "/data", target: "/img/mnt", recursive: true },
    { kind: "bind", source: "/data", target: "/img/data", recursive: true },
    { kind: "remount-ro", target: "/img" },
  ]);
});

Deno.test("planContainer() refuses a bind destination through a link out of the image", () => {
  // ch-run's rules: links that climb out, or absolute ones, are refused.
  const bindTo = (links: Record<string, Node>) =>
    planContainer(
      opts({ binds: [{ source: "/data", target: "/mnt/out" }] }),
      facts({}, links),
      "/img",
    );
  throws(
    () => bindTo({ "/img/mnt/out": { link: "../../../data" } }),
    denError("can't bind: /data not subdirectory of /img"),
  );
  throws(
    () => bindTo({ "/img/mnt/out": { link: "/data" } }),
    denError("can't bind: /data not subdirectory of /img"),
  );
  throws(
    () => bindTo({ "/img/mnt/out": { link: "/nowhere" } }),
    denError("can't mkdir: symlink not relative: /img/mnt/out"),
  );
  throws(
    () => bindTo({ "/img/mnt/out": { link: "nowhere" } }),
    denError("can't mkdir: broken symlink: /img/mnt/out"),
  );
  throws(
    () => planContainer(opts({ binds: [{ source: "/data", target: "/.." }] }), facts(), "/img"),
    denError("can't bind: / not subdirectory of /img"),
  );
  throws(
    () =>
      planContainer(
        opts({ binds: [{ source: "/data", target: "/../nope/a" }] }),
        facts(),
        "/img",
      ),
    denError("can't mkdir: /nope not subdirectory of /img"),
  );
  // A relative link that stays inside is followed.
  strictEqual(
    bindTo({ "/img/mnt/out": { link: "../data" } }).ops.find((o) =>
      o.kind === "bind" && o.source === "/data"
    )?.target,
    "/img/data",
  );
});

Deno.test("planContainer() refuses a bind source that does not exist", () => {
  throws(
    () => plan({ binds: [{ source: "/nope" }] }),
    denError("can't bind: source not found: /nope"),
  );
});

Deno.test("planContainer() refuses a missing bind destination without -w", () => {
  throws(
    () => plan({ binds: [{ source: "/data", target: "/mnt/x" }] }),
    denError("can't mkdir: /img/mnt/x: Read-only file system", {
      hint: "the image has no /mnt/x; -w would create it",
    }),
  );
});

Deno.test("planContainer() with -w creates a missing bind destination", () => {
  const p = plan({
    write: true,
    binds: [
      { source: "/data", target: "/mnt/x" },
      { source: "/data/file.txt", target: "/f.txt" },
    ],
  });
  deepStrictEqual(p.create, [
    { path: "/img/mnt/x", kind: "dir" },
    { path: "/img/f.txt", kind: "file" },
  ]);
  deepStrictEqual(p.ops.slice(8), [
    { kind: "bind", source: "/data", target: "/img/mnt/x", recursive: true },
    {
      kind: "bind",
      source: "/data/file.txt",
      target: "/img/f.txt",
      recursive: true,
    },
  ]);
});

Deno.test("planContainer() refuses a relative bind destination", () => {
  throws(
    () => plan({ binds: [{ source: "/data", target: "mnt" }] }),
    denError("--bind: destination must be absolute"),
  );
});

Deno.test({
  name: "planContainer() refuses a bind onto the image root",
  fn() {
    throws(
      () => plan({ binds: [{ source: "/data", target: "/" }] }),
      (e: unknown) => e instanceof DenError,
    );
    throws(
      () =>
        planContainer(
          opts({ binds: [{ source: "/data", target: "/r" }] }),
          facts({}, { "/img/r": { link: "/" } }),
          "/img",
        ),
      (e: unknown) => e instanceof DenError,
    );
  },
});

// planContainer(): process

Deno.test("planContainer() runs the given command", () => {
  deepStrictEqual(
    plan({ command: ["ls", "-l"] }, {}, { entrypoint: ["/ep"], cmd: ["c"] })
      .argv,
    ["ls", "-l"],
  );
});

Deno.test("planContainer() without a command runs entrypoint + cmd", () => {
  deepStrictEqual(
    plan({ command: [] }, {}, { entrypoint: ["/ep", "-x"], cmd: ["c"] }).argv,
    ["/ep", "-x", "c"],
  );
  deepStrictEqual(
    plan({ command: [] }, {}, { entrypoint: null, cmd: ["/bin/sh"] }).argv,
    ["/bin/sh"],
  );
  deepStrictEqual(
    plan({ command: [] }, {}, { entrypoint: ["/ep"] }).argv,
    ["/ep"],
  );
});

Deno.test("planContainer() without any command fails as ch-run does (31)", () => {
  const noCmd = denError("IMAGE and/or CMD not specified", { exit: 31 });
  throws(() => plan({ command: [] }), noCmd);
  throws(() => plan({ command: [] }, {}, { entrypoint: [], cmd: null }), noCmd);
});

Deno.test("planContainer() checks the command before the image", () => {
  throws(
    () => planContainer(opts({ command: [] }), facts({ fs: fakeFs({}) }), "/img"),
    denError("IMAGE and/or CMD not specified", { exit: 31 }),
  );
});

Deno.test("planContainer() cwd: -c, else the image's, else /", () => {
  const img = { cwd: "/work" };
  const a = plan({ cd: "/data" }, {}, img);
  deepStrictEqual([a.cwd, a.cwdOptional], ["/data", false]);
  const b = plan({}, {}, img);
  deepStrictEqual([b.cwd, b.cwdOptional], ["/work", true]);
  const c = plan();
  deepStrictEqual([c.cwd, c.cwdOptional], ["/", true]);
});

Deno.test("planContainer() maps the host ids to -u and -g", () => {
  const p = plan({ uid: 0, gid: 100 });
  deepStrictEqual(p.uidMap, { inside: 0, outside: 1000 });
  deepStrictEqual(p.gidMap, { inside: 100, outside: 1000 });
  const q = plan();
  deepStrictEqual(q.uidMap, { inside: 1000, outside: 1000 });
  deepStrictEqual(q.gidMap, { inside: 1000, outside: 1000 });
});

// planContainer(): environment

Deno.test("planContainer() passes the host environment, then CH_RUNNING", () => {
  deepStrictEqual(plan().env, [
    "PATH=/usr/bin:/bin",
    "HOME=/home/den",
    "USER=den",
    `CH_RUNNING=${CH_RUNNING}`,
  ]);
  strictEqual(CH_RUNNING, "Weird Al Yankovic");
});

Deno.test("planContainer() appends /bin to a $PATH without it", () => {
  const path = (p: string) => plan({}, { env: [["PATH", p]] }).env[0];
  strictEqual(path("/usr/bin"), "PATH=/usr/bin:/bin");
  strictEqual(path("/usr/bin:/bin/"), "PATH=/usr/bin:/bin/");
  strictEqual(path("/bin:/usr/bin"), "PATH=/bin:/usr/bin");
  strictEqual(path("/usr/local/bin"), "PATH=/usr/local/bin:/bin");
});

Deno.test("planContainer() warns when $PATH is not set", () => {
  const p = plan({}, { env: [["HOME", "/home/den"]] });
  deepStrictEqual(p.warnings, ["$PATH not set"]);
  deepStrictEqual(p.env, ["HOME=/home/den", `CH_RUNNING=${CH_RUNNING}`]);
});

Deno.test("planContainer() removes $TMPDIR", () => {
  const p = plan({}, {
    env: [["TMPDIR", "/scratch"], ["A", "1"]],
    fs: fakeFs({ ...HOST, ...IMAGE, "/scratch": "dir" }),
  });
  deepStrictEqual(p.env, ["A=1", `CH_RUNNING=${CH_RUNNING}`]);
  deepStrictEqual(p.warnings, ["$PATH not set"]);
});

Deno.test("planContainer() sets CH_RUNNING last, whatever the user does", () => {
  deepStrictEqual(
    plan({ envOps: [{ kind: "unset", glob: "*" }] }).env,
    [`CH_RUNNING=${CH_RUNNING}`],
  );
  deepStrictEqual(
    plan({ envOps: [{ kind: "set", text: "CH_RUNNING=no" }] }, {
      env: [["CH_RUNNING", "x"], ["A", "1"]],
    }).env,
    ["A=1", `CH_RUNNING=${CH_RUNNING}`],
  );
});

Deno.test("planContainer() applies image env over the host's, before --set-env", () => {
  const p = plan(
    { envOps: [{ kind: "set", text: "B=user:$A" }] },
    { env: [["PATH", "/bin"], ["A", "host"], ["B", "host"]] },
    { env: ["A=img", "B=img", "C=$A", "bad", "=x"] },
  );
  deepStrictEqual(p.env, [
    "PATH=/bin",
    "A=img",
    "C=$A",
    "B=user:img",
    `CH_RUNNING=${CH_RUNNING}`,
  ]);
});

Deno.test("planContainer() --no-image-env skips the image's env", () => {
  const p = plan(
    { imageEnv: false },
    { env: [["PATH", "/bin"], ["A", "host"]] },
    { env: ["A=img", "B=img"] },
  );
  deepStrictEqual(p.env, ["PATH=/bin", "A=host", `CH_RUNNING=${CH_RUNNING}`]);
});

Deno.test("planContainer() --unset-env can remove image env", () => {
  const p = plan(
    { envOps: [{ kind: "unset", glob: "IMG_*" }] },
    { env: [["PATH", "/bin"]] },
    { env: ["IMG_A=1", "IMG_B=2"] },
  );
  deepStrictEqual(p.env, ["PATH=/bin", `CH_RUNNING=${CH_RUNNING}`]);
});

Deno.test("planContainer() --env-no-expand keeps '$' literally", () => {
  const p = plan(
    { envNoExpand: true, envOps: [{ kind: "set", text: "A=$HOME" }] },
    { env: [["PATH", "/bin"], ["HOME", "/h"]] },
  );
  deepStrictEqual(p.env, [
    "PATH=/bin",
    "HOME=/h",
    "A=$HOME",
    `CH_RUNNING=${CH_RUNNING}`,
  ]);
});

Deno.test("planContainer() --home sets HOME=/home/$USER", () => {
  const p = plan({ home: true }, {
    user: "ada",
    env: [["PATH", "/bin"], ["HOME", "/home/den"], ["USER", "ada"]],
  });
  deepStrictEqual(p.env, [
    "PATH=/bin",
    "HOME=/home/ada",
    "USER=ada",
    `CH_RUNNING=${CH_RUNNING}`,
  ]);
  deepStrictEqual(p.ops[9], { kind: "mkdir", target: "/img/home/ada" });
});

Deno.test("planContainer() reads file env ops with FILE:LINE errors", () => {
  throws(
    () =>
      plan({
        envOps: [{ kind: "file", path: "/ch/environment", text: "A=1\nB\n" }],
      }),
    denError("can't parse variable: no delimiter: /ch/environment:2"),
  );
});

Deno.test("planContainer() does not mutate its options", () => {
  const o = opts({ envOps: [{ kind: "set", text: "A=1" }], command: [] });
  const before = structuredClone(o);
  planContainer(o, facts(), "/img", { cmd: ["sh"] });
  deepStrictEqual(o, before);
});

Deno.test("planContainer() binds /etc/machine-id and Cray dirs when host and image both have them", () => {
  const binds = (fs: Record<string, Node>) =>
    planContainer(opts(), facts({}, fs), "/img").ops
      .filter((o) => o.kind === "bind")
      .map((o) => o.kind === "bind" ? `${o.source} ${o.target} ${o.recursive}` : "");
  const both = binds({
    "/etc/machine-id": "file",
    "/img/etc/machine-id": "file",
    "/opt/cray/udreg": "dir",
    "/img/opt/cray/udreg": "dir",
    "/var/run/munge": "dir", // not in the image: skipped
    "/img/opt/cray/xpmem": "dir", // not on the host: skipped
  });
  ok(both.includes("/etc/machine-id /img/etc/machine-id false"));
  ok(both.includes("/opt/cray/udreg /img/opt/cray/udreg true"));
  ok(!both.some((b) => b.startsWith("/var/run/munge") || b.startsWith("/opt/cray/xpmem")));
  // A file on one side and a directory on the other is bound, and the
  // mount fails and says so (ch-run: an image whose /etc/hosts is a
  // directory is refused, not silently run without it).
  const mixed = binds({ "/etc/machine-id": "dir", "/img/etc/machine-id": "file" });
  ok(mixed.includes("/etc/machine-id /img/etc/machine-id true"));
});

Deno.test("planContainer() --home refuses a $USER or $HOME that would leave the tmpfs", () => {
  for (const user of ["../../leak", "a/b", "..", "."]) {
    throws(
      () => plan({ home: true }, { user }),
      denError(`--home: $USER is not a user name: ${JSON.stringify(user)}`),
    );
  }
  throws(
    () =>
      plan({ home: true }, { env: [["HOME", "/home/../etc"], ["PATH", "/bin"], ["USER", "den"]] }),
    denError('--home: $HOME is not an absolute path without "..": "/home/../etc"'),
  );
});

Deno.test("planContainer() --home's HOME wins over the image's ENV HOME", () => {
  const p = plan({ home: true }, {}, { env: ["HOME=/root", "A=1"] });
  ok(p.env.includes("HOME=/home/den"), p.env.join(" "));
  ok(p.env.includes("A=1"));
  // Without --home the image's value stands.
  ok(plan({}, {}, { env: ["HOME=/root"] }).env.includes("HOME=/root"));
});

Deno.test("planContainer() notes what -v says: dummy ids, each variable set", () => {
  const p = plan({ uid: 8675309, gid: 8675310, envOps: [{ kind: "set", text: "foo=$test:app" }] });
  deepStrictEqual(p.notes, [
    "UID 8675309 not found; using dummy info",
    "GID 8675310 not found; using dummy info",
    "environment: foo=app",
  ]);
  const raw = plan({ envNoExpand: true, envOps: [{ kind: "set", text: "foo=$test:app" }] });
  deepStrictEqual(raw.notes, ["environment: foo=$test:app"]);
});

Deno.test("planContainer() looks up a destination under /tmp in the host's $TMPDIR", () => {
  // /tmp/x exists in the host's /tmp (bound at /tmp), not in the image.
  const p = planContainer(opts({ binds: [{ source: "/data", target: "/tmp/x" }] }), {
    ...facts(),
    fs: fakeFs({ ...HOST, ...IMAGE, "/tmp/x": "dir" }),
  }, "/img");
  deepStrictEqual(p.ops.find((o) => o.kind === "bind" && o.source === "/data"), {
    kind: "bind",
    source: "/data",
    target: "/img/tmp/x",
    recursive: true,
  });
  deepStrictEqual(p.create, []);
});

Deno.test("planContainer() -w never creates a mount point inside a mounted tree", () => {
  throws(
    () => plan({ write: true, binds: [{ source: "/data", target: "/tmp/new" }] }),
    denError(
      "can't mkdir: /img/tmp/new under existing bind-mount /img/tmp (mount points are made in the image only)",
    ),
  );
  throws(
    () => plan({ write: true, binds: [{ source: "/data", target: "/proc/nope" }] }),
    denError(
      "can't mkdir: /img/proc/nope under existing bind-mount /img/proc (mount points are made in the image only)",
    ),
  );
  // Under an earlier -b, too.
  throws(
    () =>
      plan({
        write: true,
        binds: [{ source: "/data", target: "/mnt" }, { source: "/data", target: "/mnt/sub" }],
      }),
    denError(
      "can't mkdir: /img/mnt/sub under existing bind-mount /img/mnt (mount points are made in the image only)",
    ),
  );
});

Deno.test("planContainer() refuses an absolute link in a mounted tree (the shared /tmp)", () => {
  // A link someone left in the host's shared /tmp never redirects a bind.
  throws(
    () =>
      planContainer(opts({ binds: [{ source: "/data", target: "/tmp/link" }] }), {
        ...facts(),
        fs: fakeFs({ ...HOST, ...IMAGE, "/tmp/link": { link: "/etc" }, "/etc": "dir" }),
      }, "/img"),
    denError("can't bind: /etc not subdirectory of /img"),
  );
});

Deno.test("planContainer() -W: tmpfs on the image's /dev, overlay over the image, no remount", () => {
  const p = plan({ writeFake: "12%" });
  deepStrictEqual(p.ops.slice(0, 4), [
    { kind: "tmpfs", target: "/img/dev", options: "size=12%,mode=0755" },
    { kind: "mkdir", target: "/img/dev/upper" },
    { kind: "mkdir", target: "/img/dev/work" },
    {
      kind: "overlay",
      lower: "/img",
      upper: "/img/dev/upper",
      work: "/img/dev/work",
      target: "/img",
    },
  ]);
  deepStrictEqual(p.ops[4], { kind: "bind", source: "/dev", target: "/img/dev", recursive: true });
  ok(!p.ops.some((op) => op.kind === "remount-ro"));
  deepStrictEqual(p.create, []);
});

Deno.test("planContainer() -W makes missing mount points in the overlay, never on the host", () => {
  const p = plan({ writeFake: "1g", binds: [{ source: "/data/file.txt", target: "/new/dir/f" }] }, {
    fs: fakeFs({ ...HOST, ...IMAGE, "/img/etc/passwd": "dir" }),
  });
  deepStrictEqual(p.create, []);
  const made = p.ops.filter((op) => op.kind === "mkdir" || op.kind === "mkfile").slice(2);
  deepStrictEqual(made, [
    { kind: "mkdir", target: "/img/new" },
    { kind: "mkdir", target: "/img/new/dir" },
    { kind: "mkfile", target: "/img/new/dir/f" },
  ]);
  const i = p.ops.findIndex((op) => op.kind === "mkfile");
  deepStrictEqual(p.ops[i + 1], {
    kind: "bind",
    source: "/data/file.txt",
    target: "/img/new/dir/f",
    recursive: true,
  });
});

Deno.test("planContainer() -W needs the image's /dev; -W with -w is a usage error", () => {
  const fs = { ...HOST, ...IMAGE } as Record<string, Node>;
  delete fs["/img/dev"];
  throws(
    () => planContainer(opts({ writeFake: "12%" }), facts({ fs: fakeFs(fs) }), "/img"),
    denError("--write-fake: the image has no directory /dev: /img/dev"),
  );
  throws(
    () => plan({ writeFake: "12%", write: true }),
    denError(
      "--write and --write-fake are mutually exclusive",
      { exit: 64 },
    ),
  );
});
