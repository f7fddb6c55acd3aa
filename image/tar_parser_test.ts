import { assertEquals, assertThrows } from "./_assert.ts";
import { makeTar, type TarItem } from "../tests/_tar.ts";
import { type TarEntry, TarParser } from "./tar_parser.ts";
import { parseNumeric } from "./tar_header.ts";
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

Deno.test("decodeName() maps invalid UTF-8 bytes to %XX", () => {
  assertEquals(decodeName(new Uint8Array([0x61, 0xff, 0x62])), { text: "a%FFb", mapped: true });
  assertEquals(decodeName(new TextEncoder().encode("café")), { text: "café", mapped: false });
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
