// `den unpack ARCHIVE IMG.sqfs` (or --squashfs): one reproducible SquashFS
// file, built with mksquashfs from a temporary unpacked directory.

import { countFlag, lastValue, type OptionSpec, parseArgv } from "./args.ts";
import { DenError, osMessage, usageError } from "../error.ts";
import { out } from "./output.ts";
import { unpackImage } from "../image/unpack_image.ts";

export const SQUASH_USAGE = `Usage: den unpack [OPTION...] ARCHIVE DEST.sqfs
       den unpack --squashfs [OPTION...] ARCHIVE DEST

Unpack ARCHIVE as den unpack does, then pack the tree into one SquashFS file
(mksquashfs, zstd): the same archive gives the same bytes. Times are set to
$SOURCE_DATE_EPOCH (default 0); files keep the unpacking user's ownership.
DEST appears whole or not at all.

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

/** mksquashfs's arguments for a reproducible image of dir at file. */
export function mksquashfsArgs(dir: string, file: string, epoch: string): string[] {
  return [
    dir,
    file,
    "-noappend",
    "-comp",
    "zstd",
    "-reproducible",
    "-mkfs-time",
    epoch,
    "-all-time",
    epoch,
    "-no-xattrs",
    "-quiet",
    "-no-progress",
  ];
}

/**
 * The metadata's "unpacked" time is when den unpacked; in a reproducible
 * file it is SOURCE_DATE_EPOCH's (as the files' times are).
 */
function pinUnpackTime(root: string, epoch: number): void {
  const path = `${root}/ch/metadata.json`;
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return; // no metadata: nothing to pin
  }
  const m = JSON.parse(text);
  if (typeof m !== "object" || m === null || !("unpacked" in m)) return;
  m.unpacked = new Date(epoch * 1000).toISOString();
  Deno.writeTextFileSync(path, JSON.stringify(m, null, 2) + (text.endsWith("\n") ? "\n" : ""));
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
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH") ?? "0";
  if (!/^\d{1,10}$/.test(epoch)) {
    throw usageError(`SOURCE_DATE_EPOCH is not a number of seconds: ${JSON.stringify(epoch)}`);
  }
  if (!countFlag(parsed, "force")) {
    try {
      Deno.lstatSync(dest);
      throw new DenError("can't unpack", "destination exists", {
        path: dest,
        hint: "use -f to replace it",
      });
    } catch (e) {
      if (e instanceof DenError) throw e;
    }
  }
  const slash = dest.lastIndexOf("/");
  const parent = slash < 0 ? "." : dest.slice(0, slash) || "/";
  const base = dest.slice(slash + 1);
  const tmp = Deno.makeTempDirSync({ dir: parent, prefix: `.${base}.den-tmp-` });
  const remove = () => Deno.removeSync(tmp, { recursive: true });
  const onSignal = () => {
    try {
      remove();
    } finally {
      Deno.exit(130);
    }
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    const started = performance.now();
    await unpackImage(archive, `${tmp}/root`, {
      arch: lastValue(parsed, "arch"),
      image: lastValue(parsed, "image"),
    });
    const unpacked = performance.now();
    pinUnpackTime(`${tmp}/root`, Number(epoch));
    let r;
    try {
      r = await new Deno.Command("mksquashfs", {
        args: mksquashfsArgs(`${tmp}/root`, `${tmp}/image.sqfs`, epoch),
        stdout: "piped",
        stderr: "piped",
      }).output();
    } catch (e) {
      throw new DenError("can't run mksquashfs", osMessage(e), {
        hint: "install squashfs-tools (den doctor checks this node)",
      });
    }
    if (!r.success) {
      const why = new TextDecoder().decode(r.stderr).trim().split("\n").at(-1) ?? "";
      throw new DenError("mksquashfs", `exit ${r.code}: ${why}`, { path: dest });
    }
    Deno.renameSync(`${tmp}/image.sqfs`, dest);
    if (!countFlag(parsed, "quiet")) {
      const size = Deno.statSync(dest).size;
      out(
        `${dest}: ${(size / 1048576).toFixed(1)} MiB SquashFS (unpack ${
          ((unpacked - started) / 1000).toFixed(2)
        } s, mksquashfs ${((performance.now() - unpacked) / 1000).toFixed(2)} s)`,
      );
    }
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    remove();
  }
}
