// Manifests and indexes as registries serve them (OCI image-spec, Docker
// image manifest v2 schema 2 and manifest lists), checked before anything
// they point to is fetched, and the choice of a platform from an index.
import { DenError } from "../../error.ts";

export const OCI_INDEX = "application/vnd.oci.image.index.v1+json";
export const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
export const DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json";
export const DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_V1 = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/** What den asks registries for, most wanted first. */
export const MANIFEST_ACCEPT = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");

const CONFIG_TYPES = new Set([
  "application/vnd.oci.image.config.v1+json",
  "application/vnd.docker.container.image.v1+json",
]);
const LAYER_TYPES = new Set([
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.diff.tar",
]);
const FOREIGN_TYPES = new Set([
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
]);

/** Largest manifest or index read (containerd's limit). */
export const MANIFEST_MAX = 4 << 20;

export interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
}

/** A content descriptor, checked: sha256 digest and a size. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
}

export type Manifest =
  | { kind: "index"; mediaType: string; manifests: Descriptor[] }
  | { kind: "manifest"; mediaType: string; config: Descriptor; layers: Descriptor[] };

const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

function bad(what: string, detail: string): DenError {
  return new DenError(what, detail);
}

function descriptor(v: unknown, what: string, where: string): Descriptor {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw bad(what, `${where}: not an object`);
  const d = v as Record<string, unknown>;
  if (typeof d.digest !== "string" || !SHA256_RE.test(d.digest)) {
    throw bad(
      what,
      `${where}: unsupported or malformed digest ${JSON.stringify(String(d.digest).slice(0, 80))}`,
    );
  }
  if (typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw bad(what, `${where} ${d.digest}: malformed size`);
  }
  const out: Descriptor = {
    mediaType: typeof d.mediaType === "string" ? d.mediaType : "",
    digest: d.digest,
    size: d.size,
  };
  if (d.platform && typeof d.platform === "object") {
    const p = d.platform as Record<string, unknown>;
    const s = (x: unknown) => typeof x === "string" && x ? x : undefined;
    out.platform = { os: s(p.os), architecture: s(p.architecture), variant: s(p.variant) };
  }
  if (d.annotations && typeof d.annotations === "object") {
    out.annotations = Object.fromEntries(
      Object.entries(d.annotations).filter(([, x]) => typeof x === "string"),
    ) as Record<string, string>;
  }
  if (Array.isArray(d.urls)) out.urls = d.urls.filter((u) => typeof u === "string");
  return out;
}

/**
 * Parse a manifest or index body. `contentType` is the response's
 * Content-Type, used when the body names no mediaType. `what` names it in
 * errors ("manifest REF"). Schema 1 and anything that is not a container
 * image are refused here, before any blob is fetched.
 */
export function parseManifest(bytes: Uint8Array, contentType: string, what: string): Manifest {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw bad(what, "not valid JSON");
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw bad(what, "not a JSON object");
  const m = v as Record<string, unknown>;
  const ct = contentType.split(";")[0]!.trim().toLowerCase();
  if (m.schemaVersion === 1 || ct === DOCKER_V1 || ct === DOCKER_V1_SIGNED) {
    throw new DenError(
      what,
      "Docker image manifest v2 schema 1 is not supported (deprecated since 2019)",
      { hint: "push the image again with a current docker, podman or skopeo (schema 2 or OCI)" },
    );
  }
  if (m.schemaVersion !== 2) {
    throw bad(what, `unsupported schemaVersion ${JSON.stringify(m.schemaVersion)}`);
  }
  let type = typeof m.mediaType === "string" && m.mediaType ? m.mediaType : ct;
  if (
    type !== OCI_INDEX && type !== OCI_MANIFEST && type !== DOCKER_LIST && type !== DOCKER_MANIFEST
  ) {
    // An OCI manifest may omit mediaType; tell by shape.
    if (Array.isArray(m.manifests)) type = OCI_INDEX;
    else if (Array.isArray(m.layers)) type = OCI_MANIFEST;
    else throw bad(what, `unsupported media type ${JSON.stringify(type)}`);
  }
  if (type === OCI_INDEX || type === DOCKER_LIST) {
    if (!Array.isArray(m.manifests)) throw bad(what, 'no "manifests" list');
    return {
      kind: "index",
      mediaType: type,
      manifests: m.manifests.map((d, i) => descriptor(d, what, `manifests[${i}]`)),
    };
  }
  const config = descriptor(m.config, what, "config");
  if (config.mediaType && !CONFIG_TYPES.has(config.mediaType)) {
    throw bad(
      what,
      `not a container image (config media type ${JSON.stringify(config.mediaType)})`,
    );
  }
  if (!Array.isArray(m.layers)) throw bad(what, 'no "layers" list');
  const layers = m.layers.map((d, i) => {
    const l = descriptor(d, what, `layer ${i + 1}`);
    if (FOREIGN_TYPES.has(l.mediaType) || (l.urls?.length ?? 0) > 0) {
      throw bad(
        what,
        `layer ${i + 1} ${l.digest} is a foreign layer (${l.mediaType}), which den does not fetch`,
      );
    }
    if (l.mediaType.includes("encrypted")) {
      throw bad(what, `layer ${i + 1} ${l.digest} is encrypted (${l.mediaType})`);
    }
    if (l.mediaType && !LAYER_TYPES.has(l.mediaType)) {
      throw bad(
        what,
        `layer ${i + 1} ${l.digest}: unsupported media type ${JSON.stringify(l.mediaType)}`,
      );
    }
    return l;
  });
  return { kind: "manifest", mediaType: type, config, layers };
}

/** "amd64", "arm/v7", "linux/arm64/v8" → architecture and variant. */
export function parseArch(text: string): { architecture: string; variant?: string } {
  const parts = text.split("/");
  if (parts[0] === "linux" && parts.length > 1) parts.shift();
  return { architecture: normArch(parts[0]!), variant: parts[1] || undefined };
}

/** Kernel and Go spellings of architectures to OCI's. */
export function normArch(a: string): string {
  if (a === "x86_64" || a === "x86-64") return "amd64";
  if (a === "aarch64") return "arm64";
  if (a === "i386" || a === "i686") return "386";
  return a;
}

/** "linux/arm/v7" */
function platformText(p: Platform | undefined): string {
  return [p?.os ?? "?", p?.architecture ?? "?", p?.variant].filter(Boolean).join("/");
}

/** Entries of an index that are images (not attestations or signatures). */
function images(index: Descriptor[]): Descriptor[] {
  return index.filter((d) =>
    !d.annotations?.["vnd.docker.reference.type"] &&
    d.platform?.architecture !== "unknown" &&
    (d.mediaType === "" || d.mediaType === OCI_MANIFEST || d.mediaType === DOCKER_MANIFEST)
  );
}

/**
 * Choose the manifest for an architecture ("amd64", "arm/v7") from an
 * index: Linux entries of that architecture; with a variant, that variant
 * (arm64's "v8" and no variant are the same); without one, the first entry.
 * Throws, listing the platforms there are, when none matches.
 */
export function choosePlatform(index: Descriptor[], arch: string, what: string): Descriptor {
  const want = parseArch(arch);
  const variantOf = (d: Descriptor) => {
    const v = d.platform?.variant;
    return d.platform?.architecture === "arm64" && v === "v8" ? undefined : v;
  };
  const wantVariant = want.architecture === "arm64" && want.variant === "v8"
    ? undefined
    : want.variant;
  const all = images(index);
  const match = all.filter((d) =>
    (d.platform?.os ?? "linux") === "linux" &&
    normArch(d.platform?.architecture ?? "") === want.architecture &&
    (wantVariant === undefined || variantOf(d) === wantVariant)
  );
  if (match.length > 0) return match[0]!;
  const choices = [...new Set(all.map((d) => platformText(d.platform)))].join(", ");
  const wanted = ["linux", want.architecture, want.variant].filter(Boolean).join("/");
  throw new DenError(what, `no image for ${wanted}; available: ${choices || "none"}`, {
    hint: "choose one with --arch",
  });
}
