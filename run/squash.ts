// Decisions for running a SquashFS image, pure: where its mount point goes
// and which squashfuse runs it. ffi/squash.ts mounts it.

import { DenError } from "../error.ts";
import { firstFreeDir, type HostView } from "./plan.ts";

/**
 * Host directories that can hold the image's mount in the container's own
 * mount namespace, first free one wins. The mount hides the directory only
 * in that namespace, and only until pivot_root detaches the old root; no
 * host path is made or changed. Each one exists on most distributions
 * (FHS) and is rarely bound into a container.
 */
export const SQUASH_MOUNT_CANDIDATES = ["/mnt", "/media", "/srv", "/opt", "/var/tmp", "/boot"];

/**
 * The directory the image is mounted on while the container is set up.
 * A mount there hides what the host has there, so it must be none of the
 * bind sources, nor above or below one (the host's paths, symlinks
 * resolved). `-m DIR` is used as given.
 */
export function squashMountPoint(
  o: { sources: string[]; mount?: string },
  fs: Pick<HostView, "lkind">,
): string {
  if (o.mount !== undefined) {
    if (!o.mount.startsWith("/") || fs.lkind(o.mount) !== "dir") {
      throw new DenError("--mount", `not an existing directory: ${o.mount}`, {
        hint: "give an absolute path of a directory (it is only hidden inside the container)",
      });
    }
    return o.mount;
  }
  const dir = firstFreeDir(SQUASH_MOUNT_CANDIDATES, o.sources, (d) => fs.lkind(d) === "dir");
  if (dir) return dir;
  throw new DenError("", "no directory for the SquashFS mount point", {
    hint: `none of ${SQUASH_MOUNT_CANDIDATES.join(" ")} is free; give one with -m DIR`,
  });
}

/** The first executable `name` on a PATH; undefined when there is none. */
export function findOnPath(
  name: string,
  path: string | undefined,
  isExecutable: (file: string) => boolean,
): string | undefined {
  for (const dir of (path ?? "/usr/local/bin:/usr/bin:/bin").split(":")) {
    const file = `${dir || "."}/${name}`;
    if (isExecutable(file)) return file;
  }
  return undefined;
}

/** Is file a regular file someone may execute (the host's answer)? */
export function isExecutableFile(file: string): boolean {
  try {
    const st = Deno.statSync(file);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * squashfuse, or the error that says how to get it. squashfuse_ll first
 * (the same package ships both, as Debian's does): FUSE's low-level API
 * lets the kernel cache lookups and attributes for good, where squashfuse
 * asks again, so a python3 start with many imports or a find over the image
 * takes half the time or less.
 */
export function squashfuseProgram(
  path: string | undefined,
  isExecutable: (file: string) => boolean,
): string {
  const found = findOnPath("squashfuse_ll", path, isExecutable) ??
    findOnPath("squashfuse", path, isExecutable);
  if (found) return found;
  throw new DenError("can't run a SquashFS image", "squashfuse not found on $PATH", {
    hint: "install squashfuse (apt install squashfuse; den doctor checks this node)",
  });
}

/** Does this file start with SquashFS's magic ("hsqs", little-endian)? */
export function isSquashfs(head: Uint8Array): boolean {
  return head.length >= 4 && head[0] === 0x68 && head[1] === 0x73 && head[2] === 0x71 &&
    head[3] === 0x73;
}
