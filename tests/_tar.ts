// A small tar writer for tests: builds hostile and quirky archives in memory
// (ustar, GNU long names, PAX, base-256 sizes, sparse files, raw bytes).
import zlib from "node:zlib";

export interface TarItem {
  /** Name as text or raw bytes. */
  name: string | Uint8Array;
  type?: "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" | string;
  /** File content (files only). */
  data?: string | Uint8Array;
  linkname?: string | Uint8Array;
  mode?: number;
  mtime?: number;
  uid?: number;
  /** Extra PAX records (written as an 'x' header before the entry). */
  pax?: Record<string, string | Uint8Array>;
  /** Write long names with GNU 'L'/'K' entries instead of PAX. */
  gnuLong?: boolean;
  /** Write the size field in base-256 even if it fits in octal. */
  base256?: boolean;
  /** Header size to claim (defaults to the data length). */
  size?: number;
  /** Old GNU sparse ('S'): data extents; `data` is the packed extents. */
  gnuSparse?: { offset: number; size: number }[];
  realSize?: number;
  /** Corrupt the checksum. */
  badChecksum?: boolean;
}

const enc = new TextEncoder();
const TYPES: Record<string, string> = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  dir: "5",
  fifo: "6",
};

function bytes(v: string | Uint8Array | undefined): Uint8Array {
  if (v === undefined) return new Uint8Array();
  return typeof v === "string" ? enc.encode(v) : v;
}

function octal(block: Uint8Array, at: number, len: number, v: number, base256 = false) {
  const text = v.toString(8);
  if (!base256 && text.length < len) {
    block.set(enc.encode(text.padStart(len - 1, "0")), at);
    block[at + len - 1] = 0;
    return;
  }
  let x = BigInt(v);
  for (let i = len - 1; i > 0; i--) {
    block[at + i] = Number(x & 0xffn);
    x >>= 8n;
  }
  block[at] = 0x80;
}

function header(
  name: Uint8Array,
  type: string,
  size: number,
  item: Partial<TarItem>,
  linkname: Uint8Array = new Uint8Array(),
): Uint8Array {
  const b = new Uint8Array(512);
  b.set(name.subarray(0, 100), 0);
  octal(b, 100, 8, item.mode ?? (type === "5" ? 0o755 : 0o644));
  octal(b, 108, 8, item.uid ?? 0);
  octal(b, 116, 8, 0);
  octal(b, 124, 12, size, item.base256);
  octal(b, 136, 12, item.mtime ?? 1700000000);
  b[156] = type.charCodeAt(0);
  b.set(linkname.subarray(0, 100), 157);
  if (item.gnuSparse) {
    b.set(enc.encode("ustar  \0"), 257);
    item.gnuSparse.slice(0, 4).forEach((s, i) => {
      octal(b, 386 + i * 24, 12, s.offset);
      octal(b, 386 + i * 24 + 12, 12, s.size);
    });
    octal(b, 483, 12, item.realSize ?? 0);
  } else {
    b.set(enc.encode("ustar\x0000"), 257);
  }
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  if (item.badChecksum) sum += 1;
  b.set(enc.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  return b;
}

function pad(data: Uint8Array): Uint8Array[] {
  const rest = (512 - (data.length % 512)) % 512;
  return rest ? [data, new Uint8Array(rest)] : [data];
}

function paxData(records: Record<string, string | Uint8Array>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [k, v] of Object.entries(records)) {
    const body = [enc.encode(` ${k}=`), bytes(v), enc.encode("\n")];
    const bodyLen = body.reduce((n, p) => n + p.length, 0);
    let len = bodyLen + 1;
    while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
    parts.push(enc.encode(String(len)), ...body);
  }
  return concat(parts);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Build a tar archive; `end: false` leaves out the two zero blocks. */
export function makeTar(items: TarItem[], opts: { end?: boolean } = {}): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const item of items) {
    const type = TYPES[item.type ?? "file"] ?? item.type!;
    const name = bytes(item.name);
    const link = bytes(item.linkname);
    const data = bytes(item.data);
    const pax: Record<string, string | Uint8Array> = { ...item.pax };
    if (name.length > 100 && !item.gnuLong) pax.path = name;
    if (link.length > 100 && !item.gnuLong) pax.linkpath = link;
    if (item.gnuLong && name.length > 100) {
      const d = concat([name, new Uint8Array(1)]);
      parts.push(header(enc.encode("././@LongLink"), "L", d.length, {}), ...pad(d));
    }
    if (item.gnuLong && link.length > 100) {
      const d = concat([link, new Uint8Array(1)]);
      parts.push(header(enc.encode("././@LongLink"), "K", d.length, {}), ...pad(d));
    }
    if (Object.keys(pax).length) {
      const d = paxData(pax);
      parts.push(header(enc.encode("PaxHeader"), "x", d.length, {}), ...pad(d));
    }
    const t = item.gnuSparse ? "S" : type;
    parts.push(header(name, t, item.size ?? data.length, item, link));
    if (data.length) parts.push(...pad(data));
  }
  if (opts.end !== false) parts.push(new Uint8Array(1024));
  return concat(parts);
}

export function gzip(data: Uint8Array): Uint8Array {
  return new Uint8Array(zlib.gzipSync(data));
}

export function zstd(data: Uint8Array): Uint8Array {
  return new Uint8Array(zlib.zstdCompressSync(data));
}

export async function sha256(data: Uint8Array): Promise<string> {
  const h = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return "sha256:" + [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A docker-archive (docker save layout) of the given layers. */
export async function makeDockerArchive(
  layers: Uint8Array[],
  opts: {
    config?: Record<string, unknown>;
    tags?: string[];
    diffIds?: string[];
  } = {},
): Promise<Uint8Array> {
  const diffIds: string[] = [];
  const items: TarItem[] = [];
  const names: string[] = [];
  for (const l of layers) {
    let raw = l;
    try {
      if (l[0] === 0x1f && l[1] === 0x8b) raw = new Uint8Array(zlib.gunzipSync(l));
    } catch {
      raw = new Uint8Array(); // corrupt on purpose: any diff_id will do
    }
    diffIds.push(await sha256(raw));
    const hex = (await sha256(l)).slice(7);
    names.push(`${hex}.tar`);
    items.push({ name: `${hex}.tar`, data: l });
  }
  const config = {
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/usr/bin:/bin", "FOO=bar"], Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: opts.diffIds ?? diffIds },
    ...opts.config,
  };
  const cbytes = enc.encode(JSON.stringify(config));
  const chex = (await sha256(cbytes)).slice(7);
  items.push({ name: `${chex}.json`, data: cbytes });
  const manifest = [{
    Config: `${chex}.json`,
    RepoTags: opts.tags ?? ["test:latest"],
    Layers: names,
  }];
  items.push({ name: "manifest.json", data: JSON.stringify(manifest) });
  return makeTar(items);
}

/** An OCI image layout directory at `dir` of the given layer tars. */
export async function makeOciLayout(dir: string, layers: Uint8Array[]): Promise<void> {
  const blobs = `${dir}/blobs/sha256`;
  Deno.mkdirSync(blobs, { recursive: true });
  const add = async (b: Uint8Array) => {
    const digest = await sha256(b);
    Deno.writeFileSync(`${blobs}/${digest.slice(7)}`, b);
    return { digest, size: b.length };
  };
  const descs = [];
  const diffIds = [];
  for (const l of layers) {
    descs.push({ mediaType: "application/vnd.oci.image.layer.v1.tar", ...await add(l) });
    diffIds.push(await sha256(l));
  }
  const config = await add(enc.encode(JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: diffIds },
  })));
  const manifest = await add(enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config },
    layers: descs,
  })));
  Deno.writeTextFileSync(`${dir}/oci-layout`, '{"imageLayoutVersion":"1.0.0"}');
  Deno.writeTextFileSync(
    `${dir}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", ...manifest }],
    }),
  );
}

/** Bytes that compress, but not to nothing: a few MiB cross ring slots. */
export function pseudoRandom(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = (x >>> 16) & (i % 3 ? 0xff : 0x0f);
  }
  return b;
}
