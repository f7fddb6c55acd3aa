// readFileInImage(): read a file of an image on the host without following
// any link out of it. Image content is untrusted: `ch/environment` as a
// symlink to /proc/self/cwd/.env would otherwise copy the caller's private
// file into the container.

import { DenError, osMessage } from "../error.ts";

/** Files den reads from images are small; a bigger one is refused. */
export const MAX_IMAGE_FILE_BYTES = 16 << 20;

/**
 * Text of `rootfs/rel`, or undefined when it does not exist. Every
 * component below rootfs must be a real directory and the file a regular
 * file (no symlinks anywhere); the opened file must be the one checked.
 */
export function readFileInImage(rootfs: string, rel: string): string | undefined {
  const parts = rel.split("/").filter((p) => p && p !== ".");
  const shown = parts.join("/");
  const refuse = (why: string) =>
    new DenError(`can't read image file ${shown}`, why, { path: rootfs });
  if (parts.length === 0 || parts.includes("..")) throw refuse("invalid path");
  let path = rootfs;
  let st: Deno.FileInfo | undefined;
  for (let i = 0; i < parts.length; i++) {
    path += `/${parts[i]}`;
    try {
      st = Deno.lstatSync(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
        return undefined;
      }
      throw refuse(osMessage(e));
    }
    const last = i === parts.length - 1;
    if (st.isSymlink) throw refuse(`${parts.slice(0, i + 1).join("/")} is a symlink`);
    if (!last && !st.isDirectory) return undefined;
    if (last && !st.isFile) throw refuse("not a regular file");
  }
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (e) {
    throw refuse(osMessage(e));
  }
  try {
    const now = file.statSync();
    if (now.ino !== st!.ino || now.dev !== st!.dev) throw refuse("changed while being read");
    if (now.size > MAX_IMAGE_FILE_BYTES) throw refuse(`larger than ${MAX_IMAGE_FILE_BYTES} bytes`);
    const buf = new Uint8Array(now.size);
    let got = 0;
    while (got < buf.length) {
      const n = file.readSync(buf.subarray(got));
      if (n === null) break;
      got += n;
    }
    return new TextDecoder().decode(buf.subarray(0, got));
  } finally {
    file.close();
  }
}
