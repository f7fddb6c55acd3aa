// A push parser for tar streams: feed() it chunks as they are decompressed,
// it calls the handler synchronously for every entry and its data. It is the
// one tar decoder of den (layers and the outer archive alike), and it trusts
// no number: every size, offset and count is checked against TAR_LIMITS
// before it is used, and every step consumes input or ends the stream.
import { DenError } from "../error.ts";
import {
  BLOCK,
  isZeroBlock,
  parseDecimal,
  parsePax,
  parseSparseExtension,
  parseTarHeader,
  quoteName,
  type SparseSegment,
  TAR_LIMITS,
  type TarHeader,
} from "./tar_header.ts";

/** A complete entry: headers merged (PAX over GNU long names over ustar). */
export interface TarEntry {
  /** Raw bytes of the path, as in the archive (valid during entry() only). */
  name: Uint8Array;
  linkname: Uint8Array;
  /** "file" also covers contiguous ('7') and unknown types (POSIX says so). */
  kind:
    | "file"
    | "dir"
    | "symlink"
    | "hardlink"
    | "char"
    | "block"
    | "fifo";
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** Real (logical) size of a file; for sparse files bigger than the data. */
  size: number;
  /** Data extents of a sparse file; undefined when not sparse. */
  sparse?: SparseSegment[];
  /** True when the entry carried extended attributes (which den drops). */
  hasXattrs: boolean;
}

export interface TarHandler {
  /** Called for every entry; return true to receive its data. */
  entry(entry: TarEntry): boolean;
  /** Data of the current file at file offset `offset` (sparse-aware). */
  data(chunk: Uint8Array, offset: number): void;
  /** End of the current entry's data (only if entry() returned true). */
  end(): void;
}

const enum State {
  Header,
  Meta,
  SparseExt,
  SparseMap,
  Data,
  Skip,
  Padding,
  End,
}

const TYPE_KIND: Record<string, TarEntry["kind"]> = {
  "0": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
  "D": "dir", // GNU dumpdir: a directory plus a listing we do not need
  "S": "file",
};

/**
 * What extended headers said about the next entry. Only the keys den uses
 * are kept, as copies (a value must not keep a 1 MiB header buffer alive);
 * numbers stay text until the entry's name is known, so errors can name it.
 */
interface Pax {
  path?: Uint8Array;
  linkpath?: Uint8Array;
  size?: string;
  uid?: string;
  gid?: string;
  mtime?: string;
  sparseMajor?: string;
  sparseName?: Uint8Array;
  sparseRealsize?: string;
  sparseSize?: string;
  sparseMap?: string;
  /** GNU sparse 0.0 repeats these records, one pair per extent. */
  sparseOffsets: string[];
  sparseNumbytes: string[];
  hasXattrs: boolean;
}

function newPax(): Pax {
  return { sparseOffsets: [], sparseNumbytes: [], hasXattrs: false };
}

/** A numeric PAX value as text, cut short when too long to be valid. */
function numberText(v: Uint8Array): string {
  const max = TAR_LIMITS.numberChars;
  const text = new TextDecoder().decode(v.subarray(0, max + 1));
  return text.length > max ? text.slice(0, max) + "..." : text;
}

/** Push parser; see TarHandler. Call finish() after the last chunk. */
export class TarParser {
  #state = State.Header;
  #hdr = new Uint8Array(BLOCK);
  #hdrFill = 0;
  #remaining = 0; // data bytes left in the current entry
  #padding = 0;
  #meta?: Uint8Array;
  #metaFill = 0;
  #metaType = "";
  /** Bytes and records of extended headers pending for the next entry. */
  #metaBytes = 0;
  #metaRecords = 0;
  #pax: Pax = newPax();
  /** Global ('g') values: only uid, gid and mtime are applied. */
  #global: { uid?: string; gid?: string; mtime?: string } = {};
  #globalBytes = 0;
  #globalRecords = 0;
  #holeBytes = 0;
  #longName?: Uint8Array;
  #longLink?: Uint8Array;
  #pending?: TarHeader; // header waiting for sparse extension blocks
  #segments: SparseSegment[] = [];
  #segIndex = 0;
  #segUsed = 0;
  #realSize = 0;
  #mapText = "";
  #mapNumbers: number[] = [];
  #mapCount = -1;
  #mapConsumed = 0;
  #mapSkip = 0;
  #fileOffset = 0;
  #entryName = "";
  #lastName = "";
  #handler: TarHandler;
  /** Name of the entry being read, for error messages. */
  get currentName(): string {
    return this.#entryName;
  }
  /** True once the end-of-archive block was seen. */
  get ended(): boolean {
    return this.#state === State.End;
  }

  constructor(handler: TarHandler) {
    this.#handler = handler;
  }

  /**
   * Bytes that may be skipped now without feeding them: the rest of data the
   * handler did not want, and padding. A reader that can seek (the outer
   * archive) jumps over them with skip().
   */
  skippable(): number {
    if (this.#state === State.Skip) return this.#remaining;
    if (this.#state === State.Padding) return this.#padding;
    return 0;
  }

  /** Consume `n` <= skippable() bytes without their content. */
  skip(n: number): void {
    if (!(n > 0 && n <= this.skippable())) {
      throw new Error(`internal error: skip(${n}) of ${this.skippable()}`);
    }
    if (this.#state === State.Skip) {
      this.#remaining -= n;
      if (this.#remaining === 0) this.#toPadding();
    } else {
      this.#padding -= n;
      if (this.#padding === 0) this.#state = State.Header;
    }
  }

  feed(chunk: Uint8Array): void {
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      const before = pos;
      const state = this.#state;
      switch (state) {
        case State.End:
          return;
        case State.Header:
        case State.SparseExt: {
          let block: Uint8Array;
          if (this.#hdrFill === 0 && len - pos >= BLOCK) {
            block = chunk.subarray(pos, pos + BLOCK);
            pos += BLOCK;
          } else {
            const n = Math.min(BLOCK - this.#hdrFill, len - pos);
            this.#hdr.set(chunk.subarray(pos, pos + n), this.#hdrFill);
            this.#hdrFill += n;
            pos += n;
            if (this.#hdrFill < BLOCK) continue;
            this.#hdrFill = 0;
            block = this.#hdr;
          }
          if (state === State.Header) this.#header(block);
          else this.#sparseExt(block);
          break;
        }
        case State.Meta: {
          const n = Math.min(this.#remaining, len - pos);
          this.#meta!.set(chunk.subarray(pos, pos + n), this.#metaFill);
          this.#metaFill += n;
          pos += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#metaDone();
          break;
        }
        case State.SparseMap:
          pos = this.#sparseMap(chunk, pos, len);
          break;
        case State.Data: {
          const n = Math.min(this.#remaining, len - pos);
          this.#emit(chunk.subarray(pos, pos + n));
          pos += n;
          this.#remaining -= n;
          if (this.#remaining === 0) {
            this.#handler.end();
            this.#toPadding();
          }
          break;
        }
        case State.Skip:
        case State.Padding: {
          const n = Math.min(this.skippable(), len - pos);
          this.skip(n);
          pos += n;
          break;
        }
      }
      // Every step consumes input: no number from the archive can make the
      // parser stand still or go back (issue 7).
      if (pos <= before) {
        throw new Error(`internal error: tar parser did not advance (state ${state})`);
      }
    }
  }

  /** End of input. A stream may end after an entry without the two zero
   * blocks (umoci writes layers like that); anything else is truncation. */
  finish(): void {
    if (this.#state === State.End) return;
    if (this.#state === State.Header && this.#hdrFill === 0) {
      if (this.#metaBytes > 0) {
        throw this.#error("unexpected end of archive after extended header");
      }
      return;
    }
    if (this.#state === State.Padding) return; // lenient: last padding cut
    throw this.#error(
      this.#entryName
        ? `unexpected end of archive in "${this.#entryName}" (truncated)`
        : "unexpected end of archive (truncated)",
    );
  }

  /** Errors before an entry's name is known say which entry came last. */
  #error(detail: string): DenError {
    if (this.#entryName || !this.#lastName) return new DenError("", detail);
    return new DenError("", `${detail} (after ${JSON.stringify(this.#lastName)})`);
  }

  #toPadding(): void {
    if (this.#padding > 0) this.#state = State.Padding;
    else this.#state = State.Header;
  }

  #header(block: Uint8Array): void {
    if (isZeroBlock(block)) {
      this.#state = State.End;
      return;
    }
    if (this.#entryName) this.#lastName = this.#entryName;
    this.#entryName = "";
    let h: TarHeader;
    try {
      h = parseTarHeader(block);
    } catch (e) {
      throw e instanceof DenError ? this.#error(e.message) : e;
    }
    this.#padding = (BLOCK - (h.size % BLOCK)) % BLOCK;
    switch (h.type) {
      case "x":
      case "g":
      case "L":
      case "K": {
        const g = h.type === "g";
        const bytes = (g ? this.#globalBytes : this.#metaBytes) + h.size;
        const max = g ? TAR_LIMITS.streamGlobalBytes : TAR_LIMITS.entryMetaBytes;
        if (bytes > max) {
          throw this.#error(
            g
              ? `global extended headers too large (over ${max} bytes in one layer)`
              : `extended headers too large (over ${max} bytes for one entry)`,
          );
        }
        if (g) this.#globalBytes = bytes;
        else this.#metaBytes = bytes;
        this.#metaType = h.type;
        this.#meta = new Uint8Array(h.size);
        this.#metaFill = 0;
        this.#remaining = h.size;
        if (h.size === 0) this.#metaDone();
        else this.#state = State.Meta;
        return;
      }
      case "V": // volume label
      case "N": // old GNU long names: obsolete, ignored like GNU tar does
        this.#skip(h.size);
        return;
      case "M":
        throw this.#error("multi-volume archives are not supported");
    }
    if (h.type === "S" && h.sparseExtended) {
      // The header's names are views of the block, which the next feed()
      // (or the next block, when it is #hdr) overwrites: keep copies.
      this.#pending = { ...h, name: h.name.slice(), linkname: h.linkname.slice() };
      this.#state = State.SparseExt;
      return;
    }
    this.#begin(h);
  }

  #sparseExt(block: Uint8Array): void {
    const h = this.#pending!;
    if (!parseSparseExtension(block, h.sparse!, h.name)) {
      this.#pending = undefined;
      this.#begin(h);
    }
  }

  #metaDone(): void {
    const data = this.#meta!;
    this.#meta = undefined;
    switch (this.#metaType) {
      case "x":
        parsePax(data, (k, v) => {
          if (++this.#metaRecords > TAR_LIMITS.entryRecords) {
            throw this.#error(
              `too many PAX records (over ${TAR_LIMITS.entryRecords} for one entry)`,
            );
          }
          this.#paxRecord(k, v);
        });
        break;
      case "g":
        parsePax(data, (k, v) => {
          if (++this.#globalRecords > TAR_LIMITS.streamGlobalRecords) {
            throw this.#error(
              `too many global PAX records (over ${TAR_LIMITS.streamGlobalRecords} in one layer)`,
            );
          }
          if (k === "uid" || k === "gid" || k === "mtime") this.#global[k] = numberText(v);
        });
        break;
      case "L":
        this.#longName = trimNul(data).slice();
        break;
      case "K":
        this.#longLink = trimNul(data).slice();
        break;
    }
    this.#toPadding();
  }

  #paxRecord(k: string, v: Uint8Array): void {
    const pax = this.#pax;
    switch (k) {
      case "path":
        pax.path = v.slice();
        return;
      case "linkpath":
        pax.linkpath = v.slice();
        return;
      case "size":
      case "uid":
      case "gid":
      case "mtime":
        pax[k] = numberText(v);
        return;
      case "GNU.sparse.major":
        pax.sparseMajor = numberText(v);
        return;
      case "GNU.sparse.name":
        pax.sparseName = v.slice();
        return;
      case "GNU.sparse.realsize":
        pax.sparseRealsize = numberText(v);
        return;
      case "GNU.sparse.size":
        pax.sparseSize = numberText(v);
        return;
      case "GNU.sparse.map":
        pax.sparseMap = new TextDecoder().decode(v);
        return;
      case "GNU.sparse.offset":
        pax.sparseOffsets.push(numberText(v));
        return;
      case "GNU.sparse.numbytes":
        pax.sparseNumbytes.push(numberText(v));
        return;
    }
    if (k.startsWith("SCHILY.xattr.") || k.startsWith("LIBARCHIVE.xattr.")) {
      pax.hasXattrs = true;
    }
  }

  #skip(size: number): void {
    this.#remaining = size;
    if (size > 0) this.#state = State.Skip;
    else this.#toPadding();
  }

  #begin(h: TarHeader): void {
    const pax = this.#pax;
    this.#pax = newPax();
    this.#metaBytes = 0;
    this.#metaRecords = 0;
    let name = this.#longName ?? h.name;
    let linkname = this.#longLink ?? h.linkname;
    this.#longName = undefined;
    this.#longLink = undefined;
    if (pax.path?.length) name = pax.path;
    if (pax.linkpath?.length) linkname = pax.linkpath;
    if (pax.sparseName?.length) name = pax.sparseName;
    this.#entryName = new TextDecoder().decode(name.subarray(0, 1024));
    const shown = quoteName(name);
    const bad = (detail: string) => this.#error(`${detail} in ${shown}`);
    if (name.length > TAR_LIMITS.nameBytes) {
      throw bad(`name too long (${name.length} bytes, over ${TAR_LIMITS.nameBytes})`);
    }
    if (linkname.length > TAR_LIMITS.nameBytes) {
      throw bad(`link target too long (${linkname.length} bytes, over ${TAR_LIMITS.nameBytes})`);
    }
    const num = (key: string, text: string | undefined, fallback: number, time = false) => {
      if (text === undefined) return fallback;
      const v = parseDecimal(text, time);
      if (v === undefined) {
        throw bad(`bad PAX record ${key}=${JSON.stringify(text)} (not a decimal number)`);
      }
      return v;
    };
    const dataSize = num("size", pax.size, h.size);
    let size = dataSize;
    let sparse: SparseSegment[] | undefined = h.sparse;
    let sparseMap = false;
    if (sparse) size = h.realSize ?? size;
    // GNU tar PAX sparse formats 0.0, 0.1 and 1.0.
    if (
      pax.sparseMajor !== undefined || pax.sparseMap !== undefined ||
      pax.sparseSize !== undefined || pax.sparseRealsize !== undefined
    ) {
      size = num(
        "GNU.sparse.realsize",
        pax.sparseRealsize,
        num("GNU.sparse.size", pax.sparseSize, size),
      );
      if (pax.sparseMajor === "1") {
        sparseMap = true;
        sparse = [];
      } else {
        sparse = [];
        const nums = pax.sparseMap !== undefined
          ? (pax.sparseMap === "" ? [] : pax.sparseMap.split(","))
          : pax.sparseOffsets.flatMap((o, i) => [o, pax.sparseNumbytes[i] ?? ""]);
        if (nums.length % 2 || nums.length / 2 > TAR_LIMITS.sparseSegments) {
          throw bad(`bad sparse map (${nums.length} numbers)`);
        }
        for (let i = 0; i < nums.length; i += 2) {
          sparse.push({
            offset: num("GNU.sparse.offset", nums[i], 0),
            size: num("GNU.sparse.numbytes", nums[i + 1], 0),
          });
        }
      }
    }

    let kind = TYPE_KIND[h.type] ?? "file";
    // Old (v7) tars mark directories only by a trailing slash.
    if (kind === "file" && name.length && name[name.length - 1] === 0x2f) {
      kind = "dir";
    }
    if (kind !== "file") sparse = undefined;
    const entry: TarEntry = {
      name,
      linkname,
      kind,
      mode: h.mode,
      uid: num("uid", pax.uid ?? this.#global.uid, h.uid),
      gid: num("gid", pax.gid ?? this.#global.gid, h.gid),
      mtime: num("mtime", pax.mtime ?? this.#global.mtime, h.mtime, true),
      size: kind === "file" ? size : 0,
      sparse,
      hasXattrs: pax.hasXattrs,
    };
    if (sparse && !sparseMap) this.#checkSparse(sparse, size, dataSize, shown);
    this.#padding = (BLOCK - (dataSize % BLOCK)) % BLOCK;
    const want = this.#handler.entry(entry);
    if (!want || kind !== "file") {
      if (want) this.#handler.end();
      this.#skip(dataSize);
      return;
    }
    this.#remaining = dataSize;
    this.#realSize = size;
    this.#fileOffset = 0;
    this.#segments = sparse ?? [];
    this.#segIndex = 0;
    this.#segUsed = 0;
    this.#mapSkip = 0;
    if (sparseMap) {
      this.#mapText = "";
      this.#mapNumbers = [];
      this.#mapCount = -1;
      this.#mapConsumed = 0;
      if (dataSize === 0) throw bad("bad sparse map (no data)");
      this.#state = State.SparseMap;
      return;
    }
    this.#afterMap();
  }

  /**
   * A sparse map must list ordered, disjoint extents inside the file, whose
   * sizes add up to the data in the archive; the holes of a stream's sparse
   * files together stay under TAR_LIMITS.streamHoleBytes.
   */
  #checkSparse(segs: SparseSegment[], realSize: number, data: number, shown: string): void {
    const bad = (detail: string) => this.#error(`bad sparse map in ${shown}: ${detail}`);
    if (segs.length > TAR_LIMITS.sparseSegments) {
      throw bad(`more than ${TAR_LIMITS.sparseSegments} extents`);
    }
    let end = 0;
    let total = 0;
    for (const s of segs) {
      if (s.offset < end) throw bad("extents overlap or are out of order");
      end = s.offset + s.size;
      total += s.size;
      if (end > realSize) throw bad(`extent ends at ${end}, beyond the size ${realSize}`);
    }
    if (total !== data) throw bad(`extents hold ${total} bytes, the entry ${data}`);
    this.#holeBytes += realSize - data;
    if (this.#holeBytes > TAR_LIMITS.streamHoleBytes) {
      throw bad(
        `sparse files claim more than ${TAR_LIMITS.streamHoleBytes} bytes of holes in one layer`,
      );
    }
  }

  /** PAX sparse 1.0: decimal numbers, one per line, padded to a block. */
  #sparseMap(chunk: Uint8Array, pos: number, len: number): number {
    const shown = JSON.stringify(this.#entryName);
    const bad = (detail: string) => this.#error(`bad sparse map in ${shown}: ${detail}`);
    const end = pos + Math.min(this.#remaining, len - pos);
    const start = pos;
    while (pos < end && this.#mapCount !== this.#mapNumbers.length) {
      const c = chunk[pos++]!;
      if (c === 0x0a) {
        const v = parseDecimal(this.#mapText);
        if (v === undefined) throw bad(`${JSON.stringify(this.#mapText)} is not a number`);
        if (this.#mapCount < 0) {
          if (v > TAR_LIMITS.sparseSegments) {
            throw bad(`more than ${TAR_LIMITS.sparseSegments} extents`);
          }
          this.#mapCount = v * 2;
        } else this.#mapNumbers.push(v);
        this.#mapText = "";
      } else {
        this.#mapText += String.fromCharCode(c);
        if (this.#mapText.length > TAR_LIMITS.numberChars) throw bad("number too long");
      }
    }
    this.#remaining -= pos - start;
    this.#mapConsumed += pos - start;
    if (this.#mapCount === this.#mapNumbers.length) {
      // The map is padded to a block boundary; the data follows.
      this.#mapSkip = (BLOCK - (this.#mapConsumed % BLOCK)) % BLOCK;
      if (this.#mapSkip > this.#remaining) throw bad("truncated");
      this.#segments = [];
      for (let k = 0; k < this.#mapNumbers.length; k += 2) {
        this.#segments.push({
          offset: this.#mapNumbers[k]!,
          size: this.#mapNumbers[k + 1]!,
        });
      }
      this.#mapNumbers = [];
      this.#checkSparse(
        this.#segments,
        this.#realSize,
        this.#remaining - this.#mapSkip,
        shown,
      );
      this.#afterMap();
    } else if (this.#remaining === 0) {
      throw bad("truncated");
    }
    return pos;
  }

  #afterMap(): void {
    if (this.#remaining === 0) {
      this.#handler.end();
      this.#toPadding();
    } else {
      this.#state = State.Data;
    }
  }

  #emit(chunk: Uint8Array): void {
    if (this.#mapSkip > 0) {
      const n = Math.min(this.#mapSkip, chunk.length);
      this.#mapSkip -= n;
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    if (this.#segments.length === 0) {
      this.#handler.data(chunk, this.#fileOffset);
      this.#fileOffset += chunk.length;
      return;
    }
    let pos = 0;
    while (pos < chunk.length) {
      while (this.#segments[this.#segIndex]?.size === 0) this.#segIndex++;
      const seg = this.#segments[this.#segIndex];
      if (!seg) throw new Error("internal error: sparse data beyond the checked map");
      const n = Math.min(seg.size - this.#segUsed, chunk.length - pos);
      this.#handler.data(chunk.subarray(pos, pos + n), seg.offset + this.#segUsed);
      pos += n;
      this.#segUsed += n;
      if (this.#segUsed === seg.size) {
        this.#segIndex++;
        this.#segUsed = 0;
      }
    }
  }
}

function trimNul(data: Uint8Array): Uint8Array {
  let end = data.length;
  while (end > 0 && data[end - 1] === 0) end--;
  return data.subarray(0, end);
}

const lossy = new TextDecoder();

/** A name for messages: UTF-8 with invalid bytes replaced. */
export function displayName(name: Uint8Array): string {
  return lossy.decode(name);
}
