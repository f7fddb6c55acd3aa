import { deepStrictEqual, rejects, strictEqual } from "node:assert/strict";
import {
  authFilePaths,
  basicAuthorization,
  findCredentials,
  normalizeAuthKey,
  parseChallenges,
} from "./auth.ts";

Deno.test("parseChallenges() reads Bearer and Basic challenges with quoted parameters", () => {
  const table: [string, ReturnType<typeof parseChallenges>][] = [
    [
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
      [{
        scheme: "bearer",
        params: {
          realm: "https://auth.docker.io/token",
          service: "registry.docker.io",
          scope: "repository:library/alpine:pull",
        },
      }],
    ],
    ['Basic realm="den-test"', [{ scheme: "basic", params: { realm: "den-test" } }]],
    [
      'Basic realm="a, b", Bearer realm="https://t/x",  Service=reg , scope="repository:a/b:pull,push"',
      [
        { scheme: "basic", params: { realm: "a, b" } },
        {
          scheme: "bearer",
          params: { realm: "https://t/x", service: "reg", scope: "repository:a/b:pull,push" },
        },
      ],
    ],
    ['Bearer realm="q\\"uote"', [{ scheme: "bearer", params: { realm: 'q"uote' } }]],
    ["", []],
    ["Negotiate", [{ scheme: "negotiate", params: {} }]],
  ];
  for (const [header, want] of table) deepStrictEqual(parseChallenges(header), want, header);
});

Deno.test("normalizeAuthKey() maps docker's Hub keys and URLs to registry names", () => {
  strictEqual(normalizeAuthKey("https://index.docker.io/v1/"), "docker.io");
  strictEqual(normalizeAuthKey("registry-1.docker.io"), "docker.io");
  strictEqual(normalizeAuthKey("http://localhost:5000/"), "localhost:5000");
  strictEqual(normalizeAuthKey("quay.io/org/repo"), "quay.io/org/repo");
});

Deno.test("await findCredentials() reads auth files in order, most specific key first", async () => {
  const dir = Deno.makeTempDirSync();
  try {
    const b64 = (s: string) => btoa(s);
    Deno.mkdirSync(`${dir}/home/.config/containers`, { recursive: true });
    Deno.mkdirSync(`${dir}/home/.docker`, { recursive: true });
    Deno.writeTextFileSync(
      `${dir}/home/.config/containers/auth.json`,
      JSON.stringify({
        auths: {
          "quay.io": { auth: b64("org:wide") },
          "quay.io/team/app": { auth: b64("team:pa:ss") },
        },
      }),
    );
    Deno.writeTextFileSync(
      `${dir}/home/.docker/config.json`,
      JSON.stringify({
        auths: { "https://index.docker.io/v1/": { auth: b64("hub:pw") } },
      }),
    );
    const env = { HOME: `${dir}/home` };
    deepStrictEqual(await findCredentials("quay.io", "team/app", env), {
      username: "team",
      password: "pa:ss",
      source: `${dir}/home/.config/containers/auth.json`,
    });
    strictEqual((await findCredentials("quay.io", "other/app", env))?.username, "org");
    deepStrictEqual(await findCredentials("docker.io", "library/alpine", env), {
      username: "hub",
      password: "pw",
      source: `${dir}/home/.docker/config.json`,
    });
    strictEqual(await findCredentials("ghcr.io", "x", env), undefined);
    // $REGISTRY_AUTH_FILE comes first.
    Deno.writeTextFileSync(
      `${dir}/first.json`,
      JSON.stringify({ auths: { "docker.io": { auth: b64("first:x") } } }),
    );
    strictEqual(
      (await findCredentials("docker.io", "a/b", {
        ...env,
        REGISTRY_AUTH_FILE: `${dir}/first.json`,
      }))
        ?.username,
      "first",
    );
    deepStrictEqual(
      authFilePaths({ REGISTRY_AUTH_FILE: "/a", XDG_RUNTIME_DIR: "/run/u", HOME: "/h" }),
      [
        "/a",
        "/run/u/containers/auth.json",
        "/h/.config/containers/auth.json",
        "/h/.docker/config.json",
      ],
    );
    // A malformed file is an error naming it; the secret is not in the message.
    Deno.writeTextFileSync(`${dir}/bad.json`, "{ nope");
    await rejects(
      () => findCredentials("docker.io", "a/b", { REGISTRY_AUTH_FILE: `${dir}/bad.json` }),
      { message: `read credentials ${dir}/bad.json: invalid JSON` },
    );
    Deno.writeTextFileSync(
      `${dir}/nocolon.json`,
      JSON.stringify({ auths: { "docker.io": { auth: b64("s3cret") } } }),
    );
    await rejects(
      () => findCredentials("docker.io", "a/b", { REGISTRY_AUTH_FILE: `${dir}/nocolon.json` }),
      (e: Error) => !e.message.includes("s3cret") && e.message.includes("nocolon.json"),
    );
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("basicAuthorization() encodes user:password as UTF-8 base64", () => {
  strictEqual(
    basicAuthorization({ username: "ada", password: "pä:ss", source: "" }),
    `Basic ${btoa("ada:p\xc3\xa4:ss")}`,
  );
});
