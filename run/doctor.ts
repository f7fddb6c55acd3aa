// The report of `den doctor`, as plain data and text. Pure: cli/doctor.ts
// runs the checks.

/** One check of this node: what works, what does not, and why. */
export interface Check {
  /** Short name of the feature ("user namespaces", "overlayfs"). */
  name: string;
  /** "ok" works; "fail" does not; "info" is a fact, neither. */
  status: "ok" | "fail" | "info";
  /** What was found, one line. */
  detail: string;
  /** What an administrator (or the user) can do, one line. */
  fix?: string;
  /** `den run` needs this check to pass: doctor exits 1 when it fails. */
  required?: boolean;
}

/** den doctor's exit status: 1 when a check `den run` needs failed. */
export function doctorStatus(checks: Check[]): number {
  return checks.some((c) => c.required && c.status === "fail") ? 1 : 0;
}

/** The report as text: one line per check, its fix indented below. */
export function formatReport(checks: Check[]): string {
  const width = Math.max(...checks.map((c) => c.name.length));
  const lines: string[] = [];
  for (const c of checks) {
    const mark = c.status === "ok" ? "ok  " : c.status === "fail" ? "FAIL" : "    ";
    lines.push(`${mark}  ${c.name.padEnd(width)}  ${c.detail}`);
    if (c.fix) lines.push(`${" ".repeat(width + 8)}fix: ${c.fix}`);
  }
  const failed = checks.filter((c) => c.required && c.status === "fail");
  lines.push(
    failed.length
      ? `den run cannot work here: ${failed.map((c) => c.name).join(", ")}`
      : "den run works here",
  );
  return lines.join("\n") + "\n";
}

/** Parse "6.1.0-18-amd64" into [6, 1]; undefined if it is not a version. */
export function kernelVersion(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

/** Is kernel `release` at least major.minor? */
export function kernelAtLeast(release: string, major: number, minor: number): boolean {
  const v = kernelVersion(release);
  return v !== undefined && (v[0] > major || (v[0] === major && v[1] >= minor));
}
