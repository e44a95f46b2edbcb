// The page's script: Connect's gRPC-web transport on the browser's fetch,
// talking to the API on another origin (so CORS is exercised).
// Bundled by esbuild into dist/app.js.
//
// Two visits, as a person signs up: the first (`?api=…`) starts a sign-up
// for a new address; the second (`?api=…&token=…`, the link mailed to that
// address) finishes it, logs in, and manages an API key.

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { SessionService } from "../gen/twig/sessions/v1/sessions_pb.js";
import { ApiKeyService } from "../gen/twig/apikeys/v1/apikeys_pb.js";
import { Scope } from "../gen/twig/auth/v1/principal_pb.js";

const params = new URLSearchParams(location.search);
const api = params.get("api");
const linkToken = params.get("token");
const password = "a long enough password for a browser";
const transport = createGrpcWebTransport({ baseUrl: api, useBinaryFormat: true });
const sessions = createClient(SessionService, transport);
const keys = createClient(ApiKeyService, transport);

const show = (id, text) => {
  document.getElementById(id).textContent = text;
};

// The first visit: the sign-up form. The answer is the same for any
// address; the link goes by mail.
async function signUp() {
  const email = `browser-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;
  await sessions.signUp({ email, password, displayName: "Browser", organizationName: "Web" });
  show("email", email);
  return { step: "signed-up", email };
}

// The second visit, from the mailed link: the account is made, then used.
async function run() {
  const verified = await sessions.verifyEmail({ token: linkToken, password });
  const email = verified.user.email;
  const login = await sessions.login({ email, password });
  const headers = { Authorization: `Bearer ${login.tokens.accessToken}` };
  const created = await keys.createApiKey({ name: "made in a browser", scopes: [Scope.READ] }, { headers });
  const listed = await keys.listApiKeys({}, { headers });
  const list = document.getElementById("keys");
  for (const key of listed.keys) {
    const item = document.createElement("li");
    item.textContent = `${key.name} (${key.prefix}…)`;
    item.dataset.id = key.id;
    list.append(item);
  }
  // The HTTP/JSON routes from this origin: a PATCH and a DELETE, each
  // preflighted by the browser (JSON body, bearer header).
  const json = async (method, path, body) => {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: { ...headers, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  };
  const keyPath = `/v1/api-keys/${encodeURIComponent(created.key.id)}`;
  const renamed = await json("PATCH", keyPath, { name: "renamed in a browser" });
  const revoked = await json("DELETE", keyPath);
  const afterRevoke = await json("GET", keyPath);
  const http = {
    patch: { status: renamed.status, name: renamed.body.key?.name },
    delete: { status: revoked.status },
    revokedAt: afterRevoke.body.key?.revokedAt ?? null,
  };
  let badToken = null;
  try {
    await keys.listApiKeys({}, { headers: { Authorization: "Bearer twig_st_not-a-real-token" } });
  } catch (e) {
    const err = ConnectError.from(e);
    badToken = { code: Code[err.code], message: err.rawMessage };
    show("bad-token", `${badToken.code}: ${badToken.message}`);
  }
  return {
    step: "verified",
    email,
    organizationId: verified.organization.id,
    loginOrganizationId: login.organizationId,
    keyId: created.key.id,
    secret: created.secret,
    listedIds: listed.keys.map((k) => k.id),
    http,
    badToken,
  };
}

document.getElementById("run").addEventListener("click", async () => {
  try {
    show("status", "running");
    const result = linkToken ? await run() : await signUp();
    show("result", JSON.stringify(result));
    show("status", "done");
  } catch (e) {
    show("result", JSON.stringify({ error: String(e) }));
    show("status", "failed");
  }
});
