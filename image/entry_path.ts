// Turning raw tar names into rootfs-relative path components.
import { DenError } from "../error.ts";
import { quoteName } from "./tar_header.ts";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decode a name to a string, refusing names that are not valid UTF-8. Deno's
 * file APIs take strings, so such a name could not be created with its exact
 * bytes; any mapping (the "%XX" den used to write) is lossy and collides
 * with a real name, so the archive is refused instead (issue 7).
 */
export function decodeName(bytes: Uint8Array, what = "name"): string {
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return String.fromCharCode(...bytes);
  try {
    return utf8.decode(bytes);
  } catch {
    throw new DenError("", `refusing ${what} that is not valid UTF-8: ${quoteName(bytes)}`);
  }
}

/**
 * Split a tar path into components inside the rootfs, like tar does: leading
 * "/" stripped, "." and empty components dropped, ".." applied lexically.
 * A ".." that would climb above the rootfs is refused. [] is the root itself.
 */
export function splitEntryPath(path: string, what = "entry"): string[] {
  const out: string[] = [];
  for (const c of path.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") {
      if (out.length === 0) {
        throw new DenError("", `refusing ${what} outside rootfs: ${quote(path)}`);
      }
      out.pop();
      continue;
    }
    out.push(c);
  }
  return out;
}

/** A value in double quotes, as error messages show names. */
export function quote(s: string): string {
  return JSON.stringify(s);
}
