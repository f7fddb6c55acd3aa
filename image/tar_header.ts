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
 * Limits of the tar decoder, one set for the outer archive and every layer.
 * Real archives stay far below them; past them the archive is refused.
 */
export const TAR_LIMITS = {
  /** Bytes of extended headers (PAX 'x', GNU 'L'/'K') before one entry. */
  entryMetaBytes: 1 << 20,
  /** PAX records before one entry. */
  entryRecords: 65536,
  /** Bytes of all global PAX headers ('g') of one stream. */
  streamGlobalBytes: 1 << 20,
  /** PAX records of all global headers of one stream. */
  streamGlobalRecords: 1024,
  /** Bytes of a path or link target (Linux's PATH_MAX). */
  nameBytes: 4096,
  /** Characters of a numeric PAX value. */
  numberChars: 32,
  /** Extents of one sparse file. */
  sparseSegments: 16384,
  /** Bytes of holes (apparent size beyond the data) of all the sparse files
   * of one stream: a tiny archive cannot claim a petabyte file. */
  streamHoleBytes: 64 * 2 ** 30,
} as const;

function corrupt(name: Uint8Array, detail: string): DenError {
  return new DenError("", `corrupt tar header for ${quoteName(name)}: ${detail}`);
}

/**
 * A numeric field: octal text (NUL or space terminated) or, when the high bit
 * of the first byte is set, GNU base-256 big-endian binary (for sizes over
 * 8 GiB, uids over 2097151 and negative mtimes). Negative values only where
 * `signed`; anything that is not a safe integer is refused.
 */
export function parseNumeric(
  block: Uint8Array,
  start: number,
  len: number,
  signed = false,
): number {
  const first = block[start]!;
  const end = start + len;
  if (first & 0x80) {
    const negative = first === 0xff;
    if (negative && !signed) throw new Error("negative number");
    // Two's complement for negatives: -(~v + 1), summed without overflow.
    let v = negative ? 0 : first & 0x7f;
    for (let i = start + 1; i < end; i++) {
      v = v * 256 + (negative ? block[i]! ^ 0xff : block[i]!);
      if (v > Number.MAX_SAFE_INTEGER) throw new Error("number too large");
    }
    return negative ? -(v + 1) : v;
  }
  let v = 0;
  let i = start;
  while (i < end && (block[i] === 0x20 || block[i] === 0)) i++;
  for (; i < end; i++) {
    const c = block[i]!;
    if (c === 0 || c === 0x20) break;
    if (c < 0x30 || c > 0x37) throw new Error("bad octal number");
    v = v * 8 + (c - 0x30);
  }
  // 12 octal digits at most: always a safe integer.
  return v;
}

/**
 * A PAX (or sparse map) decimal number: digits only, at most
 * TAR_LIMITS.numberChars of them, a safe integer. With `time`, a leading
 * "-" and a fraction are allowed (POSIX mtime), and the integer part is
 * returned. undefined when the text is not such a number.
 */
export function parseDecimal(text: string, time = false): number | undefined {
  if (text.length === 0 || text.length > TAR_LIMITS.numberChars) return undefined;
  const re = time ? /^-?[0-9]+(\.[0-9]*)?$/ : /^[0-9]+$/;
  if (!re.test(text)) return undefined;
  const int = text.split(".")[0]!;
  const v = Number(int);
  if (!Number.isSafeInteger(v)) return undefined;
  return v === 0 ? 0 : v; // no -0
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
  name: Uint8Array,
): void {
  for (let i = 0; i < count; i++) {
    const at = start + i * 24;
    if (block[at] === 0) return;
    if (into.length >= TAR_LIMITS.sparseSegments) {
      throw corrupt(name, `more than ${TAR_LIMITS.sparseSegments} sparse extents`);
    }
    try {
      into.push({
        offset: parseNumeric(block, at, 12),
        size: parseNumeric(block, at + 12, 12),
      });
    } catch (e) {
      throw corrupt(name, `sparse map: ${(e as Error).message}`);
    }
  }
}

/** Entries of one GNU sparse extension block; returns whether more follow. */
export function parseSparseExtension(
  block: Uint8Array,
  into: SparseSegment[],
  name: Uint8Array,
): boolean {
  parseSparseEntries(block, 0, 21, into, name);
  return block[504] !== 0;
}

/**
 * Decode one header block (not a zero block). Throws DenError on a bad
 * checksum, which is also how garbage and truncated streams show up, and on
 * numbers that are negative or too large.
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
  const num = (field: string, at: number, len: number, signed = false) => {
    try {
      return parseNumeric(block, at, len, signed);
    } catch (e) {
      throw corrupt(name, `${field}: ${(e as Error).message}`);
    }
  };
  const header: TarHeader = {
    name,
    linkname: cString(block, 157, 100),
    type,
    mode: num("mode", 100, 8),
    uid: num("uid", 108, 8),
    gid: num("gid", 116, 8),
    size: num("size", 124, 12),
    mtime: num("mtime", 136, 12, true),
  };
  if (type === "S" && isGnu) {
    header.sparse = [];
    parseSparseEntries(block, 386, 4, header.sparse, name);
    header.sparseExtended = block[482] !== 0;
    header.realSize = num("realsize", 483, 12);
  }
  return header;
}

/**
 * Call `record` for each PAX extended header record ("LEN key=value\n"...).
 * The value is a view of `data`: copy what you keep. Returns the number of
 * records.
 */
export function parsePax(
  data: Uint8Array,
  record: (key: string, value: Uint8Array) => void,
): number {
  const dec = new TextDecoder();
  let pos = 0;
  let count = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // padding some writers leave
    let sp = pos;
    let len = 0;
    while (sp < data.length && data[sp] !== 0x20) {
      const c = data[sp]!;
      if (c < 0x30 || c > 0x39 || sp - pos >= 10) {
        throw new DenError("", "corrupt PAX header (bad record length)");
      }
      len = len * 10 + (c - 0x30);
      sp++;
    }
    if (len <= sp - pos || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new DenError("", "corrupt PAX header (bad record)");
    }
    const rec = data.subarray(sp + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new DenError("", "corrupt PAX header (no key)");
    record(dec.decode(rec.subarray(0, eq)), rec.subarray(eq + 1));
    count++;
    // len > 0 and checked against the data: the loop always advances.
    pos += len;
  }
  return count;
}

/** A name for messages: quoted, invalid UTF-8 and control bytes as \xNN,
 * long names shortened. */
export function quoteName(name: Uint8Array): string {
  let s = "";
  const dec = new TextDecoder("utf-8", { fatal: true });
  const max = Math.min(name.length, 200);
  let i = 0;
  while (i < max) {
    const c = name[i]!;
    if (c >= 0x20 && c < 0x7f) {
      s += c === 0x22 || c === 0x5c ? "\\" + String.fromCharCode(c) : String.fromCharCode(c);
      i++;
      continue;
    }
    const n = c < 0x80 ? 0 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (n > 0 && i + n <= name.length) {
      try {
        s += dec.decode(name.subarray(i, i + n));
        i += n;
        continue;
      } catch {
        // below
      }
    }
    s += "\\x" + c.toString(16).padStart(2, "0");
    i++;
  }
  return `"${s}${name.length > max ? "..." : ""}"`;
}
