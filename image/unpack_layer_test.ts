import { assertEquals, assertThrows } from "./_assert.ts";
import { makeTar, type TarItem } from "../tests/_tar.ts";
import { TarParser } from "./tar_parser.ts";
import { LayerWriter } from "./unpack_layer.ts";

/** A temp dir with rootfs/ and outside/sentinel; removed at the end. */
function sandbox() {
  const dir = Deno.makeTempDirSync({ prefix: "den-layer-test-" });
  const rootfs = `${dir}/rootfs`;
  Deno.mkdirSync(rootfs);
  Deno.mkdirSync(`${dir}/outside`);
  Deno.writeTextFileSync(`${dir}/outside/sentinel`, "keep");
  return {
    dir,
    rootfs,
    outside: `${dir}/outside`,
    apply(...layers: TarItem[][]) {
      const w = new LayerWriter(rootfs);
      for (const items of layers) {
        w.startLayer();
        const p = new TarParser(w);
        p.feed(makeTar(items));
        p.finish();
        w.finishLayer();
      }
      return w.stats;
    },
    /** The outside dir still holds exactly the sentinel. */
    intact() {
      const names = [...Deno.readDirSync(`${dir}/outside`)].map((e) => e.name);
      assertEquals(names, ["sentinel"]);
      assertEquals(Deno.readTextFileSync(`${dir}/outside/sentinel`), "keep");
    },
    ls(path = "") {
      return [...Deno.readDirSync(`${rootfs}/${path}`)].map((e) => e.name).sort();
    },
    [Symbol.dispose]() {
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

Deno.test("LayerWriter applies whiteouts and opaque dirs to lower layers only", () => {
  using s = sandbox();
  s.apply(
    [
      { name: "a/", type: "dir" },
      { name: "a/x", data: "1" },
      { name: "a/y", data: "2" },
      { name: "b/", type: "dir" },
      { name: "b/old", data: "o" },
      { name: "c", data: "c" },
    ],
    [
      { name: "a/.wh.x" },
      { name: "b/", type: "dir" },
      { name: "b/new", data: "n" },
      { name: "b/.wh..wh..opq" }, // after a same-layer file: keeps b/new
      { name: ".wh.c" },
      { name: ".wh.missing" },
    ],
  );
  assertEquals(s.ls("a"), ["y"]);
  assertEquals(s.ls("b"), ["new"]);
  assertEquals(s.ls(), ["a", "b"]);
});

Deno.test("LayerWriter handles type changes between layers", () => {
  using s = sandbox();
  s.apply(
    [
      { name: "d/", type: "dir" },
      { name: "d/f", data: "x" },
      { name: "f", data: "file" },
      { name: "l", type: "symlink", linkname: "d" },
    ],
    [
      { name: "d", data: "now a file" },
      { name: "f/", type: "dir" },
      { name: "f/inner", data: "i" },
      { name: "l", data: "was a link" },
    ],
    [
      { name: "d", type: "symlink", linkname: "f" },
    ],
  );
  assertEquals(Deno.readLinkSync(`${s.rootfs}/d`), "f");
  assertEquals(Deno.readTextFileSync(`${s.rootfs}/f/inner`), "i");
  assertEquals(Deno.readTextFileSync(`${s.rootfs}/l`), "was a link");
});

Deno.test("LayerWriter makes hard links, follows in-rootfs symlinked parents", () => {
  using s = sandbox();
  s.apply(
    [
      { name: "usr/lib/", type: "dir" },
      { name: "lib", type: "symlink", linkname: "usr/lib" },
      { name: "usr/lib/a", data: "A" },
    ],
    [
      { name: "lib/b", data: "B" }, // goes through the symlink, like docker
      { name: "h", type: "hardlink", linkname: "lib/a" },
    ],
  );
  assertEquals(Deno.readTextFileSync(`${s.rootfs}/usr/lib/b`), "B");
  const a = Deno.statSync(`${s.rootfs}/usr/lib/a`);
  assertEquals(Deno.statSync(`${s.rootfs}/h`).ino, a.ino);
});

Deno.test("LayerWriter makes everything user-writable and drops setuid", () => {
  using s = sandbox();
  const st = s.apply([
    { name: "ro/", type: "dir", mode: 0o555 },
    { name: "ro/f", data: "x", mode: 0o4555 },
    { name: "dev/null", type: "char" },
    { name: "dev/sda", type: "block" },
    { name: "fifo", type: "fifo", mode: 0o640 },
  ]);
  assertEquals(Deno.statSync(`${s.rootfs}/ro`).mode! & 0o7777, 0o755);
  assertEquals(Deno.statSync(`${s.rootfs}/ro/f`).mode! & 0o7777, 0o755);
  // Device nodes are skipped; FIFOs are made, the user's like any file.
  assertEquals(st.devices, 2);
  assertEquals(st.fifos, 1);
  const fifo = Deno.lstatSync(`${s.rootfs}/fifo`);
  assertEquals(fifo.isFifo, true);
  assertEquals(fifo.mode! & 0o7777, 0o640);
  assertEquals([...Deno.readDirSync(`${s.rootfs}/dev`)].length, 0);
});

// Hostile input: every attack must leave `outside` as it was.
const hostile: {
  name: string;
  layers: (o: string) => TarItem[][];
  error?: string;
}[] = [
  {
    name: "../ path",
    layers: () => [[{ name: "../../etc/passwd", data: "x" }]],
    error: 'refusing entry outside rootfs: "../../etc/passwd"',
  },
  {
    name: "absolute path is stripped",
    layers: (o) => [[{ name: `${o}/sentinel`, data: "pwned" }]],
  },
  {
    name: "write through symlink to /",
    layers: (o) => [[{ name: "evil", type: "symlink", linkname: "/" }], [{
      name: `evil${o}/sentinel`,
      data: "pwned",
    }]],
    error: "refusing entry through symlink outside rootfs",
  },
  {
    name: "write through symlink to ..",
    layers: () => [[{ name: "up", type: "symlink", linkname: "../../../.." }, {
      name: "up/outside/sentinel",
      data: "pwned",
    }]],
    error: "refusing entry through symlink outside rootfs",
  },
  {
    name: "write through absolute symlink to outside dir",
    layers: (o) => [[{ name: "abs", type: "symlink", linkname: o }, {
      name: "abs/pwn",
      data: "pwned",
    }]],
    error: "refusing entry through symlink outside rootfs",
  },
  {
    name: "file replacing a symlink to an outside file",
    layers: (o) => [[{ name: "s", type: "symlink", linkname: `${o}/sentinel` }], [{
      name: "s",
      data: "pwned",
    }]],
  },
  {
    name: "hard link to outside",
    layers: () => [[{ name: "h", type: "hardlink", linkname: "../outside/sentinel" }]],
    error: 'refusing hard link outside rootfs: "../outside/sentinel"',
  },
  {
    name: "hard link through a symlink to outside",
    layers: (o) => [[{ name: "evil", type: "symlink", linkname: o }, {
      name: "h",
      type: "hardlink",
      linkname: "evil/sentinel",
    }]],
    error: "refusing entry through symlink outside rootfs",
  },
  {
    name: "symlink named .",
    layers: (o) => [[{ name: ".", type: "symlink", linkname: o }]],
    error: 'refusing to replace rootfs with symlink: "."',
  },
  {
    name: "whiteout climbing out",
    layers: () => [[{ name: "../outside/.wh.sentinel" }]],
    error: 'refusing entry outside rootfs: "../outside/.wh.sentinel"',
  },
  {
    name: "whiteout of ..",
    layers: () => [[{ name: "a/.wh.." }]],
    error: 'refusing whiteout outside rootfs: "a/.wh.."',
  },
  {
    name: "whiteout through a symlink",
    layers: (o) => [[{ name: "evil", type: "symlink", linkname: o }], [{
      name: "evil/.wh.sentinel",
    }]],
    error: "refusing entry through symlink outside rootfs",
  },
  {
    name: "opaque whiteout through a symlink",
    layers: (o) => [[{ name: "evil", type: "symlink", linkname: o }], [{
      name: "evil/.wh..wh..opq",
    }]],
    error: "refusing entry through symlink outside rootfs",
  },
  {
    name: "symlink loop",
    layers: () => [[
      { name: "a", type: "symlink", linkname: "b" },
      { name: "b", type: "symlink", linkname: "a" },
      { name: "a/x", data: "x" },
    ]],
    error: 'too many levels of symbolic links: "a"',
  },
];

for (const h of hostile) {
  Deno.test(`LayerWriter contains hostile entry: ${h.name}`, () => {
    using s = sandbox();
    const layers = h.layers(s.outside);
    if (h.error) assertThrows(() => s.apply(...layers), Error, h.error);
    else s.apply(...layers);
    s.intact();
  });
}

Deno.test("LayerWriter.finishLayer() restores directory mtimes from the headers", () => {
  using s = sandbox();
  const outsideMtime = Deno.statSync(s.outside).mtime;
  s.apply(
    [
      { name: "a/", type: "dir", mtime: 1000 },
      { name: "a/b/", type: "dir", mtime: 2000 },
      { name: "a/b/f", data: "f", mtime: 3000 },
      { name: "a/b/g", data: "g", mtime: 3000 },
      { name: "gone/", type: "dir", mtime: 5000 },
      { name: "c/", type: "dir", mtime: 6000 },
      { name: "c", type: "symlink", linkname: s.outside }, // replaces the dir
    ],
    [
      { name: "a/b/.wh.f" }, // bumps a/b, which this layer does not list
      { name: "a/", type: "dir", mtime: 4000 },
      { name: "a/new", data: "n", mtime: 3000 },
      { name: "gone", data: "now a file", mtime: 7000 },
    ],
  );
  const mtime = (p: string) => Deno.lstatSync(`${s.rootfs}/${p}`).mtime!.getTime() / 1000;
  assertEquals(mtime("a"), 4000);
  assertEquals(mtime("a/b/g"), 3000);
  assertEquals(mtime("gone"), 7000);
  assertEquals(mtime("a/b") > 2000, true); // only the first layer listed it
  assertEquals(Deno.statSync(s.outside).mtime, outsideMtime);
  s.intact();
});
