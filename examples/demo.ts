// den's main job end to end on a built-in default image: build a small
// image archive from the host's static busybox, unpack it with `den unpack`,
// and run commands in it with `den run`, as an unprivileged user.
//
//   deno task demo            (needs Debian's busybox-static)

import {
  asTestUser,
  buildBusyboxImage,
  denPlainArgv,
  MAIN,
  tempDir,
  testUserEnv,
} from "../tests/_helpers.ts";

function print(s: string) {
  Deno.stdout.writeSync(new TextEncoder().encode(s + "\n"));
}

async function step(title: string, argv: string[]): Promise<void> {
  print(`\n$ ${title}`);
  const [cmd, ...args] = argv;
  const { code } = await new Deno.Command(cmd!, {
    args,
    env: testUserEnv(),
    clearEnv: true,
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (code !== 0) {
    print(`demo: step failed with exit status ${code}`);
    Deno.exit(1);
  }
}

// As root, the demo runs den as an unprivileged user, as on a cluster, if
// that user can read this checkout (a clone under /root it cannot).
const unprivileged = Deno.uid() === 0 &&
  new Deno.Command(asTestUser(["test", "-r", MAIN])[0]!, {
    args: asTestUser(["test", "-r", MAIN]).slice(1),
  }).outputSync().success;
const denArgv = (args: string[]) =>
  unprivileged ? asTestUser(denPlainArgv(args)) : denPlainArgv(args);

await using work = tempDir("den-demo-");
const rootfs = buildBusyboxImage(`${work.path}/rootfs`);
const archive = `${work.path}/busybox.tar.gz`;
const tar = await new Deno.Command("tar", { args: ["-C", rootfs, "-czf", archive, "."] }).output();
if (!tar.success) throw new Error("tar failed");
Deno.chmodSync(archive, 0o644);
const image = `${work.path}/busybox`;
print(`demo: image archive ${archive} (a rootfs tarball of busybox-static)`);

await step(`den unpack ${archive} ${image}`, denArgv(["unpack", archive, image]));
await step(
  `den run ${image} -- sh -c 'echo hello from den; id; cat /etc/image-marker'`,
  denArgv(["run", image, "--", "sh", "-c", "echo hello from den; id; cat /etc/image-marker"]),
);
await step(
  `echo piped | den run --set-env=GREETING=hi ${image} -- sh -c 'echo $GREETING; cat'`,
  [
    "sh",
    "-c",
    `echo piped | ${
      denArgv(["run", "--set-env=GREETING=hi", image, "--", "sh", "-c", "echo $GREETING; cat"]).map(
        (a) => `'${a.replace(/'/g, `'\\''`)}'`,
      ).join(" ")
    }`,
  ],
);
print("\ndemo: ok");
