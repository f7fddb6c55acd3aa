// Image references, as docker and podman write them in RepoTags and the
// org.opencontainers.image.ref.name / io.containerd.image.name annotations.
import { usageError } from "../error.ts";

/** A parsed image reference ("registry/repository:tag@digest"). */
export interface ImageRef {
  /** Registry host, "docker.io" when none was given. */
  registry: string;
  /** Repository path, with "library/" added for docker.io single names. */
  repository: string;
  /** Tag; "latest" when neither tag nor digest was given. */
  tag?: string;
  /** "algo:hex" when given. */
  digest?: string;
}

const DIGEST_RE = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const PATH_RE =
  /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;

/**
 * Parse and normalize an image reference the way docker does: "alpine" is
 * "docker.io/library/alpine:latest". Throws a usage error when malformed.
 *
 * @example
 * ```ts
 * const ref = parseImageRef("alpine:3.19");
 * // { registry: "docker.io", repository: "library/alpine", tag: "3.19" }
 * ```
 */
export function parseImageRef(text: string): ImageRef {
  let rest = text;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_RE.test(digest)) throw usageError(`invalid image reference: "${text}"`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw usageError(`invalid image reference: "${text}"`);
  }
  let registry = "docker.io";
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost") {
      registry = first;
      rest = rest.slice(slash + 1);
    }
  }
  if (registry === "index.docker.io") registry = "docker.io";
  if (registry === "docker.io" && !rest.includes("/")) rest = `library/${rest}`;
  if (!PATH_RE.test(rest)) throw usageError(`invalid image reference: "${text}"`);
  if (!tag && !digest) tag = "latest";
  return { registry, repository: rest, tag, digest };
}

/** The canonical string of a reference. */
export function formatImageRef(ref: ImageRef): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag) s += `:${ref.tag}`;
  if (ref.digest) s += `@${ref.digest}`;
  return s;
}

/** True when two reference strings name the same image (after normalizing). */
export function sameImageRef(a: string, b: string): boolean {
  if (a === b) return true;
  try {
    return formatImageRef(parseImageRef(a)) === formatImageRef(parseImageRef(b));
  } catch {
    return false;
  }
}
