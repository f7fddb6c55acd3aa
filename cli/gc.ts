// `den gc`: remove cached blobs that no stored image refers to.
import { usageError } from "../error.ts";
import { countFlag, lastValue, parseArgv } from "./args.ts";
import { formatBytes } from "./progress.ts";
import { info, out, output, verbose } from "./output.ts";
import { gcBlobs } from "../image/registry/gc.ts";

export const GC_USAGE = `Usage: den gc [OPTIONS]

Remove the blobs in STORAGE/blobs that no image in storage refers to (those
of removed images, and of images pulled into directories outside storage),
and what pulls that died left behind (partial downloads, stale locks).
Blobs that pulls in progress need are kept.

Options:
  -n, --dry-run           say what would be removed; remove nothing
  -q, --quiet             print nothing but errors
  -v, --verbose           name each file removed
  -s, --storage DIR       storage directory (default: $DEN_STORAGE or
                          /var/tmp/$USER/den)
  -h, --help              print this help and exit
`;

/** den gc: returns the exit status or throws DenError. */
export async function gcCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    "dry-run": { short: "n", takes: "flag" },
    quiet: { short: "q", takes: "flag" },
    verbose: { short: "v", takes: "flag" },
    storage: { short: "s", takes: "value" },
    help: { short: "h", takes: "flag" },
  }, "den gc --help");
  if (countFlag(parsed, "help")) {
    out(GC_USAGE);
    return 0;
  }
  if (parsed.positionals.length) throw usageError("gc takes no arguments", "see den gc --help");
  if (countFlag(parsed, "verbose")) output.verbosity = Math.max(output.verbosity, 1);
  if (countFlag(parsed, "quiet")) output.verbosity = -1;
  await collectGarbage(lastValue(parsed, "storage"), countFlag(parsed, "dry-run") > 0);
  return 0;
}

/** Run gc on a storage directory and print its summary line (den gc, den rm --gc). */
export async function collectGarbage(storage: string | undefined, dryRun = false): Promise<void> {
  const r = await gcBlobs(storage, {
    dryRun,
    onRemove: (name, bytes) =>
      verbose(`${dryRun ? "would remove" : "removed"} ${describe(name)} (${formatBytes(bytes)})`),
    log: (msg) => verbose(msg),
  });
  const blobs = `${r.removed} blob${r.removed === 1 ? "" : "s"}`;
  const temp = r.parts + r.locks;
  const tail = temp ? `, ${temp} leftover${temp === 1 ? "" : "s"} of pulls that died` : "";
  info(
    dryRun
      ? `would remove ${blobs}${tail}, freeing ${formatBytes(r.bytes)} (${r.kept} kept; dry run)`
      : `removed ${blobs}${tail}, freed ${formatBytes(r.bytes)} (${r.kept} kept)`,
  );
}

/** "blob sha256:HEX", or the file's name for leftovers. */
function describe(name: string): string {
  return /^[a-f0-9]{64}$/.test(name) ? `blob sha256:${name}` : name;
}
