// `den login` and `den logout`: credentials for a registry in the containers
// auth.json that podman and skopeo read too. The password comes from stdin
// or a prompt without echo, never from the command line (ps shows that).
import { DenError, usageError } from "../error.ts";
import { booleanValue, countFlag, lastValue, parseArgv } from "./args.ts";
import { errRaw, info, out, output, verbose } from "./output.ts";
import { loginAuthFile, removeCredentials, storeCredentials } from "../image/registry/auth_file.ts";
import { registryCaCerts } from "../image/registry/certs.ts";
import { parseLoginTarget, verifyLogin } from "../image/registry/login.ts";

export const LOGIN_USAGE = `Usage: den login [OPTIONS] REGISTRY

Check a user name and password with REGISTRY ("ghcr.io", "localhost:5000")
and save them in the auth file podman and skopeo share: $REGISTRY_AUTH_FILE,
else $XDG_RUNTIME_DIR/containers/auth.json, else ~/.config/containers/auth.json
(mode 0600). Other entries in the file are kept.

Options:
  -u, --username USER     user name (asked for on a terminal if not given)
      --password-stdin    read the password (or token) from stdin; without
                          it, den asks on the terminal without echo
      --authfile FILE     the auth file to write
      --cert-dir DIR      trust the CA certificates (*.crt) in DIR too
      --tls-verify=false  don't check the registry's certificate
  -v, --verbose           say what den does
  -h, --help              print this help and exit
`;

export const LOGOUT_USAGE = `Usage: den logout [OPTIONS] REGISTRY

Remove the credentials for REGISTRY from the auth file den login writes.

Options:
      --authfile FILE     the auth file to change
  -h, --help              print this help and exit
`;

/** den login: returns the exit status or throws DenError. */
export async function loginCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    username: { short: "u", takes: "value" },
    "password-stdin": { takes: "flag" },
    authfile: { takes: "value" },
    "cert-dir": { takes: "value" },
    "tls-verify": { takes: "optional" },
    verbose: { short: "v", takes: "flag" },
    help: { short: "h", takes: "flag" },
  }, "den login --help");
  if (countFlag(parsed, "help")) {
    out(LOGIN_USAGE);
    return 0;
  }
  if (parsed.positionals.length !== 1) {
    throw usageError("login needs one REGISTRY", "see den login --help");
  }
  const tlsVerify = booleanValue(parsed, "tls-verify") ?? true;
  if (countFlag(parsed, "verbose")) output.verbosity = Math.max(output.verbosity, 1);
  const target = parseLoginTarget(parsed.positionals[0]!);
  const env = Deno.env.toObject();
  const file = lastValue(parsed, "authfile") ?? loginAuthFile(env);
  const tty = Deno.stdin.isTerminal();
  const passwordStdin = countFlag(parsed, "password-stdin") > 0;
  let username = lastValue(parsed, "username");
  let password: string;
  if (passwordStdin) {
    if (username === undefined) {
      throw usageError("--password-stdin needs --username", "see den login --help");
    }
    password = (await new Response(Deno.stdin.readable).text()).replace(/\r?\n$/, "");
  } else {
    if (!tty) {
      throw usageError(
        "no terminal to ask for the password on",
        "give it on stdin with --username USER --password-stdin",
      );
    }
    username ??= await prompt("Username: ", true);
    password = await prompt("Password: ", false);
  }
  if (!username) throw usageError("empty user name");
  if (!password) throw usageError("empty password");
  const caCerts = registryCaCerts(target.ref.registry, {
    certDir: lastValue(parsed, "cert-dir"),
    env,
  });
  try {
    await verifyLogin(target, {
      username,
      password,
      source: passwordStdin ? "stdin" : "the terminal",
    }, { tlsVerify, caCerts, log: (m) => verbose(m) });
  } catch (e) {
    throw new DenError("", `login ${target.key}`, {
      cause: e,
      exitCode: e instanceof DenError ? e.options.exitCode : undefined,
    });
  }
  storeCredentials(file, target.key, { username, password });
  info(`logged in to ${target.key} as ${JSON.stringify(username)}; saved in ${file}`);
  return 0;
}

/** den logout: returns the exit status or throws DenError. */
export function logoutCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    authfile: { takes: "value" },
    help: { short: "h", takes: "flag" },
  }, "den logout --help");
  if (countFlag(parsed, "help")) {
    out(LOGOUT_USAGE);
    return Promise.resolve(0);
  }
  if (parsed.positionals.length !== 1) {
    throw usageError("logout needs one REGISTRY", "see den logout --help");
  }
  const target = parseLoginTarget(parsed.positionals[0]!);
  const file = lastValue(parsed, "authfile") ?? loginAuthFile(Deno.env.toObject());
  if (!removeCredentials(file, target.key)) {
    throw new DenError("logout", `no credentials for ${target.key}`, { path: file });
  }
  info(`removed the credentials for ${target.key} from ${file}`);
  return Promise.resolve(0);
}

/** Read a line from the terminal; without echo for passwords (raw mode). */
async function prompt(question: string, echo: boolean): Promise<string> {
  errRaw(question);
  const bytes: number[] = [];
  const buf = new Uint8Array(64);
  const dec = new TextDecoder();
  Deno.stdin.setRaw(true);
  try {
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) break;
      for (const b of buf.subarray(0, n)) {
        if (b === 0x0d || b === 0x0a) return new TextDecoder().decode(new Uint8Array(bytes));
        if (b === 0x03) throw new DenError("login", "interrupted", { exitCode: 130 });
        if (b === 0x04 && bytes.length === 0) throw usageError("no answer on the terminal");
        if (b === 0x7f || b === 0x08) {
          if (bytes.length > 0) {
            bytes.pop();
            if (echo) errRaw("\b \b");
          }
          continue;
        }
        if (b === 0x15) { // ^U: kill the line
          if (echo) errRaw("\b \b".repeat(bytes.length));
          bytes.length = 0;
          continue;
        }
        bytes.push(b);
        if (echo) errRaw(dec.decode(new Uint8Array([b]), { stream: true }));
      }
    }
    return new TextDecoder().decode(new Uint8Array(bytes));
  } finally {
    Deno.stdin.setRaw(false);
    errRaw("\n");
  }
}
