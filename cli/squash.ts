// `den unpack ARCHIVE IMG.sqfs` (or --squashfs): one reproducible SquashFS
// file, built with mksquashfs from a temporary unpacked directory. Its
// writeSquash() and makeBeside() also make den pull's and den convert's.

import { countFlag, lastValue, type OptionSpec, parseArgv } from "./args.ts";
import { DenError, osMessage, usageError } from "../error.ts";
import { out } from "./output.ts";
import { StatusLine, unpackLine, withTicker } from "./progress.ts";
import { sourceDateEpoch, unpackImage } from "../image/unpack_image.ts";
import { makeScratchBeside } from "../image/store.ts";

export const SQUASH_USAGE = `Usage: den unpack [OPTION...] ARCHIVE DEST.sqfs
       den unpack --squashfs [OPTION...] ARCHIVE DEST

Unpack ARCHIVE as den unpack does, then pack the tree into one SquashFS file
(mksquashfs, zstd): the same archive gives the same bytes. Files keep the
archive's times (Python checks its .pyc files against them); what den adds
(mount points, ch/) and the file system get $SOURCE_DATE_EPOCH (default 0).
Files keep the unpacking user's ownership. DEST appears whole or not at all.

      --arch=ARCH    platform of a multi-platform archive
  -f, --force        replace DEST if it exists
      --image=REF    image of a multi-image archive
  -q, --quiet        print nothing but errors
      --squashfs     write SquashFS whatever DEST's name
  -h, --help         give this help list
`;

/** `den unpack`'s options when DEST is a SquashFS file. */
const OPTIONS: Record<string, OptionSpec> = {
  arch: { takes: "value" },
  force: { short: "f", takes: "flag" },
  image: { takes: "value" },
  quiet: { short: "q", takes: "flag" },
  squashfs: { takes: "flag" },
  help: { short: "h", takes: "flag" },
};

/** Is this `den unpack` command line one for a SquashFS DEST? */
export function wantsSquash(args: string[]): boolean {
  let parsed;
  try {
    // -s is den unpack's too: an option value must not pass for DEST.
    parsed = parseArgv(args, { ...OPTIONS, storage: { short: "s", takes: "value" } }, "");
  } catch {
    return false; // den unpack reports the usage error
  }
  return countFlag(parsed, "squashfs") > 0 ||
    (parsed.positionals.at(-1)?.endsWith(".sqfs") ?? false);
}

/**
 * mksquashfs's arguments for a reproducible image of dir at file. Not
 * -all-time: Python's .pyc files record their source's mtime and are
 * compiled again, every start, when it differs (imports took twice as long).
 * zstd level 6, not mksquashfs's 15: a 567 MB bookworm tree packs in 3.0 s
 * instead of 26 s, into 197 MB instead of 182 MB, and its programs start a
 * little faster, not slower (zstd decompresses at the same speed or better).
 */
export function mksquashfsArgs(dir: string, file: string, epoch: number): string[] {
  const rootTime = Math.floor((Deno.statSync(dir).mtime?.getTime() ?? 0) / 1000);
  return [
    dir,
    file,
    "-noappend",
    "-comp",
    "zstd",
    "-Xcompression-level",
    "6",
    "-reproducible",
    "-mkfs-time",
    String(epoch),
    // mksquashfs would give the root its own time; the tree's is kept.
    "-root-time",
    String(rootTime),
    "-no-xattrs",
    "-quiet",
    "-no-progress",
  ];
}

const SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
const SIGNAL_EXIT: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };

/** What writeSquash() packs: a tree it has made, or a directory as it is. */
export type SquashSource =
  /** Make the tree at root (in a temporary directory beside DEST). */
  | { fill: (root: string) => Promise<void> }
  /** Pack this existing directory; it is only read. */
  | { dir: string };

export interface SquashWritten {
  /** Bytes of the file. */
  size: number;
  /** Seconds fill() took (0 for a directory), and mksquashfs. */
  fillSeconds: number;
  packSeconds: number;
}

export const INSTALL_HINT = "install squashfs-tools (den doctor checks this node)";

/** Runs a tool for makeBeside(): its output, or a DenError naming it. */
export type RunTool = (
  cmd: string,
  args: string[],
  o: { path: string; hint: string; status?: string },
) => Promise<Deno.CommandOutput>;

/**
 * Make DEST (a file or a directory) in a temporary directory beside it and
 * rename it into place: DEST appears whole or not at all, and nothing is
 * left when a step fails or den is interrupted (SIGINT, SIGTERM, SIGHUP).
 * make() returns the path in tmp to become DEST; tools it runs through
 * `run` are killed on those signals.
 */
export async function makeBeside<T>(
  dest: string,
  o: { op: string; force: boolean; progress?: boolean },
  make: (tmp: string, run: RunTool) => Promise<{ made: string; result: T }>,
): Promise<T> {
  if (!o.force && lstat(dest)) {
    throw new DenError(o.op, "destination exists", { path: dest, hint: "use -f to replace it" });
  }
  const slash = dest.lastIndexOf("/");
  const parent = slash < 0 ? "." : dest.slice(0, slash) || "/";
  const base = dest.slice(slash + 1);
  // JavaScript steps stop themselves on these signals (unpackImage and
  // pullImage throw); tools are killed. Either way the finally cleans up.
  // Listening before the temporary directory exists: a signal between its
  // mkdir and the listeners would end den with the directory left behind.
  let signalled: Deno.Signal | undefined;
  let child: Deno.ChildProcess | undefined;
  const handlers = SIGNALS.map((s) =>
    [s, () => {
      signalled ??= s;
      try {
        child?.kill("SIGKILL");
      } catch {
        // Exited already.
      }
    }] as const
  );
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  let tmp: string;
  try {
    tmp = makeScratchBeside(parent, base);
  } catch (e) {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    throw new DenError(o.op, osMessage(e), { path: dest });
  }
  const checkSignal = () => {
    if (signalled) {
      throw new DenError(o.op, `interrupted by ${signalled}`, {
        path: dest,
        exitCode: SIGNAL_EXIT[signalled],
      });
    }
  };
  const run: RunTool = async (cmd, args, { path, hint, status }) => {
    checkSignal();
    try {
      child = new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
        .spawn();
    } catch (e) {
      throw new DenError(`can't run ${cmd}`, osMessage(e), { hint });
    }
    const r =
      await (o.progress && status
        ? withTicker(`${cmd}: ${status}`, child.output())
        : child.output());
    child = undefined;
    checkSignal();
    if (!r.success) {
      const why = new TextDecoder().decode(r.stderr).trim().split("\n").at(-1) ?? "";
      throw new DenError(cmd, `exit ${r.code}: ${why}`, { path });
    }
    return r;
  };
  try {
    const { made, result } = await make(tmp, run);
    checkSignal();
    // A directory cannot be replaced by one rename: move DEST aside first
    // (it goes with the temporary directory).
    try {
      if (lstat(dest)?.isDirectory) Deno.renameSync(dest, `${tmp}/old`);
      Deno.renameSync(made, dest);
    } catch (e) {
      throw new DenError(o.op, osMessage(e), { path: dest });
    }
    return result;
  } finally {
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    try {
      Deno.removeSync(tmp, { recursive: true });
    } catch {
      // Nothing more to do: the name says what it is.
    }
  }
}

/** Write DEST as one reproducible SquashFS file (den unpack, pull and convert). */
export function writeSquash(
  dest: string,
  o: { op: string; force: boolean; source: SquashSource; progress?: boolean },
): Promise<SquashWritten> {
  const epoch = sourceDateEpoch();
  return makeBeside(dest, o, async (tmp, run) => {
    const started = performance.now();
    let dir: string;
    if ("fill" in o.source) {
      dir = `${tmp}/root`;
      // What den makes has the time it was made; what the layers hold has
      // their times. The coarse clock of file times lags by a tick or so.
      const since = (Date.now() - 20) / 1000;
      await o.source.fill(dir);
      // GNU find and touch, never following a link (-P, -h).
      await run(
        "find",
        [
          dir,
          "-newermt",
          `@${since.toFixed(3)}`,
          "-exec",
          "touch",
          "-h",
          "-c",
          "-d",
          `@${epoch}`,
          "--",
          "{}",
          "+",
        ],
        { path: dest, hint: "install findutils and coreutils" },
      );
    } else {
      dir = o.source.dir;
    }
    const filled = performance.now();
    const made = `${tmp}/image.sqfs`;
    await run("mksquashfs", mksquashfsArgs(dir, made, epoch), {
      path: dest,
      hint: INSTALL_HINT,
      status: `packing ${dest} (zstd)`,
    });
    return {
      made,
      result: {
        size: Deno.statSync(made).size,
        fillSeconds: (filled - started) / 1000,
        packSeconds: (performance.now() - filled) / 1000,
      },
    };
  });
}

function lstat(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch {
    return undefined;
  }
}

/** The summary line: "DEST: 1.2 MiB SquashFS (unpack 0.10 s, mksquashfs 0.20 s)". */
export function squashSummary(dest: string, w: SquashWritten, fill?: string): string {
  const s = (x: number) => `${x.toFixed(2)} s`;
  const steps = fill ? `${fill} ${s(w.fillSeconds)}, ` : "";
  return `${dest}: ${(w.size / 1048576).toFixed(1)} MiB SquashFS (${steps}mksquashfs ${
    s(w.packSeconds)
  })`;
}

/** `den unpack ... DEST.sqfs`: returns the exit status. */
export async function unpackSquashCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, OPTIONS, "den unpack --help");
  if (countFlag(parsed, "help")) {
    out(SQUASH_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 2) {
    throw usageError("unpack needs ARCHIVE and DEST", "see den unpack --help");
  }
  const [archive, dest] = parsed.positionals as [string, string];
  const quiet = countFlag(parsed, "quiet") > 0;
  const progress = !quiet && Deno.stderr.isTerminal();
  const line = new StatusLine();
  const written = await writeSquash(dest, {
    op: "can't unpack",
    force: countFlag(parsed, "force") > 0,
    progress,
    source: {
      fill: async (root) => {
        try {
          await unpackImage(archive, root, {
            arch: lastValue(parsed, "arch"),
            image: lastValue(parsed, "image"),
            onProgress: progress ? (p) => line.show(unpackLine(p)) : undefined,
          });
        } finally {
          line.clear();
        }
      },
    },
  });
  if (!quiet) out(squashSummary(dest, written, "unpack"));
  return 0;
}
