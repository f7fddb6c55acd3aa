// Turning raw tar names into rootfs-relative path components.
import { DenError } from "../error.ts";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Decode a name to a string. Deno's file APIs take strings, so a name that is
 * not valid UTF-8 cannot be created byte-exact; instead each invalid byte is
 * written as "%XX" (uppercase hex) and the rest decoded normally. The mapping
 * is deterministic, so hard links and whiteouts naming the same bytes agree.
 * `mapped` is set when that happened.
 */
export function decodeName(bytes: Uint8Array): { text: string; mapped: boolean } {
  let ascii = true;
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i]! >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return { text: String.fromCharCode(...bytes), mapped: false };
  try {
    return { text: utf8.decode(bytes), mapped: false };
  } catch {
    // fall through to the byte-by-byte mapping
  }
  let text = "";
  let i = 0;
  while (i < bytes.length) {
    const n = validSequence(bytes, i);
    if (n > 0) {
      text += utf8.decode(bytes.subarray(i, i + n));
      i += n;
    } else {
      text += "%" + bytes[i]!.toString(16).toUpperCase().padStart(2, "0");
      i++;
    }
  }
  return { text, mapped: true };
}

/** Length of the valid UTF-8 sequence at i, or 0. */
function validSequence(b: Uint8Array, i: number): number {
  const c = b[i]!;
  if (c < 0x80) return 1;
  let n: number, min: number;
  if (c >= 0xc2 && c <= 0xdf) [n, min] = [2, 0x80];
  else if (c >= 0xe0 && c <= 0xef) [n, min] = [3, 0x800];
  else if (c >= 0xf0 && c <= 0xf4) [n, min] = [4, 0x10000];
  else return 0;
  if (i + n > b.length) return 0;
  let cp = c & (0x7f >> n);
  for (let k = 1; k < n; k++) {
    const d = b[i + k]!;
    if ((d & 0xc0) !== 0x80) return 0;
    cp = (cp << 6) | (d & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
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
