// OCI whiteouts (image-spec layer.md, "Whiteouts"), the aufs convention.

/** Prefix of a whiteout: ".wh.NAME" deletes NAME from lower layers. */
export const WHITEOUT_PREFIX = ".wh.";

/** An opaque whiteout: the directory's lower-layer children are hidden. */
export const OPAQUE_WHITEOUT = ".wh..wh..opq";

/** True when a base name is a whiteout (including the opaque marker). */
export function isWhiteout(base: string): boolean {
  return base.startsWith(WHITEOUT_PREFIX);
}
