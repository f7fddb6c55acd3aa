import { equal, throws } from "node:assert/strict";
import { findOnPath, isSquashfs, squashfuseProgram, squashMountPoint } from "./squash.ts";

const dirs = (...have: string[]) => ({
  lkind: (p: string) => (have.includes(p) ? "dir" as const : undefined),
});

Deno.test("squashMountPoint() takes the first candidate no bind source touches", () => {
  const fs = dirs("/mnt", "/media", "/srv", "/opt");
  equal(squashMountPoint({ sources: ["/dev", "/tmp"] }, fs), "/mnt");
  equal(squashMountPoint({ sources: ["/mnt/lustre/data"] }, fs), "/media");
  equal(squashMountPoint({ sources: ["/mnt", "/media/x"] }, fs), "/srv");
  equal(squashMountPoint({ sources: [] }, dirs("/opt")), "/opt");
});

Deno.test("squashMountPoint() skips candidates under a bind source, and / covers all", () => {
  throws(() => squashMountPoint({ sources: ["/"] }, dirs("/mnt")), /no directory for the SquashFS/);
  equal(squashMountPoint({ sources: ["/var"] }, dirs("/var/tmp", "/boot")), "/boot");
});

Deno.test("squashMountPoint() uses -m DIR as given, if it is a directory", () => {
  equal(squashMountPoint({ sources: ["/data"], mount: "/data" }, dirs("/data")), "/data");
  throws(
    () => squashMountPoint({ sources: [], mount: "/nope" }, dirs()),
    /--mount: not an existing/,
  );
  throws(() => squashMountPoint({ sources: [], mount: "rel" }, dirs("rel")), /--mount/);
});

Deno.test("squashfuseProgram() searches PATH and says how to install it", () => {
  const exe = (f: string) => f === "/b/squashfuse";
  equal(squashfuseProgram("/a:/b", exe), "/b/squashfuse");
  equal(findOnPath("squashfuse", "/a", exe), undefined);
  throws(() => squashfuseProgram("/a", exe), (e: Error & { options?: { hint?: string } }) => {
    equal(e.message, "can't run a SquashFS image: squashfuse not found on $PATH");
    equal(e.options?.hint?.includes("apt install squashfuse"), true);
    return true;
  });
});

Deno.test("isSquashfs() checks the magic", () => {
  equal(isSquashfs(new TextEncoder().encode("hsqs....")), true);
  equal(isSquashfs(new TextEncoder().encode("hsq")), false);
  equal(isSquashfs(new TextEncoder().encode("ustar")), false);
});
