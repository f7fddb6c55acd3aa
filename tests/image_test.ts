// Integration tests: real archives from buildah/podman/skopeo/umoci, unpacked
// by the real `den` CLI (a subprocess), plus hostile archives with the exact
// error line. Tests needing a tool that is missing (or root, for buildah and
// podman) are ignored, never passed.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { makeDockerArchive, makeTar } from "./_tar.ts";

const REPO = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MAIN = `${REPO}/cli/main.ts`;
const isRoot = Deno.uid() === 0;

function has(tool: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${tool}`).isFile) return true;
    } catch {
      // next
    }
  }
  return false;
}

const BUSYBOX = ["/bin/busybox", "/usr/bin/busybox"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

async function sh(cmd: string[], env?: Record<string, string>): Promise<string> {
  const o = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
    env,
  })
    .output();
  const text = new TextDecoder().decode(o.stdout);
  if (!o.success) {
    throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  }
  return text;
}

async function den(...args: string[]) {
  const o = await new Deno.Command("deno", {
    args: ["run", "-A", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).output();
  return {
    code: o.code,
    stdout: new TextDecoder().decode(o.stdout),
    stderr: new TextDecoder().decode(o.stderr),
  };
}

function tmpdir() {
  const dir = Deno.makeTempDirSync({ prefix: "den-image-test-" });
  return {
    dir,
    ls: (p = "") => [...Deno.readDirSync(`${dir}/${p}`)].map((e) => e.name).sort(),
    [Symbol.dispose]() {
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** What every unpack of the test image must contain. */
function checkTree(root: string, opts: { layer2: boolean }) {
  ok(Deno.statSync(`${root}/bin/busybox`).isFile);
  strictEqual(Deno.readLinkSync(`${root}/bin/sh`), "busybox");
  strictEqual(Deno.readTextFileSync(`${root}/data/ünïcødé-名前.txt`), "unicode\n");
  const long = `${root}/data/${"d".repeat(120)}/${"f".repeat(150)}`;
  strictEqual(Deno.readTextFileSync(long), "long\n");
  strictEqual(
    Deno.statSync(`${root}/data/hard1`).ino,
    Deno.statSync(`${root}/data/hard2`).ino,
  );
  ok(Deno.statSync(`${root}/data/empty`).isDirectory);
  if (opts.layer2) {
    // layer 2 deleted data/gone and replaced data/opq's content
    deepStrictEqual([...Deno.readDirSync(`${root}/data`)].some((e) => e.name === "gone"), false);
    deepStrictEqual([...Deno.readDirSync(`${root}/data/opq`)].map((e) => e.name), ["new"]);
    strictEqual(Deno.readTextFileSync(`${root}/data/typechange`), "now a file\n");
  }
  for (const d of ["dev", "proc", "sys", "tmp", "home", "mnt"]) {
    ok(Deno.statSync(`${root}/${d}`).isDirectory);
  }
  ok(Deno.statSync(`${root}/etc/resolv.conf`).isFile);
  const meta = JSON.parse(Deno.readTextFileSync(`${root}/ch/metadata.json`));
  ok(meta["env_list"].includes("DEN_TEST=yes"));
  deepStrictEqual(meta.cmd, ["/bin/sh"]);
  strictEqual(meta.cwd, "/data");
  ok(Deno.readTextFileSync(`${root}/ch/environment`).includes("DEN_TEST=yes\n"));
}

/** Fill a rootfs directory with the first layer's content. */
function populate(root: string) {
  Deno.mkdirSync(`${root}/bin`, { recursive: true });
  Deno.copyFileSync(BUSYBOX!, `${root}/bin/busybox`);
  Deno.chmodSync(`${root}/bin/busybox`, 0o755);
  Deno.symlinkSync("busybox", `${root}/bin/sh`);
  Deno.mkdirSync(`${root}/etc`, { recursive: true });
  Deno.symlinkSync("/run/systemd/resolve/stub-resolv.conf", `${root}/etc/resolv.conf`);
  const d = `${root}/data`;
  Deno.mkdirSync(`${d}/${"d".repeat(120)}`, { recursive: true });
  Deno.writeTextFileSync(`${d}/${"d".repeat(120)}/${"f".repeat(150)}`, "long\n");
  Deno.writeTextFileSync(`${d}/ünïcødé-名前.txt`, "unicode\n");
  Deno.writeTextFileSync(`${d}/hard1`, "hard\n");
  Deno.linkSync(`${d}/hard1`, `${d}/hard2`);
  Deno.mkdirSync(`${d}/empty`);
  Deno.writeTextFileSync(`${d}/gone`, "gone\n");
  Deno.mkdirSync(`${d}/opq`);
  Deno.writeTextFileSync(`${d}/opq/old`, "old\n");
  Deno.mkdirSync(`${d}/typechange`);
  Deno.writeTextFileSync(`${d}/typechange/x`, "x\n");
}

/** Apply the second layer's changes to a rootfs directory. */
function modify(root: string) {
  const d = `${root}/data`;
  Deno.removeSync(`${d}/gone`);
  Deno.removeSync(`${d}/opq`, { recursive: true });
  Deno.mkdirSync(`${d}/opq`);
  Deno.writeTextFileSync(`${d}/opq/new`, "new\n");
  Deno.removeSync(`${d}/typechange`, { recursive: true });
  Deno.writeTextFileSync(`${d}/typechange`, "now a file\n");
}

const canBuildah = isRoot && has("buildah") && has("podman") && has("skopeo") && !!BUSYBOX;

Deno.test({
  name: "den unpack: buildah image via podman save and skopeo copy, all formats",
  ignore: !canBuildah,
  async fn() {
    using t = tmpdir();
    const tag = `localhost/den-test-${Deno.pid}:latest`;
    const ctr = (await sh(["buildah", "from", "scratch"])).trim();
    let ctr2 = "";
    try {
      let mnt = (await sh(["buildah", "mount", ctr])).trim();
      populate(mnt);
      await sh(["buildah", "umount", ctr]);
      await sh([
        "buildah",
        "config",
        "--env",
        "DEN_TEST=yes",
        "--cmd",
        "/bin/sh",
        "--workingdir",
        "/data",
        ctr,
      ]);
      await sh(["buildah", "commit", "-q", ctr, tag]);
      ctr2 = (await sh(["buildah", "from", tag])).trim();
      mnt = (await sh(["buildah", "mount", ctr2])).trim();
      modify(mnt);
      await sh(["buildah", "umount", ctr2]);
      await sh(["buildah", "commit", "-q", ctr2, tag]);
      const archives: [string, string[]][] = [
        ["podman-docker.tar", [
          "podman",
          "save",
          "-q",
          "--format",
          "docker-archive",
          "-o",
          `${t.dir}/podman-docker.tar`,
          tag,
        ]],
        ["podman-oci.tar", [
          "podman",
          "save",
          "-q",
          "--format",
          "oci-archive",
          "-o",
          `${t.dir}/podman-oci.tar`,
          tag,
        ]],
        ["skopeo-oci.tar", [
          "skopeo",
          "copy",
          "-q",
          `containers-storage:${tag}`,
          `oci-archive:${t.dir}/skopeo-oci.tar`,
        ]],
        ["skopeo-layout", [
          "skopeo",
          "copy",
          "-q",
          `containers-storage:${tag}`,
          `oci:${t.dir}/skopeo-layout:latest`,
        ]],
        ["skopeo-docker.tar", [
          "skopeo",
          "copy",
          "-q",
          `containers-storage:${tag}`,
          `docker-archive:${t.dir}/skopeo-docker.tar:${tag}`,
        ]],
        ["skopeo-zstd", [
          "skopeo",
          "copy",
          "-q",
          "--dest-compress-format",
          "zstd",
          `containers-storage:${tag}`,
          `oci:${t.dir}/skopeo-zstd:latest`,
        ]],
      ];
      for (const [name, cmd] of archives) {
        await sh(cmd);
        const r = await den("unpack", `${t.dir}/${name}`, `${t.dir}/out-${name}`);
        strictEqual(r.code, 0, `${name}: ${r.stderr}`);
        ok(/^den: unpacked .*: 2 layers, \d+ files, .* in .* s\n$/.test(r.stderr), r.stderr);
        checkTree(`${t.dir}/out-${name}`, { layer2: true });
      }
    } finally {
      await sh(["buildah", "rm", ctr]).catch(() => "");
      if (ctr2) await sh(["buildah", "rm", ctr2]).catch(() => "");
      await sh(["podman", "rmi", "-f", tag]).catch(() => "");
    }
  },
});

Deno.test({
  name: "den unpack: umoci image (layers without end-of-archive blocks)",
  ignore: !has("umoci") || !BUSYBOX,
  async fn() {
    using t = tmpdir();
    const layout = `${t.dir}/layout`;
    const rootless = isRoot ? [] : ["--rootless"];
    await sh(["umoci", "init", "--layout", layout]);
    await sh(["umoci", "new", "--image", `${layout}:t`]);
    await sh(["umoci", "unpack", ...rootless, "--image", `${layout}:t`, `${t.dir}/bundle`]);
    populate(`${t.dir}/bundle/rootfs`);
    await sh(["umoci", "repack", "--image", `${layout}:t`, `${t.dir}/bundle`]);
    modify(`${t.dir}/bundle/rootfs`);
    await sh(["umoci", "repack", "--image", `${layout}:t`, `${t.dir}/bundle`]);
    await sh([
      "umoci",
      "config",
      "--image",
      `${layout}:t`,
      "--config.env",
      "DEN_TEST=yes",
      "--config.cmd",
      "/bin/sh",
      "--config.workingdir",
      "/data",
    ]);
    const r = await den("unpack", layout, `${t.dir}/out`);
    strictEqual(r.code, 0, r.stderr);
    checkTree(`${t.dir}/out`, { layer2: true });
    // And as a tar of the layout.
    await sh(["tar", "-C", layout, "-cf", `${t.dir}/layout.tar`, "."]);
    const r2 = await den("unpack", "-q", `${t.dir}/layout.tar`, `${t.dir}/out2`);
    strictEqual(r2.code, 0, r2.stderr);
    strictEqual(r2.stderr, "");
    checkTree(`${t.dir}/out2`, { layer2: true });
  },
});

Deno.test({
  name: "den unpack: plain rootfs tarball made by GNU tar (gzip, zstd)",
  ignore: !has("tar") || !BUSYBOX,
  async fn() {
    using t = tmpdir();
    populate(`${t.dir}/rootfs`);
    await sh(["tar", "-C", `${t.dir}/rootfs`, "-czf", `${t.dir}/root.tgz`, "."]);
    const r = await den("unpack", `${t.dir}/root.tgz`, `${t.dir}/out`);
    strictEqual(r.code, 0, r.stderr);
    ok(Deno.statSync(`${t.dir}/out/bin/busybox`).isFile);
    strictEqual(Deno.readLinkSync(`${t.dir}/out/bin/sh`), "busybox");
    const meta = JSON.parse(Deno.readTextFileSync(`${t.dir}/out/ch/metadata.json`));
    deepStrictEqual(meta.env, {});
  },
});

// Hostile archives through the CLI: exact error line, exit 31, nothing
// outside DEST changed, no DEST and no temp dir left.
const hostile: { name: string; layers: (outside: string) => Uint8Array[]; error: string }[] = [
  {
    name: "dot-dot path",
    layers: () => [makeTar([{ name: "../../etc/passwd", data: "x" }])],
    error: 'den: error: unpack layer 1/1: refusing entry outside rootfs: "../../etc/passwd"',
  },
  {
    name: "hard link outside",
    layers: () => [makeTar([{ name: "h", type: "hardlink", linkname: "../../x" }])],
    error: 'den: error: unpack layer 1/1: refusing hard link outside rootfs: "../../x"',
  },
  {
    name: "symlink named .",
    layers: (o) => [makeTar([{ name: ".", type: "symlink", linkname: o }])],
    error: 'den: error: unpack layer 1/1: refusing to replace rootfs with symlink: "."',
  },
  {
    name: "whiteout climbing out",
    layers: () => [makeTar([{ name: "a/", type: "dir" }]), makeTar([{ name: "../.wh.outside" }])],
    error: 'den: error: unpack layer 2/2: refusing entry outside rootfs: "../.wh.outside"',
  },
  {
    name: "symlink to outside, then a write through it",
    layers: (o) => [
      makeTar([{ name: "evil", type: "symlink", linkname: o }, {
        name: "evil/sentinel",
        data: "pwned",
      }]),
    ],
    error: "den: error: unpack layer 1/1: refusing entry through symlink outside rootfs: " +
      '"evil" ("evil" -> "OUTSIDE")',
  },
  {
    name: "symlink to /, then a write through it in the next layer",
    layers: () => [
      makeTar([{ name: "root", type: "symlink", linkname: "/" }]),
      makeTar([{ name: "root/etc/sentinel", data: "pwned" }]),
    ],
    error: "den: error: unpack layer 2/2: refusing entry through symlink outside rootfs: " +
      '"root/etc" ("root" -> "/")',
  },
  {
    name: "symlink climbing out with .., then a write through it",
    layers: () => [
      makeTar([{ name: "up", type: "symlink", linkname: "../.." }, {
        name: "up/outside/x",
        data: "pwned",
      }]),
    ],
    error: "den: error: unpack layer 1/1: refusing entry through symlink outside rootfs: " +
      '"up/outside" ("up" -> "../..")',
  },
];

for (const h of hostile) {
  Deno.test(`den unpack refuses hostile archive: ${h.name}`, async () => {
    using t = tmpdir();
    const outside = `${t.dir}/outside`;
    Deno.mkdirSync(outside);
    Deno.writeTextFileSync(`${outside}/sentinel`, "keep");
    Deno.writeFileSync(`${t.dir}/a.tar`, await makeDockerArchive(h.layers(outside)));
    const r = await den("unpack", `${t.dir}/a.tar`, `${t.dir}/out`);
    strictEqual(r.stderr.split("\n")[0], h.error.replace("OUTSIDE", outside));
    strictEqual(r.code, 31);
    deepStrictEqual(t.ls(), ["a.tar", "outside"]);
    deepStrictEqual(t.ls("outside"), ["sentinel"]);
    strictEqual(Deno.readTextFileSync(`${outside}/sentinel`), "keep");
  });
}

Deno.test("den unpack/images/inspect/rm with a storage directory", async () => {
  using t = tmpdir();
  Deno.writeFileSync(
    `${t.dir}/a.tar`,
    await makeDockerArchive([makeTar([{ name: "f", data: "x" }])]),
  );
  const s = `${t.dir}/storage`;
  let r = await den("unpack", "-s", s, `${t.dir}/a.tar`, "img1");
  strictEqual(r.code, 0, r.stderr);
  ok(Deno.statSync(`${s}/img/img1/f`).isFile);
  r = await den("unpack", "-s", s, `${t.dir}/a.tar`, "img1");
  strictEqual(r.code, 31);
  strictEqual(r.stderr.split("\n")[0], `den: error: unpack ${s}/img/img1: destination exists`);
  r = await den("images", "-s", s, "--json");
  strictEqual(JSON.parse(r.stdout)[0].name, "img1");
  r = await den("inspect", "-s", s, "img1", "--json");
  deepStrictEqual(JSON.parse(r.stdout).cmd, ["/bin/sh"]);
  Deno.chmodSync(`${s}/img/img1/ch`, 0o500);
  r = await den("rm", "-s", s, "img1");
  strictEqual(r.code, 0, r.stderr);
  deepStrictEqual(t.ls("storage/img"), []);
  r = await den("unpack", "--bogus");
  strictEqual(r.code, 64);
  r = await den("unpack", "--help");
  ok(r.stdout.startsWith("Usage: den unpack"));
});
