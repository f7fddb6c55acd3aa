// References to pull: "alpine", "alpine:3.19", "ghcr.io/o/r@sha256:...",
// "localhost:5000/x/y:t", with an optional "docker://" in front. Parsing and
// normalizing (docker.io, library/) is image/ref.ts's; this adds where the
// registry answers and what the image is called in storage.
import { usageError } from "../../error.ts";
import { formatImageRef, parseImageRef } from "../ref.ts";

/** A reference to pull, normalized. */
export interface PullRef {
  /** Registry as written in references and auth files ("docker.io", "localhost:5000"). */
  registry: string;
  /** Host[:port] the distribution API is served at ("registry-1.docker.io" for docker.io). */
  endpoint: string;
  /** Repository path ("library/alpine"). */
  repository: string;
  /** Tag; "latest" when neither tag nor digest was given. */
  tag?: string;
  /** "sha256:HEX" when given; it wins over the tag. */
  digest?: string;
  /** The canonical reference ("docker.io/library/alpine:3.19"). */
  text: string;
}

// A hostname (labels of letters, digits, "-"), an IPv4 address, or an IPv6
// address in brackets; then an optional port.
export const HOST_RE =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$/;
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;

/** Parse what the user typed after `den pull` (an optional "docker://" first). */
export function parsePullRef(input: string): PullRef {
  const text = input.startsWith("docker://") ? input.slice("docker://".length) : input;
  const ref = parseImageRef(text);
  if (!HOST_RE.test(ref.registry)) throw usageError(`invalid registry in reference: "${input}"`);
  const port = /:([0-9]+)$/.exec(ref.registry)?.[1];
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) {
    throw usageError(`invalid registry port in reference: "${input}"`);
  }
  if (ref.digest && !SHA256_RE.test(ref.digest)) {
    throw usageError(`unsupported digest in reference (only sha256): "${input}"`);
  }
  return {
    registry: ref.registry,
    endpoint: ref.registry === "docker.io" ? "registry-1.docker.io" : ref.registry,
    repository: ref.repository,
    tag: ref.tag,
    digest: ref.digest,
    text: formatImageRef(ref),
  };
}

/** The host part of "host:port" or "[v6]:port", without brackets. */
function hostOf(endpoint: string): string {
  if (endpoint.startsWith("[")) return endpoint.slice(1, endpoint.indexOf("]"));
  const colon = endpoint.lastIndexOf(":");
  return colon < 0 ? endpoint : endpoint.slice(0, colon);
}

/** localhost, 127.0.0.0/8 or ::1: the only hosts plain http is tried for. */
export function isLoopback(endpoint: string): boolean {
  const host = hostOf(endpoint).toLowerCase();
  if (host === "localhost" || host.endsWith(".localhost")) return true;
  if (host === "::1" || host === "0:0:0:0:0:0:0:1") return true;
  const v4 = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  return !!v4 && v4.slice(1).every((n) => Number(n) <= 255);
}

/**
 * The name a pulled image gets in storage when no DEST is given: the last
 * component of the repository, then "+TAG" unless the tag is "latest", then
 * "+sha256-" and 12 hex digits when pulled by digest ("alpine",
 * "alpine+3.19", "busybox+sha256-0123456789ab").
 */
export function storageNameOf(ref: PullRef): string {
  let name = ref.repository.slice(ref.repository.lastIndexOf("/") + 1);
  if (ref.tag && ref.tag !== "latest") name += `+${ref.tag}`;
  if (ref.digest) name += `+sha256-${ref.digest.slice(7, 19)}`;
  return name;
}
