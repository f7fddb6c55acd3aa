// `den unpack`, `den inspect`, `den images`, `den rm`: the image verbs.
import { DenError, osMessage, usageError } from "../error.ts";
import { countFlag, lastValue, type OptionSpec, parseArgv } from "./args.ts";
import { readImageMetadata } from "../image/metadata.ts";
import {
  checkImageName,
  imagePath,
  isImageName,
  listImages,
  removeTree,
  resolveImage,
  secureStorage,
  storageDir,
} from "../image/store.ts";
import { unpackImage, type UnpackProgress } from "../image/unpack_image.ts";
import { lazy } from "./lazy.ts";
import { info, out, output, warn } from "./output.ts";
import { formatBytes, StatusLine, unpackLine } from "./progress.ts";

export const UNPACK_USAGE = `Usage: den unpack [OPTIONS] ARCHIVE DEST

Unpack a container image into a directory you own.

ARCHIVE is a docker-archive (docker save, podman save), an OCI image archive
or OCI layout directory (skopeo copy, umoci, buildah push), or a plain root
filesystem tarball; uncompressed, gzip or zstd. DEST is a directory path if it
contains "/", else the name of an image in the storage directory. Files keep
the archive's times; what den adds (mount points, ch/) gets $SOURCE_DATE_EPOCH
(default 0).

Options:
  -q, --quiet             print nothing but errors
  -f, --force             replace DEST if it exists
      --arch ARCH         architecture to choose (default: this host's)
      --image NAME        image to choose from an archive of several
                          (tag, ref name or digest)
  -s, --storage DIR       storage directory (default: $DEN_STORAGE or
                          /var/tmp/$USER/den)
  -h, --help              print this help and exit
`;

export const INSPECT_USAGE = `Usage: den inspect [OPTIONS] IMAGE

Print an unpacked image's metadata (environment, entrypoint, cmd, ...).
IMAGE is a stored image name or a directory path.

Options:
      --json              print the metadata as JSON
  -s, --storage DIR       storage directory
  -h, --help              print this help and exit
`;

export const IMAGES_USAGE = `Usage: den images [OPTIONS]

List the images in the storage directory.

Options:
      --json              print a JSON list
  -s, --storage DIR       storage directory
  -h, --help              print this help and exit
`;

export const RM_USAGE = `Usage: den rm [OPTIONS] NAME...

Delete images from the storage directory.

Options:
      --gc                then remove the cached blobs no image refers to
                          any more (as den gc)
  -s, --storage DIR       storage directory
  -h, --help              print this help and exit
`;

/** The options of den inspect and den images. */
const LIST_OPTIONS: Record<string, OptionSpec> = {
  json: { takes: "flag" },
  storage: { short: "s", takes: "value" },
  help: { short: "h", takes: "flag" },
};

/** den unpack: returns the exit status or throws DenError. */
export async function unpackCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    quiet: { short: "q", takes: "flag" },
    force: { short: "f", takes: "flag" },
    arch: { takes: "value" },
    image: { takes: "value" },
    storage: { short: "s", takes: "value" },
    help: { short: "h", takes: "flag" },
  }, "den unpack --help");
  if (countFlag(parsed, "help")) {
    out(UNPACK_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 2) {
    throw usageError("unpack needs ARCHIVE and DEST", "see den unpack --help");
  }
  const [archive, destArg] = parsed.positionals as [string, string];
  const storage = lastValue(parsed, "storage");
  let dest = destArg;
  if (isImageName(destArg)) {
    checkImageName(destArg);
    secureStorage(storage, true);
    dest = imagePath(destArg, storage);
  }
  const quiet = countFlag(parsed, "quiet") > 0 || output.verbosity < 0;
  const tty = !quiet && Deno.stderr.isTerminal();
  const line = new StatusLine();
  const onProgress = tty ? (p: UnpackProgress) => line.show(unpackLine(p)) : undefined;
  let result;
  try {
    result = await unpackImage(archive, dest, {
      force: countFlag(parsed, "force") > 0,
      arch: lastValue(parsed, "arch"),
      image: lastValue(parsed, "image"),
      onProgress,
      onWarning: quiet ? undefined : (m) => warn(m),
    });
  } finally {
    line.clear();
  }
  if (!quiet) {
    const s = result.stats;
    const notes: string[] = [];
    if (s.devices) notes.push(`${s.devices} device${s.devices === 1 ? "" : "s"} skipped`);
    if (s.xattrs) notes.push(`xattrs of ${s.xattrs} files ignored`);
    const tail = notes.length ? ` (${notes.join(", ")})` : "";
    info(
      `unpacked ${result.name}: ${result.layers} layer${result.layers === 1 ? "" : "s"}, ` +
        `${s.files} files, ${formatBytes(s.bytes)} in ${result.seconds.toFixed(1)} s${tail}`,
    );
  }
  return 0;
}

/** den inspect IMAGE [--json] */
export function inspectCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, LIST_OPTIONS, "den inspect --help");
  const positionals = parsed.positionals;
  if (countFlag(parsed, "help")) {
    out(INSPECT_USAGE);
    return Promise.resolve(0);
  }
  if (positionals.length !== 1) {
    throw usageError("inspect needs one IMAGE", "see den inspect --help");
  }
  const rootfs = resolveImage(positionals[0]!, lastValue(parsed, "storage"));
  let isDir = false;
  try {
    isDir = Deno.statSync(rootfs).isDirectory;
  } catch {
    isDir = false;
  }
  if (!isDir) throw new DenError("inspect", "no such image or directory", { path: positionals[0] });
  const meta = readImageMetadata(rootfs);
  if (!meta) {
    throw new DenError("inspect", "no image metadata (ch/metadata.json)", { path: rootfs });
  }
  if (countFlag(parsed, "json")) {
    out(JSON.stringify(meta, null, 2));
    return Promise.resolve(0);
  }
  const list = (v: string[] | null) => v === null ? "(none)" : JSON.stringify(v);
  const lines = [
    `image:      ${meta.image ?? "(unknown)"}`,
    `path:       ${rootfs}`,
    `arch:       ${meta.arch ?? "(unknown)"}${meta.variant ? "/" + meta.variant : ""}`,
    `created:    ${meta.created ?? "(unknown)"}`,
    `entrypoint: ${list(meta.entrypoint)}`,
    `cmd:        ${list(meta.cmd)}`,
    `cwd:        ${meta.cwd}`,
    `user:       ${meta.user || "(unset)"}`,
    `env:`,
    ...meta["env_list"].map((kv) => `  ${kv}`),
    `labels:`,
    ...Object.entries(meta.labels).map(([k, v]) => `  ${k}=${v}`),
  ];
  out(lines.join("\n"));
  return Promise.resolve(0);
}

/** den images [--json] */
export function imagesCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, LIST_OPTIONS, "den images --help");
  if (countFlag(parsed, "help")) {
    out(IMAGES_USAGE);
    return Promise.resolve(0);
  }
  if (parsed.positionals.length) {
    throw usageError("images takes no arguments", "see den images --help");
  }
  const storage = lastValue(parsed, "storage");
  const images = listImages(storage);
  if (countFlag(parsed, "json")) {
    out(JSON.stringify(images, null, 2));
    return Promise.resolve(0);
  }
  if (images.length === 0) {
    info(`no images in ${storageDir(storage)}/img`);
    return Promise.resolve(0);
  }
  const rows = [["NAME", "SIZE", "ARCH", "CREATED"]];
  for (const i of images) {
    rows.push([
      i.name,
      i.size === null ? "-" : formatBytes(i.size),
      i.arch ?? "-",
      (i.created ?? i.unpacked ?? "-").replace(/\.\d+Z$/, "Z"),
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  out(
    rows.map((r) => r.map((v, c) => c === r.length - 1 ? v : v.padEnd(widths[c]!)).join("  ")).join(
      "\n",
    ),
  );
  return Promise.resolve(0);
}

/** den rm NAME... */
export async function rmCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    gc: { takes: "flag" },
    storage: { short: "s", takes: "value" },
    help: { short: "h", takes: "flag" },
  }, "den rm --help");
  if (countFlag(parsed, "help")) {
    out(RM_USAGE);
    return 0;
  }
  if (parsed.positionals.length === 0) {
    throw usageError("rm needs an image NAME", "see den rm --help");
  }
  const storage = lastValue(parsed, "storage");
  secureStorage(storage);
  for (const name of parsed.positionals) {
    checkImageName(name);
    const path = imagePath(name, storage);
    try {
      if (!Deno.lstatSync(path).isDirectory) throw new Error();
    } catch {
      throw new DenError("rm", "no such image", { path: name });
    }
    try {
      removeTree(path);
    } catch (e) {
      throw new DenError("rm", osMessage(e), {
        path,
        code: (e as { code?: string }).code,
      });
    }
    info(`deleted ${name}`);
  }
  if (countFlag(parsed, "gc")) {
    const { collectGarbage } = await lazy<typeof import("./gc.ts")>("./gc.ts");
    await collectGarbage(storage);
  }
  return 0;
}
