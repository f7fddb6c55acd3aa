// Environment of the container: ch-run's rules for --set-env and --unset-env.

import { DenError } from "../error.ts";

/** One environment operation, applied in command-line order. */
export type EnvOp =
  | { kind: "set"; text: string } // --set-env=NAME=VALUE
  | { kind: "file"; path: string; text: string } // --set-env=FILE (already read)
  | { kind: "unset"; glob: string }; // --unset-env=GLOB

/** Ordered environment; a set moves the name to the end, as setenv(3) may. */
export type Env = Map<string, string>;

/**
 * Parse "NAME=VALUE" as ch-run does: the name must be non-empty, a value
 * wrapped in single quotes loses them (double quotes are kept).
 */
export function parseEnvLine(line: string, where: string): [string, string] {
  const eq = line.indexOf("=");
  if (eq < 0) {
    throw new DenError("can't parse variable", `no delimiter: ${where}`);
  }
  const name = line.slice(0, eq);
  if (name === "") {
    throw new DenError("can't parse variable", `empty name: ${where}`);
  }
  let value = line.slice(eq + 1);
  if (value.length >= 2 && value.startsWith("'") && value.endsWith("'")) {
    value = value.slice(1, -1);
  }
  return [name, value];
}

/**
 * Expand a value as ch-run 0.31 does: it is split on ":", an element that
 * starts with "$" is replaced by that variable's value, and elements that
 * expand to nothing are dropped ("$HOME:$NOPE:x" gives "/home/ada:x").
 */
export function expandValue(value: string, env: Env): string {
  const parts: string[] = [];
  for (const el of value.split(":")) {
    // A lone "$" names no variable: it stays as it is.
    if (!el.startsWith("$") || el === "$") {
      parts.push(el);
      continue;
    }
    const v = env.get(el.slice(1)) ?? "";
    if (v !== "") parts.push(v);
  }
  return parts.join(":");
}

/**
 * fnmatch(3)-style glob as a whole-string RegExp: `*`, `?`, `[...]`, and
 * the extended globs of FNM_EXTMATCH (ch-run's `--feature extglob`):
 * `?(a|b)`, `*(a|b)`, `+(a|b)`, `@(a|b)` and `!(a|b)`.
 */
export function globToRegExp(glob: string): RegExp {
  return new RegExp(`^${globSource(glob)}$`, "s");
}

/** Index of the ")" closing the "(" at open, or -1. */
function closingParen(glob: string, open: number): number {
  let depth = 0;
  for (let i = open; i < glob.length; i++) {
    if (glob[i] === "(") depth++;
    else if (glob[i] === ")" && --depth === 0) return i;
  }
  return -1;
}

/** Split at "|" outside parentheses. */
function alternatives(body: string): string[] {
  const out: string[] = [];
  let depth = 0, from = 0;
  for (let i = 0; i < body.length; i++) {
    if (body[i] === "(") depth++;
    else if (body[i] === ")") depth--;
    else if (body[i] === "|" && depth === 0) {
      out.push(body.slice(from, i));
      from = i + 1;
    }
  }
  return [...out, body.slice(from)];
}

function globSource(glob: string): string {
  let re = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    const close = "?*+@!".includes(c) && glob[i + 1] === "(" ? closingParen(glob, i + 1) : -1;
    if (close > 0) {
      const alts = alternatives(glob.slice(i + 2, close)).map(globSource).join("|");
      if (c === "!") {
        // Whatever the alternatives (followed by the rest) do not match.
        const rest = globSource(glob.slice(close + 1));
        return `${re}(?:(?!(?:${alts})${rest}$).*?)${rest}`;
      }
      re += `(?:${alts})${c === "@" ? "" : c}`;
      i = close;
    } else if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      // "[!...]" negates; a "]" right after "[" or "[!" is a member.
      let j = i + 1;
      const negate = glob[j] === "!";
      if (negate) j++;
      const end = glob.indexOf("]", glob[j] === "]" ? j + 1 : j);
      if (end < 0) {
        re += "\\[";
        continue;
      }
      const body = glob.slice(j, end).replace(/[\\\]^]/g, "\\$&");
      re += `[${negate ? "^" : ""}${body}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return re;
}

/** Apply --set-env/--unset-env operations, in order, to env (mutated);
 * `note` hears each variable set, as ch-run -v says it. */
export function applyEnvOps(
  env: Env,
  ops: EnvOp[],
  expand: boolean,
  note: (line: string) => void = () => {},
): void {
  const set = (line: string, where: string) => {
    const [name, value] = parseEnvLine(line, where);
    const expanded = expand ? expandValue(value, env) : value;
    env.delete(name);
    env.set(name, expanded);
    note(`environment: ${name}=${expanded}`);
  };
  for (const op of ops) {
    switch (op.kind) {
      case "set":
        set(op.text, op.text);
        break;
      case "file": {
        const lines = op.text.split("\n");
        lines.forEach((line, i) => {
          if (line !== "") set(line, `${op.path}:${i + 1}`);
        });
        break;
      }
      case "unset": {
        const re = globToRegExp(op.glob);
        for (const name of [...env.keys()]) if (re.test(name)) env.delete(name);
        break;
      }
      default:
        op satisfies never;
    }
  }
}
