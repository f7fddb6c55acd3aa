// den pull of one realistic multi-layer image pushed by skopeo in every layer
// format a registry serves (gzip, zstd, zstd:chunked, uncompressed) and as an
// OCI index and a Docker manifest list, by tag and by digest; each tree is
// compared with the one containers/storage makes of the same pull (skopeo
// into a vfs store of the test's own, as root). The image has what real
// layers carry: hard links (also to a lower layer), absolute, relative and
// dangling symlinks, whiteouts and opaque whiteouts of lower content, type
// changes, setuid/setgid/sticky and odd modes, a 0500 directory, names with
// spaces, quotes and Unicode, GNU and PAX long names and link targets,
// empty files, a FIFO. No sparse files: containers/storage's zstd:chunked
// writer refuses old GNU ones and writes PAX ones expanded after their
// sparse header, a tar that GNU tar refuses too.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { den, exists, hasUserns, HAVE_BUSYBOX, tempDir, which } from "./_helpers.ts";
import { makeTar } from "./_tar.ts";
import {
  ARCH,
  buildLayout,
  HAVE_REGISTRY,
  type Registry,
  sh,
  startRegistry,
} from "./registry_helpers.ts";

/** Why the test cannot run here, or undefined when it can. */
function missingHere(): string | undefined {
  if (!HAVE_REGISTRY) return "docker-registry, skopeo or tar not installed";
  if (!HAVE_BUSYBOX) return "busybox not installed";
  if (Deno.uid() !== 0) return "containers-storage's reference tree needs root";
  for (const cmd of ["mkfifo", "unshare", "buildah"]) {
    if (!which(cmd)) return `${cmd} not found`;
  }
  return undefined;
}
const missing = missingHere();

const OTHER = ARCH === "amd64" ? "arm64" : "amd64";
const LONG_DIR = `long/${"d".repeat(120)}/${"e".repeat(90)}`;
const LONG_FILE = `${"f".repeat(140)}.txt`;

/**
 * skopeo (or buildah) as root, with the blob-info cache
 * (/var/lib/containers/cache, fixed for root) on a tmpfs of its own mount
 * namespace: the host's cache stays as it was, and no push reuses the blob
 * of an earlier one in another format.
 */
function privately(cmd: string, args: string[]): Promise<string> {
  const lib = exists("/var/lib/containers") ? "/var/lib/containers" : "/var/lib";
  return sh([
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs tmpfs "$0" && exec "$@"',
    lib,
    cmd,
    ...args,
  ]);
}

function skopeo(args: string[]): Promise<string> {
  return privately("skopeo", args);
}

/**
 * A layer made by containers/storage itself (Go's tar writer, its own
 * whiteouts): buildah, with a vfs store under `work`, changes the image of
 * the OCI layout `from` and commits it to the layout `to`, tag t.
 */
async function buildahLayer(work: string, from: string, to: string): Promise<void> {
  const script = `c=$("$@" from -q "oci:${from}:t"); m=$("$@" mount "$c"); cd "$m"
    rm -r data/keep.txt opq2 swap/file-to-dir links/hl2; echo changed > links/hl1
    ln data/lower-src data/another-link; mkdir -p new/dir; echo n > new/dir/f
    chmod 0750 new/dir; mkfifo new/fifo; ln -s ../etc new/etc-link; chmod 0755 modes/m0444
    rm -r restricted; mkdir restricted; echo r > restricted/again; rm -r "$(dirname ${LONG_DIR})"
    cd /; "$@" umount "$c" >/dev/null; "$@" commit -q --format oci "$c" "oci:${to}:t" >/dev/null
    "$@" rm "$c" >/dev/null`;
  const store = `${work}/buildah`;
  await privately("sh", [
    "-euc",
    script,
    "sh",
    "buildah",
    `--root=${store}/root`,
    `--runroot=${store}/runroot`,
    "--storage-driver=vfs",
  ]);
}

/** Run a shell script as root in `dir`. */
async function shIn(dir: string, script: string): Promise<void> {
  await sh(["sh", "-euc", `cd "$1"; ${script}`, "sh", dir]);
}

/** A tar of the directory `dir` by GNU tar in `format` (gnu or pax). */
async function tarOf(dir: string, format: string): Promise<Uint8Array> {
  const out = `${dir}.tar`;
  await sh([
    "tar",
    "-C",
    dir,
    `--format=${format}`,
    "--numeric-owner",
    "--owner=0",
    "--group=0",
    "--sort=name",
    "-cf",
    out,
    ".",
  ]);
  const bytes = Deno.readFileSync(out);
  Deno.removeSync(out);
  return bytes;
}

/** The three layers above busybox. */
async function buildLayers(work: string): Promise<Uint8Array[]> {
  // Layer 2 (GNU format): content that the layers above change or hide.
  const lower = `${work}/lower`;
  Deno.mkdirSync(lower);
  await shIn(
    lower,
    `mkdir -p data/olddir opq/sub swap/dir-to-file swap/sub
    echo old > data/old.txt; echo keep > data/keep.txt; echo f > data/olddir/f
    echo a > opq/a; echo b > opq/sub/b; echo x > swap/dir-to-file/x; mkdir opq2; echo x > opq2/x
    echo file > swap/file-to-dir; echo t > swap/sub/t
    ln -s sub swap/link-to-file; echo lower > data/lower-src
    chmod 0640 data/keep.txt; chmod 0750 data/olddir`,
  );
  // Layer 3 (PAX format): links, modes, names, long names, special files.
  const upper = `${work}/upper`;
  Deno.mkdirSync(upper);
  await shIn(
    upper,
    `mkdir -p data opq links modes restricted/inner "${LONG_DIR}" names empty-dir
    : > data/.wh.old.txt; : > data/.wh.olddir; : > opq/.wh..wh..opq; echo new > opq/new
    echo hard > links/hl1; ln links/hl1 links/hl2; ln links/hl1 "links/hl 3"
    ln -s /etc/image-marker links/abs; ln -s ../etc/image-marker links/rel
    ln -s ../nowhere links/dangling; ln -s ../data links/dirlink
    ln -s "../${LONG_DIR}/${LONG_FILE}" links/long-target
    for m in 4755 2755 6711 0444 0000 0604 0711 1644; do echo $m > modes/m$m; chmod $m modes/m$m; done
    mkdir modes/sticky modes/d1755 modes/d2700 modes/d0555 modes/d0311
    chmod 1777 modes/sticky; chmod 1755 modes/d1755; chmod 2700 modes/d2700
    chmod 0555 modes/d0555; chmod 0311 modes/d0311
    echo inner > restricted/inner/file; chmod 0400 restricted/inner/file
    chmod 0500 restricted/inner; chmod 0500 restricted
    echo sp > "names/with space.txt"; echo u > "names/ünïcødé 名前.txt"
    echo q > "names/q\\"uote'back\\\\slash"; echo long > "${LONG_DIR}/${LONG_FILE}"
    ln "${LONG_DIR}/${LONG_FILE}" "links/${LONG_FILE}"
    : > empty-file; mkfifo -m 0640 fifo
    head -c 3000000 /dev/urandom > big.bin
    touch -h -d @1600000000 links/abs; touch -d @1500000000 data opq modes/m0604`,
  );
  const layers = [await tarOf(lower, "gnu"), await tarOf(upper, "pax")];
  // Layer 4, written by hand: what GNU tar does not make from a directory.
  const t = 1_700_000_000;
  layers.push(makeTar([
    // Type changes: directory -> file, file -> directory, symlink -> file.
    { name: "swap/dir-to-file", data: "now a file\n", mode: 0o644, mtime: t },
    { name: "swap/file-to-dir/", type: "dir", mode: 0o755, mtime: t },
    { name: "swap/file-to-dir/y", data: "y\n", mode: 0o644, mtime: t },
    { name: "swap/link-to-file", data: "was a link\n", mode: 0o600, mtime: t },
    // A hard link to a file of a lower layer; GNU long names and link names.
    { name: "data/lower-link", type: "hardlink", linkname: "data/lower-src", mtime: t },
    { name: `gnu/${"g".repeat(150)}`, data: "gnu long\n", gnuLong: true, mtime: t },
    {
      name: `gnu/${"h".repeat(130)}`,
      type: "symlink",
      linkname: `${"g".repeat(150)}`,
      gnuLong: true,
      mtime: t,
    },
    // A whiteout of a directory that layer 3 made (inside a 0500 one).
    { name: "restricted/.wh.inner", mtime: t },
    // An opaque whiteout after an entry of the same layer hides lower layers
    // only. (A plain whiteout of a same-layer file is left out: the image
    // spec says it hides lower layers only, as den does, and
    // containers/storage removes the file.)
    { name: "opq2/y", data: "y\n", mode: 0o644, mtime: t },
    { name: "opq2/.wh..wh..opq", mtime: t },
  ]));
  return layers;
}

interface Node {
  type: string;
  mode: number;
  size?: number;
  sha256?: string;
  target?: string;
  mtime?: number;
  /** dev:ino of a file with several links. */
  inode?: string;
}

async function digest(path: string): Promise<string> {
  const h = await crypto.subtle.digest("SHA-256", Deno.readFileSync(path));
  return [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function typeOf(st: Deno.FileInfo): string {
  if (st.isFile) return "file";
  if (st.isDirectory) return "dir";
  if (st.isSymlink) return "symlink";
  if (st.isFifo) return "fifo";
  if (st.isCharDevice) return "char";
  if (st.isBlockDevice) return "block";
  return "other";
}

/** Every path under root (relative, "" the root) and what it is. */
async function snapshot(root: string): Promise<Map<string, Node>> {
  const out = new Map<string, Node>();
  const walk = async (rel: string) => {
    const path = rel ? `${root}/${rel}` : root;
    const st = Deno.lstatSync(path);
    const node: Node = { type: typeOf(st), mode: (st.mode ?? 0) & 0o7777 };
    if (st.isFile) {
      node.size = st.size;
      node.sha256 = await digest(path);
      if ((st.nlink ?? 1) > 1) node.inode = `${st.dev}:${st.ino}`;
    }
    if (st.isSymlink) node.target = Deno.readLinkSync(path);
    node.mtime = Math.floor((st.mtime?.getTime() ?? 0) / 1000);
    out.set(rel, node);
    if (st.isDirectory) {
      const names = [...Deno.readDirSync(path)].map((e) => e.name).sort();
      for (const n of names) await walk(rel ? `${rel}/${n}` : n);
    }
  };
  await walk("");
  return out;
}

/** The hard-link groups of a snapshot, as sorted lists of paths. */
function linkGroups(tree: Map<string, Node>): string[][] {
  const groups = new Map<string, string[]>();
  for (const [p, n] of tree) {
    if (n.inode) groups.set(n.inode, [...(groups.get(n.inode) ?? []), p]);
  }
  return [...groups.values()].map((g) => g.sort()).sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/**
 * What den, run by an unprivileged user, documents it does to a mode
 * (image/unpack_layer.ts): files and directories stay writable and readable
 * for their owner (files u+rw, directories u+rwx) and lose setuid and setgid;
 * FIFOs are files of the user's like any other.
 */
function denMode(n: Node): number {
  if (n.type === "dir") return (n.mode & 0o1777) | 0o700;
  if (n.type === "file" || n.type === "fifo") return (n.mode & 0o1777) | 0o600;
  return n.mode;
}

/** What den adds or remakes to make an image runnable (unpack_image.ts). */
function isDens(p: string): boolean {
  return p === "ch" || p.startsWith("ch/");
}

/**
 * Differences between den's tree and containers/storage's, as lines.
 * Directories that a layer changed without an entry of their own have the
 * time of that layer's unpack (since `start`, seconds) in both.
 */
async function compareTrees(denRoot: string, refRoot: string, start: number): Promise<string[]> {
  const got = await snapshot(denRoot);
  const want = await snapshot(refRoot);
  const diffs: string[] = [];
  for (const [p, w] of want) {
    if (isDens(p)) continue;
    // Documented (README, den unpack): device nodes are skipped.
    if (w.type === "char" || w.type === "block") {
      if (got.has(p)) diffs.push(`not skipped: ${JSON.stringify(p)} (${w.type})`);
      continue;
    }
    const g = got.get(p);
    if (!g) {
      diffs.push(`missing: ${JSON.stringify(p)} (${w.type})`);
      continue;
    }
    const field = (what: string, a: unknown, b: unknown) => {
      if (a !== b) diffs.push(`${what} of ${JSON.stringify(p)}: den ${a}, containers/storage ${b}`);
    };
    field("type", g.type, w.type);
    if (g.type !== w.type) continue;
    // The root gets ch/; den run needs /tmp to be 1777 (makeRunnable).
    if (p !== "tmp" && g.type !== "symlink") {
      field("mode", g.mode.toString(8), denMode(w).toString(8));
    }
    field("size", g.size, w.size);
    field("sha256", g.sha256, w.sha256);
    field("target", g.target, w.target);
    if (w.type === "dir" && w.mtime! >= start) ok(g.mtime! >= start, `mtime of ${p}`);
    else if (p !== "") field("mtime", g.mtime, w.mtime);
  }
  for (const [p, g] of got) {
    if (!want.has(p) && !isDens(p)) diffs.push(`extra: ${JSON.stringify(p)} (${g.type})`);
  }
  const gl = JSON.stringify(linkGroups(got));
  const wl = JSON.stringify(linkGroups(want));
  if (gl !== wl) diffs.push(`hard links: den ${gl}, containers/storage ${wl}`);
  return diffs;
}

/** The image has what it is meant to test (in containers/storage's tree). */
async function checkFixture(refRoot: string): Promise<void> {
  const tree = await snapshot(refRoot);
  const at = (p: string) => tree.get(p);
  for (
    const gone of ["data/old.txt", "data/olddir", "opq/a", "opq/sub", "opq2/x", "restricted/inner"]
  ) {
    strictEqual(at(gone), undefined, gone);
  }
  for (const p of ["opq/new", "opq2/y", "swap/dir-to-file", "swap/link-to-file"]) {
    strictEqual(at(p)?.type, "file", p);
  }
  strictEqual(at("swap/file-to-dir")?.type, "dir");
  strictEqual(at("fifo")?.type, "fifo");
  strictEqual(at("modes/m6711")?.mode, 0o6711);
  strictEqual(at("modes/d1755")?.mode, 0o1755);
  strictEqual(at("restricted")?.mode, 0o500);
  strictEqual(at("links/abs")?.target, "/etc/image-marker");
  strictEqual(at(`${LONG_DIR}/${LONG_FILE}`)?.size, 5);
  strictEqual(at("data/lower-src")?.mtime, 1_700_000_000);
  const groups = linkGroups(tree);
  ok(groups.some((g) => g.length === 3 && g[0] === "links/hl 3"), JSON.stringify(groups));
  ok(groups.some((g) => g.includes("data/lower-link")), JSON.stringify(groups));
}

/** The digest the registry serves a manifest under. */
async function manifestDigest(reg: Registry, repo: string, tag: string, accept: string) {
  const r = await fetch(`http://${reg.host}/v2/${repo}/manifests/${tag}`, {
    headers: { accept },
  });
  await r.body?.cancel();
  strictEqual(r.status, 200, `${repo}:${tag}`);
  return r.headers.get("docker-content-digest")!;
}

/** buildah's layer changed what it is meant to (whiteouts of its own). */
async function checkBuildah(refRoot: string): Promise<void> {
  const tree = await snapshot(refRoot);
  for (const gone of ["data/keep.txt", "opq2", "swap/file-to-dir", "links/hl2", LONG_DIR]) {
    strictEqual(tree.get(gone), undefined, gone);
  }
  strictEqual(tree.get("restricted/again")?.type, "file");
  strictEqual(tree.get("restricted/inner"), undefined);
  strictEqual(tree.get("new/fifo")?.type, "fifo");
  strictEqual(tree.get("links/hl1")?.sha256, tree.get("links/hl 3")?.sha256);
}

/** "REPO@DIGEST" of the host's manifest in the list or index at `tag`. */
async function hostEntry(reg: Registry, tag: string, accept: string): Promise<string> {
  const r = await fetch(`http://${reg.host}/v2/test/formats/manifests/${tag}`, {
    headers: { accept },
  });
  const list = await r.json() as {
    manifests: { digest: string; platform: { architecture: string } }[];
  };
  const entry = list.manifests.find((m) => m.platform.architecture === ARCH);
  ok(entry, JSON.stringify(list));
  return `${reg.host}/test/formats@${entry.digest}`;
}

/** The layers the registry serves for a (single-image) tag. */
async function layersOf(
  reg: Registry,
  repo: string,
  ref: string,
): Promise<{ mediaType: string; annotations?: Record<string, string> }[]> {
  const r = await fetch(`http://${reg.host}/v2/${repo}/manifests/${ref}`, {
    headers: {
      accept: "application/vnd.oci.image.manifest.v1+json, " +
        "application/vnd.docker.distribution.manifest.v2+json",
    },
  });
  return (await r.json()).layers;
}

/**
 * containers/storage's tree of `ref`: skopeo copies it into a vfs store of
 * our own (no daemon, nothing host-wide), whose image's top layer directory
 * holds the whole tree.
 */
async function referenceTree(store: string, ref: string, name: string): Promise<string> {
  const spec = `[vfs@${store}/root+${store}/runroot]`;
  await skopeo([
    "copy",
    "--quiet",
    "--src-tls-verify=false",
    `docker://${ref}`,
    `containers-storage:${spec}localhost/${name}`,
  ]);
  const images = JSON.parse(Deno.readTextFileSync(`${store}/root/vfs-images/images.json`)) as {
    names?: string[];
    layer: string;
  }[];
  const image = images.find((i) => i.names?.some((n) => n.startsWith(`localhost/${name}:`)));
  ok(image, `${name} not in containers-storage`);
  return `${store}/root/vfs/dir/${image.layer}`;
}

Deno.test({
  name: missing
    ? `den pull: every layer format and list type, trees as containers/storage's (ignored: ${missing})`
    : "den pull: every layer format and list type, trees as containers/storage's",
  ignore: missing !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using reg = await startRegistry();
    await using tmp = tempDir("den-pull-formats-");
    const start = Math.floor(Date.now() / 1000);
    const build = `${tmp.path}/build`;
    const store = `${tmp.path}/containers`;
    Deno.mkdirSync(build);
    const extraLayers = await buildLayers(build);
    const opts = { tag: "t", marker: "formats", extraLayers };
    await buildLayout(`${build}/one`, { ...opts, platforms: [{ architecture: ARCH }] });
    await buildLayout(`${build}/multi`, {
      ...opts,
      platforms: [{ architecture: ARCH }, { architecture: OTHER }],
    });
    await buildahLayer(build, `${build}/one`, `${build}/buildah`);
    // The same image with uncompressed layers, in skopeo's dir format.
    await skopeo([
      "copy",
      "--quiet",
      "--dest-decompress",
      `oci:${build}/one:t`,
      `dir:${build}/raw`,
    ]);
    const repo = `${reg.host}/test/formats`;
    const copy = async (from: string, tag: string, ...extra: string[]) => {
      await skopeo([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        ...extra,
        from,
        `docker://${repo}:${tag}`,
      ]);
    };
    const raw = (tag: string, ...extra: string[]) => copy(`dir:${build}/raw`, tag, ...extra);
    await raw("gzip", "--dest-compress-format", "gzip");
    await raw("zstd", "--dest-compress-format", "zstd");
    // From gzip: skopeo 1.9's zstd:chunked writer fails on this image's
    // uncompressed layers ("short write").
    await copy(`oci:${build}/one:t`, "zstd-chunked", "--dest-compress-format", "zstd:chunked");
    await raw("v2s2", "--format", "v2s2");
    // After the others: a push after it reuses its uncompressed blobs, as
    // this Docker schema 2 one does.
    await raw("none", "--preserve-digests");
    await raw("v2s2-none", "--format", "v2s2");
    await copy(`oci:${build}/buildah:t`, "buildah");
    await copy(`oci:${build}/multi:t`, "index", "--all");
    await copy(`oci:${build}/multi:t`, "list", "--all", "--format", "v2s2");

    const layerMedia: Record<string, RegExp> = {
      gzip: /^application\/vnd\.oci\.image\.layer\.v1\.tar\+gzip$/,
      zstd: /^application\/vnd\.oci\.image\.layer\.v1\.tar\+zstd$/,
      "zstd-chunked": /^application\/vnd\.oci\.image\.layer\.v1\.tar\+zstd$/,
      none: /^application\/vnd\.oci\.image\.layer\.v1\.tar$/,
      v2s2: /^application\/vnd\.docker\.image\.rootfs\.diff\.tar\.gzip$/,
      "v2s2-none": /^application\/vnd\.docker\.image\.rootfs\.diff\.tar$/,
    };
    for (const [tag, re] of Object.entries(layerMedia)) {
      const layers = await layersOf(reg, "test/formats", tag);
      strictEqual(layers.length, 4);
      for (const l of layers) {
        ok(re.test(l.mediaType), `${tag}: ${l.mediaType}`);
        // zstd:chunked: a TOC in skippable frames after the files' frames.
        const toc = l.annotations?.["io.containers.zstd-chunked.manifest-position"];
        strictEqual(toc !== undefined, tag === "zstd-chunked", tag);
      }
    }
    const byDigest = async (tag: string, accept: string) =>
      `${repo}@${await manifestDigest(reg, "test/formats", tag, accept)}`;
    const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
    const OCI = "application/vnd.oci.image.manifest.v1+json";
    const LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
    const cases: [string, string][] = [
      ["gzip by tag", `${repo}:gzip`],
      ["zstd by tag", `${repo}:zstd`],
      ["zstd:chunked by digest", await byDigest("zstd-chunked", OCI)],
      ["uncompressed by tag", `${repo}:none`],
      ["Docker schema 2 by tag", `${repo}:v2s2`],
      ["Docker schema 2 uncompressed by tag", `${repo}:v2s2-none`],
      ["OCI index by digest", await byDigest("index", OCI_INDEX)],
      ["Docker manifest list by tag", `${repo}:list`],
      ["Docker manifest list by digest", await byDigest("list", LIST)],
      ["the host's manifest of the list by digest", await hostEntry(reg, "list", LIST)],
      ["a layer buildah committed on top, by tag", `${repo}:buildah`],
    ];
    const storage = `${tmp.path}/storage`;
    let n = 0;
    for (const [what, ref] of cases) {
      await t.step(`${what}: the tree containers/storage makes`, async () => {
        const dest = `${tmp.path}/img${++n}`;
        const r = await den(["pull", "-q", "-s", storage, ref, dest]);
        strictEqual(r.code, 0, r.stderr);
        // A store each: a zstd:chunked layer is stored under an ID of its
        // own, and the image's ID (its config's) is the same.
        const refTree = await referenceTree(`${store}/${n}`, ref, "formats");
        if (n === 1) await checkFixture(refTree);
        if (what.includes("buildah")) await checkBuildah(refTree);
        deepStrictEqual(await compareTrees(dest, refTree, start), []);
        if (hasUserns()) {
          const cat = await den(["run", dest, "--", "/bin/cat", "/opq/new"]);
          strictEqual(cat.stdout, "new\n", cat.stderr);
          strictEqual(cat.code, 0);
        }
      });
    }
  },
});
