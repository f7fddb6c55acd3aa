// Per-entry memory: an archive of 300,000 entries unpacks within the RSS
// the README states (den keeps ~230 bytes per entry of a layer: the set of
// paths the layer created, which its whiteouts must not remove).
import { equal, ok } from "node:assert/strict";
import { makeTar, type TarItem } from "./_tar.ts";
import { unpackHostile } from "./hostile_helpers.ts";

Deno.test("den unpack of 300,000 entries stays under 192 MiB peak RSS", async () => {
  const items: TarItem[] = [];
  for (let d = 0; d < 300; d++) {
    items.push({ name: `usr/share/d${d}/`, type: "dir" });
    for (let i = 0; i < 1000; i++) items.push({ name: `usr/share/d${d}/file-${i}.txt` });
  }
  const r = await unpackHostile(makeTar(items), { seconds: 120 });
  equal(r.code, 0, r.stderr);
  ok(r.rssMiB < 192, `peak RSS ${r.rssMiB.toFixed(0)} MiB`);
});
