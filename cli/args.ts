// A GNU/argp-style argument parser: options may come after positionals,
// "--" ends options, "-abc" clusters short flags, "-bVAL"/"-b VAL" and
// "--bind=VAL"/"--bind VAL" give values, and an optional value is only
// taken with "=" (argp's OPTION_ARG_OPTIONAL). node:util's parseArgs would
// do most of it but costs 15 ms of start-up, and every den run pays it.

import { usageError } from "../error.ts";

export interface OptionSpec {
  short?: string;
  /** "flag" (no value), "value" (required), "optional" (only with =). */
  takes: "flag" | "value" | "optional";
}

export interface ParsedOption {
  name: string;
  value?: string;
}

export interface ParsedArgs {
  /** Options in command-line order (order matters for --set-env). */
  options: ParsedOption[];
  positionals: string[];
}

/** Parse args against a table of long option names. Throws usage errors. */
export function parseArgv(
  args: string[],
  spec: Record<string, OptionSpec>,
  help: string,
): ParsedArgs {
  const byShort = new Map<string, string>();
  for (const [name, s] of Object.entries(spec)) {
    if (s.short) byShort.set(s.short, name);
  }
  const options: ParsedOption[] = [];
  const positionals: string[] = [];
  const bad = (msg: string) => usageError(msg, `try '${help}'`);
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = arg.slice(2, eq < 0 ? undefined : eq);
      const s = Object.hasOwn(spec, name) ? spec[name] : undefined;
      if (!s) {
        throw bad(
          `unrecognized option '${arg.slice(0, eq < 0 ? undefined : eq)}'`,
        );
      }
      if (eq >= 0) {
        if (s.takes === "flag") {
          throw bad(`option '--${name}' doesn't allow an argument`);
        }
        options.push({ name, value: arg.slice(eq + 1) });
      } else if (s.takes === "value") {
        if (i + 1 >= args.length) {
          throw bad(`option '--${name}' requires an argument`);
        }
        options.push({ name, value: args[++i]! });
      } else options.push({ name });
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      for (let j = 1; j < arg.length; j++) {
        const c = arg[j]!;
        const name = byShort.get(c);
        if (!name) throw bad(`invalid option -- '${c}'`);
        const s = spec[name]!;
        if (s.takes === "flag") {
          options.push({ name });
          continue;
        }
        let value: string | undefined = arg.slice(j + 1);
        if (value === "") {
          if (s.takes === "optional") value = undefined;
          else if (i + 1 >= args.length) {
            throw bad(`option requires an argument -- '${c}'`);
          } else value = args[++i]!;
        }
        options.push({ name, value });
        break;
      }
      continue;
    }
    positionals.push(arg);
  }
  return { options, positionals };
}

/** Last value given for an option, if any. */
export function lastValue(
  parsed: ParsedArgs,
  name: string,
): string | undefined {
  let v: string | undefined;
  for (const o of parsed.options) if (o.name === name) v = o.value;
  return v;
}

/** Whether a flag was given; count for repeatable ones. */
export function countFlag(parsed: ParsedArgs, name: string): number {
  return parsed.options.filter((o) => o.name === name).length;
}

/**
 * An option with an optional true/false value, as podman's --tls-verify:
 * "--NAME" and "--NAME=true" give true, "--NAME=false" false, the last one
 * winning; undefined when absent. Any other value is a usage error.
 */
export function booleanValue(parsed: ParsedArgs, name: string): boolean | undefined {
  if (countFlag(parsed, name) === 0) return undefined;
  const v = lastValue(parsed, name);
  if (v === undefined || v === "true") return true;
  if (v === "false") return false;
  throw usageError(`--${name}: expected true or false, got "${v}"`);
}
