import { assertEquals, assertThrows } from "./_assert.ts";
import { concat, makeTar, type TarItem } from "../tests/_tar.ts";
import { type TarEntry, TarParser } from "./tar_parser.ts";
import { parseNumeric } from "./tar_header.ts";
import { DenError } from "../error.ts";
import { decodeName, splitEntryPath } from "./entry_path.ts";

interface Got {
  name: string;
  kind: string;
  link: string;
  size: number;
  data: Uint8Array;
  xattrs: boolean;
}

function parse(tar: Uint8Array, chunk = 7919): Got[] {
  const out: Got[] = [];
  let cur: Got | undefined;
  const dec = new TextDecoder();
  const p = new TarParser({
    entry(e: TarEntry) {
      cur = {
        name: dec.decode(e.name),
        kind: e.kind,
        link: dec.decode(e.linkname),
        size: e.size,
        data: new Uint8Array(e.size),
        xattrs: e.hasXattrs,
      };
      out.push(cur);
      return true;
    },
    data(c, off) {
      cur!.data.set(c, off);
    },
    end() {},
  });
  for (let i = 0; i < tar.length; i += chunk) p.feed(tar.subarray(i, i + chunk));
  p.finish();
  return out;
}

const text = (g: Got) => new TextDecoder().decode(g.data);

Deno.test("TarParser reads ustar files, dirs, links in any chunking", () => {
  const items: TarItem[] = [
    { name: "d/", type: "dir" },
    { name: "d/f", data: "hello" },
    { name: "d/s", type: "symlink", linkname: "f" },
    { name: "d/h", type: "hardlink", linkname: "d/f" },
  ];
  for (const chunk of [1, 100, 512, 513, 100000]) {
    const got = parse(makeTar(items), chunk);
    assertEquals(got.map((g) => [g.name, g.kind, g.link]), [
      ["d/", "dir", ""],
      ["d/f", "file", ""],
      ["d/s", "symlink", "f"],
      ["d/h", "hardlink", "d/f"],
    ]);
    assertEquals(text(got[1]!), "hello");
  }
});

Deno.test("TarParser reads PAX and GNU long names and link targets", () => {
  const long = "a/".repeat(80) + "é-ünï-名前";
  const got = parse(makeTar([
    { name: long, data: "x" },
    { name: long + "2", data: "y", gnuLong: true },
    { name: "l", type: "symlink", linkname: long },
    { name: "l2", type: "symlink", linkname: long, gnuLong: true },
    { name: "short", pax: { path: "renamed", "SCHILY.xattr.user.a": "b" } },
  ]));
  assertEquals(got.map((g) => g.name), [long, long + "2", "l", "l2", "renamed"]);
  assertEquals(got[2]!.link, long);
  assertEquals(got[3]!.link, long);
  assertEquals(got[4]!.xattrs, true);
});

Deno.test("TarParser reads base-256 sizes", () => {
  const got = parse(makeTar([{ name: "f", data: "abc", base256: true }]));
  assertEquals(text(got[0]!), "abc");
  const b = new Uint8Array(12);
  b[0] = 0x80;
  b[7] = 0x02; // 2 << 32
  assertEquals(parseNumeric(b, 0, 12), 2 * 2 ** 32);
});

Deno.test("TarParser accepts layers without end-of-archive blocks", () => {
  const got = parse(makeTar([{ name: "f", data: "abc" }], { end: false }));
  assertEquals(got.length, 1);
});

Deno.test("TarParser rejects truncated archives and bad checksums", () => {
  const tar = makeTar([{ name: "f", data: "a".repeat(2000) }]);
  assertThrows(
    () => parse(tar.subarray(0, 1000)),
    Error,
    'unexpected end of archive in "f" (truncated)',
  );
  assertThrows(() => parse(tar.subarray(0, 300)), Error, "truncated");
  assertThrows(
    () => parse(makeTar([{ name: "f", badChecksum: true }])),
    Error,
    "corrupt tar header (bad checksum)",
  );
});

Deno.test("TarParser reads old GNU sparse files", () => {
  const got = parse(makeTar([{
    name: "sp",
    data: "AAAABBBB",
    gnuSparse: [{ offset: 0, size: 4 }, { offset: 10000, size: 4 }],
    realSize: 20000,
  }]));
  assertEquals(got[0]!.size, 20000);
  assertEquals(text({ ...got[0]!, data: got[0]!.data.subarray(0, 4) }), "AAAA");
  assertEquals(new TextDecoder().decode(got[0]!.data.subarray(10000, 10004)), "BBBB");
});

Deno.test("TarParser reads PAX 1.0 sparse files", () => {
  const map = "2\n0\n3\n5000\n3\n";
  const mapBlock = new Uint8Array(512);
  mapBlock.set(new TextEncoder().encode(map));
  const data = new Uint8Array(512 + 6);
  data.set(mapBlock);
  data.set(new TextEncoder().encode("xyzuvw"), 512);
  const got = parse(makeTar([{
    name: "GNUSparseFile.0/sp",
    data,
    pax: {
      "GNU.sparse.major": "1",
      "GNU.sparse.minor": "0",
      "GNU.sparse.name": "sp",
      "GNU.sparse.realsize": "6000",
    },
  }]));
  assertEquals(got[0]!.name, "sp");
  assertEquals(got[0]!.size, 6000);
  assertEquals(new TextDecoder().decode(got[0]!.data.subarray(0, 3)), "xyz");
  assertEquals(new TextDecoder().decode(got[0]!.data.subarray(5000, 5003)), "uvw");
});

Deno.test("decodeName() refuses names that are not valid UTF-8", () => {
  assertThrows(
    () => decodeName(new Uint8Array([0x61, 0xff, 0x62])),
    DenError,
    'refusing name that is not valid UTF-8: "a\\xffb"',
  );
  assertThrows(
    () => decodeName(new Uint8Array([0xc3, 0x28]), "link target"),
    DenError,
    'refusing link target that is not valid UTF-8: "\\xc3("',
  );
  assertEquals(decodeName(new TextEncoder().encode("café")), "café");
  assertEquals(decodeName(new TextEncoder().encode("a%FFb")), "a%FFb");
});

Deno.test("splitEntryPath() strips / and . and refuses climbing out", () => {
  assertEquals(splitEntryPath("/etc//./passwd"), ["etc", "passwd"]);
  assertEquals(splitEntryPath("./a/../b"), ["b"]);
  assertEquals(splitEntryPath("./"), []);
  assertThrows(
    () => splitEntryPath("../../etc/passwd"),
    Error,
    'refusing entry outside rootfs: "../../etc/passwd"',
  );
  assertThrows(() => splitEntryPath("a/../../x"), Error, "outside rootfs");
});

/** Set a header block's checksum after editing it. */
function rechecksum(b: Uint8Array): Uint8Array {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.set(new TextEncoder().encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  return b;
}

/** A tar whose first header's size field is replaced by `field` bytes. */
function withSizeField(field: number[]): Uint8Array {
  const tar = makeTar([{ name: "f", data: "abc" }]);
  tar.fill(0, 124, 136);
  tar.set(field, 124);
  rechecksum(tar.subarray(0, 512));
  return tar;
}

/** An old GNU sparse entry followed by endless extension blocks. */
function endlessSparse(blocks: number): Uint8Array {
  const head = makeTar([{
    name: "sp",
    gnuSparse: [{ offset: 0, size: 0 }],
    realSize: 0,
  }], { end: false });
  head[482] = 1;
  rechecksum(head.subarray(0, 512));
  const ext = new Uint8Array(512);
  for (let i = 0; i < 21; i++) {
    ext.set(new TextEncoder().encode("00000000001\0"), i * 24);
    ext.set(new TextEncoder().encode("00000000000\0"), i * 24 + 12);
  }
  ext[504] = 1;
  const out = new Uint8Array(512 + blocks * 512);
  out.set(head.subarray(0, 512));
  for (let i = 0; i < blocks; i++) out.set(ext, 512 + i * 512);
  return out;
}

const MiB = 1 << 20;

/** Archives that lie in their numbers or sizes: each is refused with this
 * message, quickly (a negative size used to loop forever). */
const HOSTILE: { name: string; tar: () => Uint8Array; error: string }[] = [
  {
    name: "negative PAX size",
    tar: () => makeTar([{ name: "f", data: "abc", pax: { size: "-1536" } }]),
    error: 'bad PAX record size="-1536" (not a decimal number) in "f"',
  },
  ...["1e3", "0x10", " 12", "12 ", "+1", "", "1.5", "99999999999999999999"].map((v) => ({
    name: `PAX size ${JSON.stringify(v)}`,
    tar: () => makeTar([{ name: "f", data: "abc", pax: { size: v } }]),
    error: `bad PAX record size=${JSON.stringify(v)} (not a decimal number) in "f"`,
  })),
  {
    name: "negative PAX uid",
    tar: () => makeTar([{ name: "f", pax: { uid: "-1" } }]),
    error: 'bad PAX record uid="-1"',
  },
  {
    name: "PAX mtime that is no number",
    tar: () => makeTar([{ name: "f", pax: { mtime: "soon" } }]),
    error: 'bad PAX record mtime="soon"',
  },
  {
    name: "huge PAX number",
    tar: () => makeTar([{ name: "f", pax: { size: "1".repeat(100000) } }]),
    error: "bad PAX record size=",
  },
  {
    name: "negative base-256 size",
    tar: () => withSizeField([0xff, ...new Array(11).fill(0xff)]),
    error: 'corrupt tar header for "f": size: negative number',
  },
  {
    name: "base-256 size beyond safe integers",
    tar: () => withSizeField([0x80, ...new Array(11).fill(0xff)]),
    error: 'corrupt tar header for "f": size: number too large',
  },
  {
    name: "PAX record length of garbage",
    tar: () => {
      const t = makeTar([{ name: "f", pax: { path: "x" } }]);
      t.set(new TextEncoder().encode("9999999999999"), 512);
      return t;
    },
    error: "corrupt PAX header",
  },
  {
    name: "40 PAX headers of 8 MiB",
    tar: () => {
      const big = "x".repeat(8 * MiB - 100);
      const one = makeTar([{ name: "f", pax: { comment: big } }], { end: false });
      // Keep only the 'x' header and its data, 40 times, then a real entry.
      const x = one.subarray(0, one.length - 512);
      return concat([...new Array(40).fill(x), makeTar([{ name: "f" }])]);
    },
    error: "extended headers too large (over 1048576 bytes for one entry)",
  },
  {
    name: "many small PAX headers for one entry",
    tar: () => makeTar([{ name: "f", pax: { comment: "y".repeat(MiB) } }]),
    error: "extended headers too large",
  },
  {
    name: "too many PAX records",
    tar: () => {
      const pax: Record<string, string> = {};
      for (let i = 0; i < 70000; i++) pax[`k${i}`] = "";
      return makeTar([{ name: "f", pax }]);
    },
    error: "too many PAX records (over 65536 for one entry)",
  },
  {
    name: "global headers over the stream limit",
    tar: () =>
      makeTar(
        new Array(3).fill(0).map((_, i) => ({
          name: `g${i}`,
          type: "g",
          data: `${600016} comment=${"z".repeat(600000)}\n`,
        })),
      ),
    error: "global extended headers too large (over 1048576 bytes in one layer)",
  },
  {
    name: "name over 4096 bytes",
    tar: () => makeTar([{ name: "n".repeat(5000), data: "x" }]),
    error: "name too long (5000 bytes, over 4096)",
  },
  {
    name: "link target over 4096 bytes",
    tar: () => makeTar([{ name: "l", type: "symlink", linkname: "t".repeat(5000), gnuLong: true }]),
    error: "link target too long (5000 bytes, over 4096)",
  },
  {
    name: "sparse map with a negative number",
    tar: () =>
      makeTar([{
        name: "sp",
        data: "abc",
        pax: { "GNU.sparse.map": "0,-3", "GNU.sparse.realsize": "3" },
      }]),
    error: 'bad PAX record GNU.sparse.numbytes="-3"',
  },
  {
    name: "sparse file of a petabyte",
    tar: () =>
      makeTar([{
        name: "sp",
        data: "abc",
        pax: { "GNU.sparse.map": "0,3", "GNU.sparse.realsize": String(2 ** 50) },
      }]),
    error: "sparse files claim more than 68719476736 bytes of holes in one layer",
  },
  {
    name: "sparse extents beyond the file",
    tar: () =>
      makeTar([{
        name: "sp",
        data: "abc",
        pax: { "GNU.sparse.map": "10,3", "GNU.sparse.realsize": "5" },
      }]),
    error: "extent ends at 13, beyond the size 5",
  },
  {
    name: "overlapping sparse extents",
    tar: () =>
      makeTar([{
        name: "sp",
        data: "abcd",
        pax: { "GNU.sparse.map": "0,2,1,2", "GNU.sparse.realsize": "5" },
      }]),
    error: "extents overlap or are out of order",
  },
  {
    name: "sparse extents holding less than the data",
    tar: () =>
      makeTar([{
        name: "sp",
        data: "abcd",
        pax: { "GNU.sparse.map": "0,2", "GNU.sparse.realsize": "5" },
      }]),
    error: "extents hold 2 bytes, the entry 4",
  },
  {
    name: "PAX 1.0 sparse map of a million extents",
    tar: () => {
      const data = new Uint8Array(1024);
      data.set(new TextEncoder().encode("1000000\n0\n"));
      return makeTar([{
        name: "GNUSparseFile.0/sp",
        data,
        pax: { "GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "9" },
      }]);
    },
    error: "more than 16384 extents",
  },
  {
    name: "old GNU sparse with endless extension blocks",
    tar: () => endlessSparse(1000),
    error: 'corrupt tar header for "sp": more than 16384 sparse extents',
  },
];

for (const h of HOSTILE) {
  Deno.test(`TarParser refuses hostile numbers and sizes: ${h.name}`, () => {
    const tar = h.tar();
    const t0 = performance.now();
    for (const chunk of [512, 1 << 20]) assertThrows(() => parse(tar, chunk), DenError, h.error);
    assertEquals(performance.now() - t0 < 5000, true);
  });
}

Deno.test("TarParser keeps no extended header buffer alive in its values", () => {
  // A 1 MiB PAX header whose path is one byte: the entry's name is a copy.
  const names: Uint8Array[] = [];
  const p = new TarParser({
    entry(e) {
      names.push(e.name);
      return false;
    },
    data() {},
    end() {},
  });
  p.feed(makeTar([{ name: "f", pax: { path: "p", comment: "c".repeat(MiB - 100) } }]));
  assertEquals(names[0]!.buffer.byteLength < 4096, true);
});

Deno.test("TarParser.skip() jumps over data it was told to skip", () => {
  const tar = makeTar([{ name: "a", data: "x".repeat(1000) }, { name: "b", data: "y" }]);
  const seen: string[] = [];
  const p = new TarParser({
    entry(e) {
      seen.push(new TextDecoder().decode(e.name));
      return false;
    },
    data() {},
    end() {},
  });
  let pos = 0;
  while (!p.ended && pos < tar.length) {
    const s = p.skippable();
    if (s > 0) {
      p.skip(s);
      pos += s;
    } else {
      p.feed(tar.subarray(pos, pos + 512));
      pos += 512;
    }
  }
  assertEquals(seen, ["a", "b"]);
  assertThrows(() => p.skip(1), Error, "internal error");
});
