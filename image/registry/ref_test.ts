import { deepStrictEqual, strictEqual, throws } from "node:assert/strict";
import { isLoopback, parsePullRef, storageNameOf } from "./ref.ts";

Deno.test("parsePullRef() normalizes Docker references", () => {
  const cases: [string, Record<string, string | undefined>][] = [
    ["alpine", {
      registry: "docker.io",
      endpoint: "registry-1.docker.io",
      repository: "library/alpine",
      tag: "latest",
      digest: undefined,
      text: "docker.io/library/alpine:latest",
    }],
    ["docker://alpine:3.19", {
      registry: "docker.io",
      endpoint: "registry-1.docker.io",
      repository: "library/alpine",
      tag: "3.19",
      digest: undefined,
      text: "docker.io/library/alpine:3.19",
    }],
    ["index.docker.io/rocky/rocky:9", {
      registry: "docker.io",
      endpoint: "registry-1.docker.io",
      repository: "rocky/rocky",
      tag: "9",
      digest: undefined,
      text: "docker.io/rocky/rocky:9",
    }],
    [`ghcr.io/o/r/s@sha256:${"a".repeat(64)}`, {
      registry: "ghcr.io",
      endpoint: "ghcr.io",
      repository: "o/r/s",
      tag: undefined,
      digest: `sha256:${"a".repeat(64)}`,
      text: `ghcr.io/o/r/s@sha256:${"a".repeat(64)}`,
    }],
    ["localhost:5000/x:t", {
      registry: "localhost:5000",
      endpoint: "localhost:5000",
      repository: "x",
      tag: "t",
      digest: undefined,
      text: "localhost:5000/x:t",
    }],
    ["[::1]:5000/a/b", {
      registry: "[::1]:5000",
      endpoint: "[::1]:5000",
      repository: "a/b",
      tag: "latest",
      digest: undefined,
      text: "[::1]:5000/a/b:latest",
    }],
  ];
  for (const [input, want] of cases) deepStrictEqual({ ...parsePullRef(input) }, want, input);
});

Deno.test("parsePullRef() refuses malformed references with a usage error", () => {
  for (
    const bad of [
      "",
      "Alpine",
      "alpine:",
      "a b",
      "alpine@sha256:abc",
      `alpine@sha512:${"a".repeat(128)}`,
      "host:99999/x",
      "exa_mple.com:5000/x",
      "../x",
    ]
  ) {
    throws(() => parsePullRef(bad), (e: Error & { exitCode?: number }) => e.exitCode === 64, bad);
  }
});

Deno.test("storageNameOf() is the last path component, +tag unless latest, +digest prefix", () => {
  strictEqual(storageNameOf(parsePullRef("alpine")), "alpine");
  strictEqual(storageNameOf(parsePullRef("alpine:3.19")), "alpine+3.19");
  strictEqual(storageNameOf(parsePullRef("ghcr.io/o/tool:v1.2")), "tool+v1.2");
  strictEqual(
    storageNameOf(parsePullRef(`busybox@sha256:0123456789ab${"f".repeat(52)}`)),
    "busybox+sha256-0123456789ab",
  );
});

Deno.test("isLoopback() is localhost, 127.0.0.0/8 and ::1 only", () => {
  for (const h of ["localhost", "localhost:5000", "127.0.0.1:80", "127.1.2.3", "[::1]:5000"]) {
    strictEqual(isLoopback(h), true, h);
  }
  for (
    const h of ["10.0.0.1:5000", "128.0.0.1", "localhost.example.com", "[::2]:1", "127.0.0.256"]
  ) {
    strictEqual(isLoopback(h), false, h);
  }
});
