import { strictEqual, throws } from "node:assert/strict";
import {
  choosePlatform,
  type Descriptor,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  OCI_MANIFEST,
  parseManifest,
} from "./manifest.ts";

const enc = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));
const digest = (c: string) => `sha256:${c.repeat(64)}`;
const desc = (arch: string, variant?: string, extra: Partial<Descriptor> = {}): Descriptor => ({
  mediaType: OCI_MANIFEST,
  digest: digest(arch.length.toString(16)),
  size: 1,
  platform: { os: "linux", architecture: arch, variant },
  ...extra,
});

Deno.test("parseManifest() reads OCI and Docker schema 2 manifests and lists", () => {
  const m = parseManifest(
    enc({
      schemaVersion: 2,
      mediaType: DOCKER_MANIFEST,
      config: {
        mediaType: "application/vnd.docker.container.image.v1+json",
        digest: digest("c"),
        size: 3,
      },
      layers: [{
        mediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip",
        digest: digest("1"),
        size: 10,
      }],
    }),
    "",
    "manifest",
  );
  strictEqual(m.kind, "manifest");
  // No mediaType in body or header: told by shape.
  strictEqual(
    parseManifest(enc({ schemaVersion: 2, manifests: [] }), "text/plain", "m").kind,
    "index",
  );
  const l = parseManifest(
    enc({ schemaVersion: 2, manifests: [desc("amd64")] }),
    `${DOCKER_LIST}; charset=utf-8`,
    "m",
  );
  strictEqual(l.kind === "index" && l.mediaType, DOCKER_LIST);
});

Deno.test("parseManifest() refuses schema 1, foreign layers, artifacts and bad digests", () => {
  const layer = (extra: Record<string, unknown>) =>
    enc({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: digest("c"),
        size: 2,
      },
      layers: [{
        mediaType: "application/vnd.oci.image.layer.v1.tar",
        digest: digest("1"),
        size: 1,
        ...extra,
      }],
    });
  const table: [string, Uint8Array, string, RegExp][] = [
    ["schema 1", enc({ schemaVersion: 1, fsLayers: [] }), "", /schema 1 is not supported/],
    [
      "schema 1 by type",
      enc({ schemaVersion: 2 }),
      "application/vnd.docker.distribution.manifest.v1+prettyjws",
      /schema 1/,
    ],
    ["not JSON", new TextEncoder().encode("<html>"), "", /not valid JSON/],
    [
      "foreign",
      layer({ mediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" }),
      "",
      /foreign layer/,
    ],
    ["urls", layer({ urls: ["https://example.com/x"] }), "", /foreign layer/],
    [
      "sha512",
      layer({ digest: `sha512:${"a".repeat(128)}` }),
      "",
      /unsupported or malformed digest/,
    ],
    ["negative size", layer({ size: -1 }), "", /malformed size/],
    [
      "artifact",
      enc({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: {
          mediaType: "application/vnd.cncf.helm.config.v1+json",
          digest: digest("c"),
          size: 2,
        },
        layers: [],
      }),
      "",
      /not a container image/,
    ],
  ];
  for (const [name, bytes, ct, re] of table) {
    throws(() => parseManifest(bytes, ct, "manifest"), re, name);
  }
});

Deno.test("choosePlatform() picks by architecture and variant, and lists what exists", () => {
  const index = [
    desc("amd64"),
    desc("arm64", "v8"),
    desc("arm", "v6"),
    desc("arm", "v7"),
    desc("unknown", undefined, {
      annotations: { "vnd.docker.reference.type": "attestation-manifest" },
    }),
  ];
  strictEqual(choosePlatform(index, "amd64", "").platform?.architecture, "amd64");
  strictEqual(choosePlatform(index, "x86_64", "").platform?.architecture, "amd64");
  strictEqual(choosePlatform(index, "arm64", "").platform?.variant, "v8");
  strictEqual(choosePlatform(index, "linux/arm64/v8", "").platform?.variant, "v8");
  strictEqual(choosePlatform(index, "arm/v7", "").platform?.variant, "v7");
  strictEqual(choosePlatform(index, "arm", "").platform?.variant, "v6");
  throws(() => choosePlatform(index, "arm/v5", ""), {
    message:
      "no image for linux/arm/v5; available: linux/amd64, linux/arm64/v8, linux/arm/v6, linux/arm/v7",
  });
  throws(
    () =>
      choosePlatform(
        [{ ...desc("amd64"), platform: { os: "windows", architecture: "amd64" } }],
        "amd64",
        "",
      ),
    { message: "no image for linux/amd64; available: windows/amd64" },
  );
});
