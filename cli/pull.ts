// `den pull`: an image from an OCI/Docker registry into a directory or storage.
import { usageError } from "../error.ts";
import { booleanValue, countFlag, lastValue, parseArgv } from "./args.ts";
import { formatBytes } from "./progress.ts";
import { squashSummary, type SquashWritten, writeSquash } from "./squash.ts";
import { errRaw, info, out, output, verbose, warn } from "./output.ts";
import { checkImageName, imagePath, isImageName } from "../image/store.ts";
import {
  type DownloadProgress,
  type LayerProgress,
  pullImage,
  type PullResult,
} from "../image/registry/pull.ts";
import { parsePullRef, storageNameOf } from "../image/registry/ref.ts";
import type { UnpackProgress } from "../image/unpack_image.ts";

export const PULL_USAGE = `Usage: den pull [OPTIONS] REF [DEST]
       den pull [OPTIONS] REF DEST.sqfs

Pull an image from an OCI/Docker registry and unpack it into a directory you own.

REF is a Docker reference: NAME[:TAG][@sha256:DIGEST], where NAME is
[REGISTRY[:PORT]/]PATH ("alpine" is docker.io/library/alpine:latest). DEST
is a directory path if it contains "/", else the name of an image in the
storage directory; without DEST, the image is stored under a name made from
REF ("alpine", "alpine+3.19"). Blobs are cached in STORAGE/blobs.

A DEST ending in .sqfs (or --squashfs) is one SquashFS file instead, packed
as den unpack packs one (mksquashfs, zstd, reproducible); it appears whole
or not at all.

Credentials come from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
~/.config/containers/auth.json, then ~/.docker/config.json.

Options:
  -q, --quiet             print nothing but errors
  -f, --force             replace DEST if it exists
      --arch ARCH         architecture to choose (default: this host's),
                          with a variant as in arm/v7
  -j, --jobs N            blobs downloaded in parallel (default 4)
      --cert-dir DIR      trust the CA certificates (*.crt) in DIR for this
                          registry, instead of those in
                          /etc/containers/certs.d/HOST[:PORT]/ and
                          ~/.config/containers/certs.d/HOST[:PORT]/
      --tls-verify=false  don't check the registry's certificate, and allow
                          plain http
  -s, --storage DIR       storage directory (default: $DEN_STORAGE or
                          /var/tmp/$USER/den)
      --squashfs          write DEST as a SquashFS file whatever its name
  -v, --verbose           say what den does
  -h, --help              print this help and exit
`;

/** den pull: returns the exit status or throws DenError. */
export async function pullCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    quiet: { short: "q", takes: "flag" },
    force: { short: "f", takes: "flag" },
    arch: { takes: "value" },
    jobs: { short: "j", takes: "value" },
    "tls-verify": { takes: "optional" },
    "cert-dir": { takes: "value" },
    storage: { short: "s", takes: "value" },
    squashfs: { takes: "flag" },
    verbose: { short: "v", takes: "flag" },
    help: { short: "h", takes: "flag" },
  }, "den pull --help");
  const positionals = parsed.positionals;
  if (countFlag(parsed, "help")) {
    out(PULL_USAGE);
    return 0;
  }
  if (positionals.length < 1 || positionals.length > 2) {
    throw usageError("pull needs REF and at most one DEST", "see den pull --help");
  }
  let jobs = 4;
  const jobsText = lastValue(parsed, "jobs");
  if (jobsText !== undefined) {
    jobs = Number(jobsText);
    if (!/^[0-9]+$/.test(jobsText) || jobs < 1 || jobs > 64) {
      throw usageError(`--jobs: expected a number from 1 to 64, got "${jobsText}"`);
    }
  }
  const tlsVerify = booleanValue(parsed, "tls-verify") ?? true;
  // A transfer with no data for this long is resumed (tests shorten it).
  const stall = Number(Deno.env.get("DEN_PULL_STALL_TIMEOUT") ?? 30);
  const stallSeconds = Number.isFinite(stall) && stall > 0 ? stall : 30;
  const arch = lastValue(parsed, "arch");
  if (arch !== undefined && !/^[a-z0-9_]+(\/[a-z0-9_]+){0,2}$/.test(arch)) {
    throw usageError(`--arch: invalid architecture "${arch}"`);
  }
  const storage = lastValue(parsed, "storage");
  const ref = parsePullRef(positionals[0]!);
  // A SquashFS DEST is a file path, even without a "/" (as for den unpack).
  const squash = countFlag(parsed, "squashfs") > 0 || (positionals[1]?.endsWith(".sqfs") ?? false);
  if (squash && positionals[1] === undefined) {
    throw usageError("--squashfs needs DEST", "see den pull --help");
  }
  const destArg = positionals[1] ?? storageNameOf(ref);
  const stored = !squash && isImageName(destArg);
  if (stored) checkImageName(destArg);
  const dest = stored ? imagePath(destArg, storage) : destArg;
  if (countFlag(parsed, "verbose")) output.verbosity = Math.max(output.verbosity, 1);
  const quiet = countFlag(parsed, "quiet") > 0 || output.verbosity < 0;
  if (quiet) output.verbosity = -1;
  const tty = !quiet && Deno.stderr.isTerminal();
  // Downloads and unpacking overlap: one board shows both, redrawn in place.
  let drawn = 0;
  let downloaded: DownloadProgress | undefined;
  let unpacked: UnpackProgress | undefined;
  const draw = () => {
    const columns = (() => {
      try {
        return Deno.consoleSize().columns || 80;
      } catch {
        return 80;
      }
    })();
    const lines = progressLines(ref.text, downloaded, unpacked, columns);
    errRaw((drawn ? `\x1b[${drawn}F` : "") + lines.map((l) => `\x1b[K${l}\n`).join("") + "\x1b[J");
    drawn = lines.length;
  };
  const eraseBoard = () => {
    if (drawn) errRaw(`\x1b[${drawn}F\x1b[J`);
    drawn = 0;
  };
  const force = countFlag(parsed, "force") > 0;
  const pull = (into: string) =>
    pullImage(ref, into, {
      storage,
      arch,
      jobs,
      tlsVerify,
      certDir: lastValue(parsed, "cert-dir"),
      force: force && !squash,
      stored,
      stallSeconds,
      onDownload: tty ? (p) => (downloaded = p, draw()) : undefined,
      onUnpack: tty ? (p) => (unpacked = p, draw()) : undefined,
      onWarning: quiet ? undefined : (m) => warn(m),
      log: (m) => verbose(m),
    });
  let result: PullResult | undefined;
  let written: SquashWritten | undefined;
  try {
    if (squash) {
      written = await writeSquash(dest, {
        op: "can't pull",
        force,
        progress: tty,
        source: {
          fill: async (root) => {
            result = await pull(root);
            eraseBoard(); // done: the mksquashfs line takes its place
          },
        },
      });
    } else {
      result = await pull(dest);
    }
  } finally {
    eraseBoard();
  }
  if (!result) throw new Error("internal error: pulled nothing");
  if (!quiet) {
    const name = stored ? destArg : dest;
    const digest = result.digest.slice(0, 19);
    if (!result.unpack) {
      info(`${name} is up to date (${result.ref}, ${digest})`);
    } else {
      const s = result.unpack.stats;
      info(
        `pulled ${result.ref} (${digest}) into ${name}: ${result.layers} layer` +
          `${result.layers === 1 ? "" : "s"}, ${formatBytes(result.bytes)} downloaded` +
          `${
            result.cached ? `, ${result.cached} blob${result.cached === 1 ? "" : "s"} cached` : ""
          }, ` +
          `${s.files} files in ${result.seconds.toFixed(1)} s`,
      );
    }
    if (written) info(squashSummary(dest, written, "pull"));
  }
  return 0;
}

/** Layers listed one per line at most; beyond, those done are summed up. */
const MAX_LAYER_LINES = 10;

/**
 * The progress board of a pull on a terminal: the image's totals, one bar
 * per layer blob (bytes, rate, time left), and the layer being unpacked.
 */
export function progressLines(
  ref: string,
  d: DownloadProgress | undefined,
  u: UnpackProgress | undefined,
  columns: number,
): string[] {
  const lines: string[] = [];
  const eta = (left: number, rate: number) => {
    if (!(rate > 0) || !Number.isFinite(left / rate)) return "";
    const s = Math.ceil(left / rate);
    return `  ETA ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  };
  if (!d) {
    lines.push(`den: pulling ${ref}`);
  } else {
    const rate = d.elapsed > 0 ? d.bytes / d.elapsed : 0;
    lines.push(
      `den: pulling ${ref}  ${formatBytes(d.bytes)}/${
        formatBytes(d.total)
      }  ${d.done}/${d.blobs} ` +
        `blobs  ${formatBytes(rate)}/s${d.done < d.blobs ? eta(d.total - d.bytes, rate) : ""}`,
    );
    const finished = (l: LayerProgress) => l.state === "cached" || l.state === "downloaded";
    let shown = d.layers;
    if (shown.length > MAX_LAYER_LINES) {
      shown = shown.filter((l) => !finished(l)).slice(0, MAX_LAYER_LINES - 1);
    }
    for (const l of shown) {
      const width = 20;
      const full = l.size > 0 ? Math.min(width, Math.floor((l.bytes / l.size) * width)) : width;
      const bar = `[${"#".repeat(full)}${"-".repeat(width - full)}]`;
      const took = l.started === undefined ? 0 : d.elapsed - l.started;
      const rate = took > 0 ? l.bytes / took : 0;
      const state = l.state === "downloading"
        ? `${formatBytes(l.bytes)}/${formatBytes(l.size)}  ${formatBytes(rate)}/s` +
          eta(l.size - l.bytes, rate)
        : `${formatBytes(l.size)}  ${l.state}`;
      lines.push(`  ${l.digest.slice(7, 19)} ${bar} ${state}`);
    }
    const hidden = d.layers.length - shown.length;
    if (hidden > 0) lines.push(`  ... and ${hidden} more layers done`);
  }
  if (u) {
    lines.push(
      `  unpacking layer ${u.layer}/${u.layers}: ${u.files} files, ${formatBytes(u.bytes)}`,
    );
  }
  return lines.map((l) => l.length > columns - 1 ? l.slice(0, Math.max(1, columns - 1)) : l);
}
