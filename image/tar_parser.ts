// A push parser for tar streams: feed() it chunks as they are decompressed,
// it calls the handler synchronously for every entry and its data. It never
// holds more than one header (plus PAX/long-name data, capped) in memory.
import { DenError } from "../error.ts";
import {
  BLOCK,
  isZeroBlock,
  parsePax,
  parseSparseExtension,
  parseTarHeader,
  type SparseSegment,
  type TarHeader,
} from "./tar_header.ts";

/** A complete entry: headers merged (PAX over GNU long names over ustar). */
export interface TarEntry {
  /** Raw bytes of the path, as in the archive. */
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

// Metadata entries (PAX headers, long names) bigger than this are refused:
// they are held in memory, and real ones are a few hundred bytes.
const META_MAX = 8 << 20;

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
  #pax = new Map<string, Uint8Array>();
  #globalPax = new Map<string, Uint8Array>();
  #longName?: Uint8Array;
  #longLink?: Uint8Array;
  #pending?: TarHeader; // header waiting for sparse extension blocks
  #segments: SparseSegment[] = [];
  #segIndex = 0;
  #segUsed = 0;
  #mapText = "";
  #mapNumbers: number[] = [];
  #mapCount = -1;
  #mapConsumed = 0;
  #fileOffset = 0;
  #entryName = "";
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

  feed(chunk: Uint8Array): void {
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      switch (this.#state) {
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
          if (this.#state === State.Header) this.#header(block);
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
        case State.SparseMap: {
          // PAX sparse 1.0: decimal numbers, one per line, padded to a block.
          const end = pos + Math.min(this.#remaining, len - pos);
          const start = pos;
          while (pos < end && this.#mapCount !== this.#mapNumbers.length) {
            const c = chunk[pos++]!;
            if (c === 0x0a) {
              const v = Number(this.#mapText);
              if (!Number.isSafeInteger(v) || this.#mapText === "") {
                throw this.#error("corrupt sparse map");
              }
              if (this.#mapCount < 0) this.#mapCount = v * 2;
              else this.#mapNumbers.push(v);
              this.#mapText = "";
            } else {
              this.#mapText += String.fromCharCode(c);
              if (this.#mapText.length > 32) {
                throw this.#error("corrupt sparse map");
              }
            }
          }
          this.#remaining -= pos - start;
          this.#mapConsumed += pos - start;
          if (this.#mapCount === this.#mapNumbers.length) {
            // The map is padded to a block boundary; the data follows.
            this.#mapSkip = (BLOCK - (this.#mapConsumed % BLOCK)) % BLOCK;
            if (this.#mapSkip > this.#remaining) {
              throw this.#error("corrupt sparse map");
            }
            this.#segments = [];
            for (let k = 0; k < this.#mapNumbers.length; k += 2) {
              this.#segments.push({
                offset: this.#mapNumbers[k]!,
                size: this.#mapNumbers[k + 1]!,
              });
            }
            this.#afterMap();
          } else if (this.#remaining === 0) {
            throw this.#error("corrupt sparse map");
          }
          break;
        }
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
        case State.Skip: {
          const n = Math.min(this.#remaining, len - pos);
          pos += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#toPadding();
          break;
        }
        case State.Padding: {
          const n = Math.min(this.#padding, len - pos);
          pos += n;
          this.#padding -= n;
          if (this.#padding === 0) this.#state = State.Header;
          break;
        }
      }
    }
  }

  /** End of input. A stream may end after an entry without the two zero
   * blocks (umoci writes layers like that); anything else is truncation. */
  finish(): void {
    if (this.#state === State.End) return;
    if (this.#state === State.Header && this.#hdrFill === 0) {
      if (this.#pax.size || this.#longName || this.#longLink) {
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

  #error(detail: string): DenError {
    return new DenError("", detail);
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
    const h = parseTarHeader(block);
    this.#padding = (BLOCK - (h.size % BLOCK)) % BLOCK;
    switch (h.type) {
      case "x":
      case "g":
      case "L":
      case "K":
        if (h.size > META_MAX) {
          throw this.#error(`extended header too large (${h.size} bytes)`);
        }
        this.#metaType = h.type;
        this.#meta = new Uint8Array(h.size);
        this.#metaFill = 0;
        this.#remaining = h.size;
        if (h.size === 0) this.#metaDone();
        else this.#state = State.Meta;
        return;
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
    if (!parseSparseExtension(block, h.sparse!)) {
      this.#pending = undefined;
      this.#begin(h);
    }
  }

  #metaDone(): void {
    const data = this.#meta!;
    this.#meta = undefined;
    switch (this.#metaType) {
      case "x":
        for (const [k, v] of parsePax(data)) this.#pax.set(k, v);
        break;
      case "g":
        for (const [k, v] of parsePax(data)) this.#globalPax.set(k, v);
        break;
      case "L":
        this.#longName = trimNul(data);
        break;
      case "K":
        this.#longLink = trimNul(data);
        break;
    }
    this.#toPadding();
  }

  #skip(size: number): void {
    this.#remaining = size;
    if (size > 0) this.#state = State.Skip;
    else this.#toPadding();
  }

  #begin(h: TarHeader): void {
    const pax = this.#pax;
    const g = this.#globalPax;
    const get = (k: string) => pax.get(k) ?? g.get(k);
    const num = (k: string, fallback: number): number => {
      const v = get(k);
      if (v === undefined) return fallback;
      const n = Number(new TextDecoder().decode(v));
      if (!Number.isFinite(n)) throw this.#error(`corrupt PAX header (${k})`);
      return n;
    };
    let name = this.#longName ?? h.name;
    let linkname = this.#longLink ?? h.linkname;
    const paxPath = pax.get("path");
    if (paxPath) name = paxPath;
    const paxLink = pax.get("linkpath");
    if (paxLink) linkname = paxLink;
    const dataSize = Math.floor(num("size", h.size));
    let size = dataSize;
    let sparse: SparseSegment[] | undefined = h.sparse;
    let sparseMap = false;
    if (sparse) size = h.realSize ?? size;
    let hasXattrs = false;
    for (const k of pax.keys()) {
      if (k.startsWith("SCHILY.xattr.") || k.startsWith("LIBARCHIVE.xattr.")) {
        hasXattrs = true;
      }
    }
    // GNU tar PAX sparse formats 0.0, 0.1 and 1.0.
    const major = get("GNU.sparse.major");
    const sparseName = get("GNU.sparse.name");
    if (major !== undefined || get("GNU.sparse.map") || get("GNU.sparse.size")) {
      size = num("GNU.sparse.realsize", num("GNU.sparse.size", size));
      if (sparseName) name = sparseName;
      const map = get("GNU.sparse.map");
      if (major !== undefined && new TextDecoder().decode(major) === "1") {
        sparseMap = true;
        sparse = [];
      } else if (map) {
        const nums = new TextDecoder().decode(map).split(",").map(Number);
        sparse = [];
        for (let i = 0; i + 1 < nums.length; i += 2) {
          sparse.push({ offset: nums[i]!, size: nums[i + 1]! });
        }
      } else {
        const offs: number[] = [];
        const lens: number[] = [];
        for (const [k, v] of pax) {
          const n = Number(new TextDecoder().decode(v));
          if (k.startsWith("GNU.sparse.offset#")) offs.push(n);
          if (k.startsWith("GNU.sparse.numbytes#")) lens.push(n);
        }
        sparse = offs.map((o, i) => ({ offset: o, size: lens[i] ?? 0 }));
      }
      for (const s of sparse) {
        if (!Number.isSafeInteger(s.offset) || !Number.isSafeInteger(s.size)) {
          throw this.#error("corrupt sparse map");
        }
      }
    }
    this.#pax = new Map();
    this.#longName = undefined;
    this.#longLink = undefined;

    let kind = TYPE_KIND[h.type] ?? "file";
    // Old (v7) tars mark directories only by a trailing slash.
    if (kind === "file" && name.length && name[name.length - 1] === 0x2f) {
      kind = "dir";
    }
    this.#entryName = displayName(name);
    const entry: TarEntry = {
      name,
      linkname,
      kind,
      mode: h.mode,
      uid: num("uid", h.uid),
      gid: num("gid", h.gid),
      mtime: num("mtime", h.mtime),
      size: kind === "file" ? size : 0,
      sparse,
      hasXattrs,
    };
    this.#padding = (BLOCK - (dataSize % BLOCK)) % BLOCK;
    const want = this.#handler.entry(entry);
    if (!want || kind !== "file") {
      if (want) this.#handler.end();
      this.#skip(dataSize);
      return;
    }
    this.#remaining = dataSize;
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
      this.#mapSkip = 0;
      if (dataSize === 0) throw this.#error("corrupt sparse map");
      this.#state = State.SparseMap;
      return;
    }
    this.#afterMap();
  }

  #afterMap(): void {
    let total = 0;
    for (const s of this.#segments) total += s.size;
    if (this.#segments.length && total !== this.#remaining - this.#mapSkip) {
      throw this.#error(
        `corrupt sparse map in "${this.#entryName}"`,
      );
    }
    if (this.#remaining === 0) {
      this.#handler.end();
      this.#toPadding();
    } else {
      this.#state = State.Data;
    }
  }

  #mapSkip = 0;

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
      const seg = this.#segments[this.#segIndex];
      if (!seg) throw this.#error("corrupt sparse map");
      const n = Math.min(seg.size - this.#segUsed, chunk.length - pos);
      this.#handler.data(chunk.subarray(pos, pos + n), seg.offset + this.#segUsed);
      pos += n;
      this.#segUsed += n;
      if (this.#segUsed === seg.size) {
        this.#segIndex++;
        this.#segUsed = 0;
        while (this.#segments[this.#segIndex]?.size === 0) this.#segIndex++;
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
