// `den convert SRC DEST`: an image directory to one SquashFS file, or back.

import { countFlag, parseArgv } from "./args.ts";
import { DenError, osMessage, usageError } from "../error.ts";
import { out } from "./output.ts";
import { INSTALL_HINT, makeBeside, squashSummary, writeSquash } from "./squash.ts";
import { isSquashfs } from "../run/squash.ts";

export const CONVERT_USAGE = `Usage: den convert [OPTION...] SRC DEST

Convert an image between a directory and a SquashFS file, by what SRC is:
  den convert DIR IMG.sqfs    pack DIR into one SquashFS file (mksquashfs, zstd),
                              reproducibly, as den unpack ... IMG.sqfs does
  den convert IMG.sqfs DIR    unpack IMG.sqfs into a new directory (unsquashfs)
DEST appears whole or not at all. A directory made from a SquashFS file
belongs to you and is writable by you; setuid and setgid bits are cleared.

  -f, --force    replace DEST if it exists
  -q, --quiet    print nothing but errors
  -h, --help     give this help list
`;

/** What SRC is, from its content: a directory, or a SquashFS file. */
function sourceKind(src: string): "dir" | "sqfs" {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(src);
  } catch (e) {
    throw new DenError("can't convert", osMessage(e), { path: src });
  }
  if (st.isDirectory) return "dir";
  if (st.isFile) {
    const head = new Uint8Array(4);
    try {
      using f = Deno.openSync(src);
      f.readSync(head);
    } catch (e) {
      throw new DenError("can't convert", osMessage(e), { path: src });
    }
    if (isSquashfs(head)) return "sqfs";
  }
  throw new DenError("can't convert", "not a directory or a SquashFS file", { path: src });
}

/** The real path of what path would name, for a DEST that may not exist yet. */
function realPathOf(path: string): string {
  const slash = path.lastIndexOf("/");
  const parent = slash < 0 ? "." : path.slice(0, slash) || "/";
  try {
    return `${Deno.realPathSync(parent)}/${path.slice(slash + 1)}`.replace(/^\/\//, "/");
  } catch (e) {
    throw new DenError("can't convert", osMessage(e), { path });
  }
}

/**
 * After unsquashfs: like den unpack's result, the tree is the user's to
 * change and remove (directories rwx, files rw for the owner), setuid and
 * setgid bits are gone. Symbolic links are never followed.
 */
function tameTree(dir: string): number {
  let entries = 0;
  const walk = (path: string, st: Deno.FileInfo) => {
    entries++;
    if (st.isSymlink) return;
    const mode = st.mode! & 0o7777;
    const want = (mode & ~0o6000) | (st.isDirectory ? 0o700 : 0o600);
    if (want !== mode) Deno.chmodSync(path, want);
    if (!st.isDirectory) return;
    for (const e of Deno.readDirSync(path)) {
      walk(`${path}/${e.name}`, Deno.lstatSync(`${path}/${e.name}`));
    }
  };
  walk(dir, Deno.lstatSync(dir));
  return entries;
}

/** `den convert`: returns the exit status. */
export async function convertCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    force: { short: "f", takes: "flag" },
    quiet: { short: "q", takes: "flag" },
    help: { short: "h", takes: "flag" },
  }, "den convert --help");
  if (countFlag(parsed, "help")) {
    out(CONVERT_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 2) {
    throw usageError("convert needs SRC and DEST", "see den convert --help");
  }
  const [src, dest] = parsed.positionals as [string, string];
  const kind = sourceKind(src);
  const real = realPathOf(dest);
  const srcReal = Deno.realPathSync(src);
  if (real === srcReal || (kind === "dir" && real.startsWith(`${srcReal}/`))) {
    throw usageError(`DEST is ${real === srcReal ? "SRC" : "inside SRC"}: ${dest}`);
  }
  const force = countFlag(parsed, "force") > 0;
  const quiet = countFlag(parsed, "quiet") > 0;
  const progress = !quiet && Deno.stderr.isTerminal();
  if (kind === "dir") {
    const written = await writeSquash(dest, {
      op: "can't convert",
      force,
      progress,
      source: { dir: src },
    });
    if (!quiet) out(squashSummary(dest, written));
    return 0;
  }
  const started = performance.now();
  const o = { op: "can't convert", force, progress };
  const entries = await makeBeside(dest, o, async (tmp, run) => {
    // unsquashfs 4.5.1 refuses names with "/" or ".." and writes through
    // no symbolic link it made (CVE-2021-40153, CVE-2021-41072); its tree
    // is in a fresh directory that only this den knows of until the rename.
    // A non-fatal error (a device node it may not make) fails too.
    const made = `${tmp}/root`;
    await run("unsquashfs", ["-no-progress", "-quiet", "-no-xattrs", "-dest", made, src], {
      path: src,
      hint: INSTALL_HINT,
      status: `unpacking ${src}`,
    });
    return { made, result: tameTree(made) };
  });
  if (!quiet) {
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    out(`${dest}: ${entries} entries from SquashFS (unsquashfs ${seconds} s)`);
  }
  return 0;
}
