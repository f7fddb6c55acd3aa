// den unpack interrupted (Ctrl-C, SIGTERM) or out of disk: no DEST, no
// temporary directory, exit status as documented.

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { makeDockerArchive, makeTar, type TarItem } from "./_tar.ts";
import { canMountTmpfs, denPlainArgv, exists } from "./_helpers.ts";

/** A layer with many small files, so unpacking takes a while. */
function bigLayer(files: number): Uint8Array {
  const items: TarItem[] = [{ name: "d/", type: "dir" }];
  const data = new Uint8Array(2048).fill(120);
  for (let i = 0; i < files; i++) items.push({ name: `d/f${i}`, data });
  return makeTar(items);
}

async function archiveIn(dir: string, files: number): Promise<string> {
  const path = `${dir}/big.tar`;
  Deno.writeFileSync(path, await makeDockerArchive([bigLayer(files)]));
  return path;
}

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.test(`den unpack stopped by ${sig} leaves no DEST and no temporary directory`, async () => {
    const dir = Deno.makeTempDirSync({ prefix: "den-unpack-sig-" });
    try {
      const archive = await archiveIn(dir, 40000);
      const [cmd, ...args] = denPlainArgv(["unpack", "-q", archive, `${dir}/out`]);
      const child = new Deno.Command(cmd!, { args, stdout: "null", stderr: "piped" }).spawn();
      // Wait until it is writing: the temporary directory beside DEST exists.
      let started = false;
      for (let i = 0; i < 200 && !started; i++) {
        await new Promise((r) => setTimeout(r, 25));
        started = [...Deno.readDirSync(dir)].some((e) => e.name.startsWith(".out."));
      }
      ok(started, "unpack started writing");
      child.kill(sig);
      const r = await child.output();
      equal(r.code, sig === "SIGINT" ? 130 : 143);
      deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["big.tar"]);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  });
}

Deno.test({
  name: "den unpack on a full disk fails with one line and leaves nothing",
  // A small tmpfs is the full disk.
  ignore: !canMountTmpfs(),
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "den-unpack-full-" });
    const small = `${dir}/small`;
    Deno.mkdirSync(small);
    const m = new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=4m", "tmpfs", small] })
      .outputSync();
    ok(m.success, "mount a small tmpfs");
    try {
      const archive = await archiveIn(dir, 4000); // ~8 MB of data
      const [cmd, ...args] = denPlainArgv(["unpack", "-q", archive, `${small}/out`]);
      const r = await new Deno.Command(cmd!, { args, stdout: "piped", stderr: "piped" }).output();
      const err = new TextDecoder().decode(r.stderr);
      equal(r.code, 31);
      match(err, /^den: error: .*(No space left on device|ENOSPC)/);
      equal(err.trim().split("\n").length, 1, err);
      deepStrictEqual([...Deno.readDirSync(small)], []);
    } finally {
      new Deno.Command("umount", { args: [small] }).outputSync();
      if (exists(dir)) Deno.removeSync(dir, { recursive: true });
    }
  },
});
