// Entry point of den (and of `deno compile`): the one catch-all and the one exit.

import { DenError, describeError, EXIT_FAILURE, usageError } from "../error.ts";
import { error, out } from "./output.ts";

import { VERSION } from "./version.ts";
import { lazy } from "./lazy.ts";
import { runCommand } from "./run.ts";

const USAGE = `Usage: den COMMAND [OPTION...] [ARG...]

Unprivileged containers for HPC: Docker/OCI image archives in, ch-run out.

Commands:
  run IMAGE -- CMD [ARG...]   run a command in an image (a drop-in for ch-run)
  unpack ARCHIVE DEST         unpack a docker/podman/OCI archive or a rootfs tarball
                              (DEST.sqfs or --squashfs: one SquashFS file)
  pull REF [DEST]             pull an image from an OCI/Docker registry
  convert SRC DEST            an image directory to a SquashFS file, or back
  login REGISTRY              check and save credentials for a registry
  logout REGISTRY             remove saved credentials for a registry
  inspect IMAGE               print an image's configuration (--json)
  images                      list images in storage (--json)
  rm NAME                     delete an image from storage (--gc: then gc)
  gc                          remove cached blobs no stored image refers to
  doctor                      check this node for what den needs (--json)

Run 'den COMMAND --help' for a command's options.
  -h, --help       give this help list
  -V, --version    print version and exit

Exit status: 0 success; a command's own status or 128+N after signal N
(den run); 31 den failed; 49 the command could not be started; 64 usage.
`;

async function main(args: string[]): Promise<number> {
  // `deno task den -- ARGS` passes its "--" on; before the verb it means nothing.
  const [verb, ...rest] = args[0] === "--" ? args.slice(1) : args;
  switch (verb) {
    case "run":
      return await runCommand(rest);
    case "doctor": {
      const { doctorCommand } = await lazy<typeof import("./doctor.ts")>("./doctor.ts");
      return await doctorCommand(rest);
    }
    case "pull": {
      const { pullCommand } = await lazy<typeof import("./pull.ts")>("./pull.ts");
      return await pullCommand(rest);
    }
    case "gc": {
      const { gcCommand } = await lazy<typeof import("./gc.ts")>("./gc.ts");
      return await gcCommand(rest);
    }
    case "convert": {
      const { convertCommand } = await lazy<typeof import("./convert.ts")>("./convert.ts");
      return await convertCommand(rest);
    }
    case "login":
    case "logout": {
      const { loginCommand, logoutCommand } = await lazy<typeof import("./login.ts")>("./login.ts");
      return await (verb === "login" ? loginCommand : logoutCommand)(rest);
    }
    case "unpack": {
      const squash = await lazy<typeof import("./squash.ts")>("./squash.ts");
      if (squash.wantsSquash(rest)) return await squash.unpackSquashCommand(rest);
    }
    // falls through: a directory
    case "inspect":
    case "images":
    case "rm": {
      const image = await lazy<typeof import("./image.ts")>("./image.ts");
      const fn = {
        unpack: image.unpackCommand,
        inspect: image.inspectCommand,
        images: image.imagesCommand,
        rm: image.rmCommand,
      }[verb];
      return await fn(rest);
    }
    case "-h":
    case "--help":
    case "help":
      out(USAGE);
      return 0;
    case "-V":
    case "--version":
    case "version":
      out(VERSION);
      return 0;
    case undefined:
      throw usageError("no command given", "try 'den --help'");
    default:
      throw usageError(
        `unknown command: ${JSON.stringify(verb)}`,
        "try 'den --help'",
      );
  }
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (e) {
    error(e);
    code = e instanceof DenError ? e.exitCode : EXIT_FAILURE;
    if (!(e instanceof DenError) && Deno.env.get("DEN_DEBUG")) {
      error(describeError((e as Error).stack));
    }
  }
  Deno.exit(code);
}
