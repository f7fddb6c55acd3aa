// Tar header decoding: ustar, GNU and PAX, as written by GNU tar, Go's
// archive/tar (docker, podman, buildah, skopeo, umoci) and libarchive.
import { DenError } from "../error.ts";

/** The fields of one tar header block; names are still raw bytes. */
export interface TarHeader {
  name: Uint8Array;
  linkname: Uint8Array;
  /** Type flag as a character: "0", "5", "x", "L", ... ("0" for NUL). */
  type: string;
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data following the header in the archive. */
  size: number;
  mtime: number;
  /** GNU sparse ('S') only: the old-style map and the real file size. */
  sparse?: SparseSegment[];
  sparseExtended?: boolean;
  realSize?: number;
}

/** One data extent of a sparse file: `size` bytes at `offset`. */
export interface SparseSegment {
  offset: number;
  size: number;
}

export const BLOCK = 512;

const MAGIC_USTAR = [0x75, 0x73, 0x74, 0x61, 0x72]; // "ustar"

/** True when the 512-byte block is all zeros (end-of-archive marker). */
export function isZeroBlock(block: Uint8Array): boolean {
  for (let i = 0; i < BLOCK; i++) if (block[i] !== 0) return false;
  return true;
}

/** Bytes of a NUL-terminated field. */
function cString(block: Uint8Array, start: number, len: number): Uint8Array {
  let end = start;
  const max = start + len;
  while (end < max && block[end] !== 0) end++;
  return block.subarray(start, end);
}

/**
 * A numeric field: octal text (NUL or space terminated) or, when the high bit
 * of the first byte is set, GNU base-256 big-endian binary (for sizes over
 * 8 GiB, uids over 2097151 and negative mtimes).
 */
export function parseNumeric(
  block: Uint8Array,
  start: number,
  len: number,
): number {
  const first = block[start]!;
  if (first & 0x80) {
    if (first === 0xff) {
      // Negative base-256 (pre-1970 mtime): two's complement.
      let v = 0;
      for (let i = start; i < start + len; i++) v = v * 256 + (block[i]! ^ 0xff);
      return -(v + 1);
    }
    let v = first & 0x7f;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + block[i]!;
    if (!Number.isSafeInteger(v)) {
      throw new DenError("", "corrupt tar header: number too large");
    }
    return v;
  }
  let v = 0;
  let i = start;
  const end = start + len;
  while (i < end && (block[i] === 0x20 || block[i] === 0)) i++;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) {
      throw new DenError("", "corrupt tar header: bad octal number");
    }
    v = v * 8 + (c - 0x30);
  }
  return v;
}

function checksumOk(block: Uint8Array): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  let stored: number;
  try {
    stored = parseNumeric(block, 148, 8);
  } catch {
    return false;
  }
  return stored === unsigned || stored === signed;
}

function concatName(prefix: Uint8Array, name: Uint8Array): Uint8Array {
  if (prefix.length === 0) return name;
  const out = new Uint8Array(prefix.length + 1 + name.length);
  out.set(prefix);
  out[prefix.length] = 0x2f;
  out.set(name, prefix.length + 1);
  return out;
}

function parseSparseEntries(
  block: Uint8Array,
  start: number,
  count: number,
  into: SparseSegment[],
): void {
  for (let i = 0; i < count; i++) {
    const at = start + i * 24;
    if (block[at] === 0) return;
    into.push({
      offset: parseNumeric(block, at, 12),
      size: parseNumeric(block, at + 12, 12),
    });
  }
}

/** Entries of one GNU sparse extension block; returns whether more follow. */
export function parseSparseExtension(
  block: Uint8Array,
  into: SparseSegment[],
): boolean {
  parseSparseEntries(block, 0, 21, into);
  return block[504] !== 0;
}

/**
 * Decode one header block (not a zero block). Throws DenError on a bad
 * checksum, which is also how garbage and truncated streams show up.
 */
export function parseTarHeader(block: Uint8Array): TarHeader {
  if (!checksumOk(block)) {
    throw new DenError("", "corrupt tar header (bad checksum)");
  }
  const typeByte = block[156]!;
  const type = typeByte === 0 ? "0" : String.fromCharCode(typeByte);
  let name = cString(block, 0, 100);
  const isUstar = MAGIC_USTAR.every((c, i) => block[257 + i] === c);
  // POSIX ustar ("ustar\0" "00") has a 155-byte prefix; GNU ("ustar  \0")
  // uses that area for atime, ctime and the sparse map instead.
  const isGnu = isUstar && block[262] === 0x20 && block[263] === 0x20;
  if (isUstar && !isGnu) name = concatName(cString(block, 345, 155), name);
  const header: TarHeader = {
    name,
    linkname: cString(block, 157, 100),
    type,
    mode: parseNumeric(block, 100, 8),
    uid: parseNumeric(block, 108, 8),
    gid: parseNumeric(block, 116, 8),
    size: parseNumeric(block, 124, 12),
    mtime: parseNumeric(block, 136, 12),
  };
  if (header.size < 0) throw new DenError("", "corrupt tar header (size)");
  if (type === "S" && isGnu) {
    header.sparse = [];
    parseSparseEntries(block, 386, 4, header.sparse);
    header.sparseExtended = block[482] !== 0;
    header.realSize = parseNumeric(block, 483, 12);
  }
  return header;
}

/** Parse PAX extended header records ("LEN key=value\n"...). */
export function parsePax(data: Uint8Array): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  const dec = new TextDecoder();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // padding some writers leave
    let sp = pos;
    let len = 0;
    while (sp < data.length && data[sp] !== 0x20) {
      const c = data[sp]!;
      if (c < 0x30 || c > 0x39) {
        throw new DenError("", "corrupt PAX header (bad record length)");
      }
      len = len * 10 + (c - 0x30);
      sp++;
    }
    if (len === 0 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new DenError("", "corrupt PAX header (bad record)");
    }
    const rec = data.subarray(sp + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw new DenError("", "corrupt PAX header (no '=')");
    const key = dec.decode(rec.subarray(0, eq));
    // GNU tar repeats GNU.sparse.offset/numbytes (format 0.0): keep order.
    if (key === "GNU.sparse.offset" || key === "GNU.sparse.numbytes") {
      const k = `${key}#${out.size}`;
      out.set(k, rec.subarray(eq + 1));
    } else {
      out.set(key, rec.subarray(eq + 1));
    }
    pos += len;
  }
  return out;
}
