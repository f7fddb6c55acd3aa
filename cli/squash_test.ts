import { equal } from "node:assert/strict";
import { wantsSquash } from "./squash.ts";

Deno.test("wantsSquash() looks at DEST, not at an option's value", () => {
  equal(wantsSquash(["a.tar", "out.sqfs"]), true);
  equal(wantsSquash(["--squashfs", "a.tar", "out"]), true);
  equal(wantsSquash(["a.tar", "out"]), false);
  // Option values after DEST are not DEST.
  equal(wantsSquash(["a.tar", "out.sqfs", "--arch", "arm64"]), true);
  equal(wantsSquash(["a.tar", "out", "--image", "x.sqfs"]), false);
  equal(wantsSquash(["-s", "/store", "a.tar", "img"]), false);
});
