// A local OpenID Connect identity provider for the end-to-end tests: one
// process hosts several independent providers (oidc-provider 9.x, one
// `new Provider(issuer, conf)` each), each under its own path prefix on one
// HTTP server on 127.0.0.1, so one peer can play "the organisation's IdP",
// "Google" and "Microsoft" at once. Log-in is non-interactive.
//
// Usage:
//   node tests/node/oidc_idp.mjs --config <file.json>
//   node tests/node/oidc_idp.mjs --config -        (the JSON on stdin)
//
// When ready it prints exactly one line to stdout, then runs until killed
// (SIGTERM or SIGINT: exit 0). Everything else goes to stderr.
//   {"port":<n>,"base":"http://127.0.0.1:<n>","issuers":{"<name>":"<issuer URL>",...}}
//
// Config:
//   {
//     "port": 0,                     // optional; 0 or absent = any free port
//     "providers": [
//       {
//         "name": "acme",            // key in "issuers" and in the admin API
//         "path": "/acme",           // optional; default "/<name>"; may have
//                                    // several segments ("/ms/tenant-1/v2.0")
//                                    // issuer = "http://127.0.0.1:<port><path>"
//         "clients": [
//           {"client_id": "twig-acme",
//            "client_secret": "s3cret-at-least-32-characters-long!!",
//            "redirect_uris": ["http://127.0.0.1:5555/sso/oidc/callback"]}
//           // Any other client metadata is passed to oidc-provider as is.
//           // Defaults: response_types ["code"], grant_types
//           // ["authorization_code"], token_endpoint_auth_method
//           // "client_secret_basic" (client_secret_post is accepted too:
//           // oidc-provider treats the two as interchangeable).
//         ],
//         "users": [
//           {"sub": "u-alice", "email": "alice@acme.test", "email_verified": true,
//            "name": "Alice A", "groups": ["engineering", "admins"],
//            "claims": {"hd": "acme.test"}}   // optional, see below
//           // Also honoured: given_name, family_name, preferred_username,
//           // picture, locale (scope "profile"). Absent fields are left out.
//         ],
//         "extra_claims": {"tid": "tenant-1"},  // optional; in every ID token
//         "tenant_alias": {"path": "/ms/common/v2.0", "tenant": "<tid>"},
//                                    // optional: Microsoft's multi-tenant
//                                    // discovery, served at <path>/.well-known/
//                                    // openid-configuration: this provider's
//                                    // document with <tid> in its issuer
//                                    // replaced by "{tenantid}"
//         "claim_names": ["oid"]                // optional, see below
//       }
//     ]
//   }
//
// Scopes and claims (ID tokens carry them directly, conformIdTokenClaims
// false; the userinfo endpoint gives the same):
//   openid  -> sub, plus every provider "extra_claims" and user "claims" member
//   email   -> email, email_verified
//   profile -> name, given_name, family_name, preferred_username, picture, locale
//   groups  -> groups
// A user's "claims" override "extra_claims". oidc-provider only emits claim
// names it knows when the provider starts: the names in "extra_claims", in
// the config's users' "claims" and in "claim_names". A user added later
// through the admin API with other names gets those dropped (the admin
// answer lists them under "ignored_claims").
//
// Each provider: authorization code flow only (response_type "code"), PKCE
// required, S256 only; token endpoint auth client_secret_basic or
// client_secret_post; ID tokens RS256, signed with an RSA key generated at
// start (one per provider, in its JWKS); nonce echoed; no refresh tokens.
// The authorization response carries iss (RFC 9207) besides code and state.
// client_secret_basic follows RFC 6749 2.3.1: id and secret are
// form-urlencoded before base64, so a raw "+" in a secret reads as a space;
// keep secrets to [A-Za-z0-9!._~-] to stay clear of that.
// Standard oidc-provider routes under the issuer:
//   <issuer>/.well-known/openid-configuration, <issuer>/jwks,
//   <issuer>/auth, <issuer>/token, <issuer>/me (userinfo)
// plus the interaction route of this peer, <issuer>/interaction/<uid>.
//
// Log-in: <issuer>/auth answers 303 to <issuer>/interaction/<uid>, which logs
// in a user and grants every requested scope at once, then 303 to
// <issuer>/auth/<uid>, which answers 303 to the client's redirect_uri with
// code and state. The user is the one the authorization request's login_hint
// names (its email, case-insensitive, or its sub); without login_hint, the
// provider's first user. A login_hint naming no user (or no user at all)
// ends at the redirect_uri with error=access_denied. prompt=select_account,
// login and consent are accepted (and have no effect); prompt=none fails with
// login_required.
// Every authorization request logs in afresh: the peer ignores oidc-provider's
// session cookie, so the same browser or cookie jar can log in as another
// user next time. Cookies are optional: the peer supplies the interaction
// cookies from the <uid> in the path, so a client that follows the redirects
// without a cookie jar works too (one that honours cookie Path works as well).
//
// Admin API (plain JSON over HTTP, outside every provider path):
//   GET  /_admin/health                   -> 200 {"ok":true}
//   POST /_admin/clients  {"provider":"acme","client_id":"...","client_secret":"...",
//                          "redirect_uris":["..."], ...more metadata}
//                                         -> 200 {"ok":true,...}; adds or replaces
//   POST /_admin/users    {"provider":"acme","user":{"sub":"...",...}}
//                                         -> 200 {"ok":true,...}; adds or replaces (by sub)
//   Errors: 400 (bad JSON, invalid client metadata, missing sub),
//           404 (unknown provider or route), with {"error":"...","error_description":"..."}.
//
// oidc-provider 9.x wants Node 22+ and says so on stderr; it works on Node 20.

import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";

// oidc-provider writes its notices with console.info: keep stdout for the
// ready line alone. (Hence the dynamic import below, after this.)
for (const method of ["log", "info", "debug"]) {
  console[method] = (...args) => console.error(...args);
}
const { default: Provider, interactionPolicy } = await import("oidc-provider");

const HOST = "127.0.0.1";
const COOKIE_NAMES = {
  session: "_idp_session",
  interaction: "_idp_interaction",
  resume: "_idp_interaction_resume",
};
const STANDARD_CLAIMS = {
  email: ["email", "email_verified"],
  profile: ["name", "given_name", "family_name", "preferred_username", "picture", "locale"],
  groups: ["groups"],
};
const STANDARD_USER_FIELDS = new Set(["sub", "claims", ...Object.values(STANDARD_CLAIMS).flat()]);

function log(...args) {
  console.error("[oidc_idp]", ...args);
}

function fail(message) {
  console.error(`oidc_idp: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------- config

async function readConfig() {
  const args = process.argv.slice(2);
  const i = args.indexOf("--config");
  if (i === -1 || args[i + 1] === undefined) {
    fail("usage: node oidc_idp.mjs --config <file.json | ->");
  }
  const source = args[i + 1];
  let text;
  if (source === "-") {
    const chunks = [];
    for await (const chunk of process.stdin) chunks.push(chunk);
    text = Buffer.concat(chunks).toString("utf8");
  } else {
    text = fs.readFileSync(source, "utf8");
  }
  let config;
  try {
    config = JSON.parse(text);
  } catch (err) {
    fail(`config is not JSON: ${err.message}`);
  }
  if (!config || typeof config !== "object" || !Array.isArray(config.providers) || !config.providers.length) {
    fail('config needs a non-empty "providers" array');
  }
  const port = config.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${JSON.stringify(config.port)}`);
  const names = new Set();
  const paths = new Set();
  for (const p of config.providers) {
    if (typeof p?.name !== "string" || !/^[A-Za-z0-9._-]+$/.test(p.name)) {
      fail(`provider name must match [A-Za-z0-9._-]+, got ${JSON.stringify(p?.name)}`);
    }
    if (names.has(p.name)) fail(`duplicate provider name ${p.name}`);
    names.add(p.name);
    const path = p.path ?? `/${p.name}`;
    if (typeof path !== "string" || !/^(\/[A-Za-z0-9._~-]+)+$/.test(path) || path.startsWith("/_admin")) {
      fail(`provider ${p.name}: bad path ${JSON.stringify(path)} (want /seg[/seg...], not /_admin)`);
    }
    if (paths.has(path)) fail(`duplicate provider path ${path}`);
    paths.add(path);
    for (const key of ["clients", "users", "claim_names"]) {
      if (p[key] !== undefined && !Array.isArray(p[key])) fail(`provider ${p.name}: "${key}" must be an array`);
    }
    if (p.extra_claims !== undefined && (typeof p.extra_claims !== "object" || Array.isArray(p.extra_claims))) {
      fail(`provider ${p.name}: "extra_claims" must be an object`);
    }
  }
  return { port, providers: config.providers };
}

// ---------------------------------------------------------------- storage

// In-memory oidc-provider adapter. One store per provider; the "Client"
// model reads the provider's client registry, so clients can be added or
// replaced at run time (oidc-provider caches clients by their metadata's
// hash, so a replaced client takes effect at once).
function makeAdapterFactory(state) {
  const store = new Map(); // key "Model:id" -> { payload, expiresAt }
  const grantKeys = new Map(); // grantId -> Set of keys
  const byUid = new Map(); // "Model:uid" -> key
  const byUserCode = new Map(); // "Model:userCode" -> key

  const now = () => Math.floor(Date.now() / 1000);
  const live = (key) => {
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= now()) {
      store.delete(key);
      return undefined;
    }
    return entry;
  };

  const sweep = setInterval(() => {
    for (const key of store.keys()) live(key);
  }, 60_000);
  sweep.unref();

  return (name) => {
    if (name === "Client") {
      return {
        async find(id) {
          const client = state.clients.get(id);
          return client ? structuredClone(client) : undefined;
        },
        async upsert() {},
        async destroy() {},
        async consume() {},
        async findByUid() {},
        async findByUserCode() {},
        async revokeByGrantId() {},
      };
    }
    const k = (id) => `${name}:${id}`;
    return {
      async upsert(id, payload, expiresIn) {
        const key = k(id);
        store.set(key, {
          payload: structuredClone(payload),
          expiresAt: expiresIn ? now() + expiresIn : undefined,
        });
        if (payload.grantId) {
          if (!grantKeys.has(payload.grantId)) grantKeys.set(payload.grantId, new Set());
          grantKeys.get(payload.grantId).add(key);
        }
        if (payload.uid) byUid.set(k(payload.uid), key);
        if (payload.userCode) byUserCode.set(k(payload.userCode), key);
      },
      async find(id) {
        const entry = live(k(id));
        return entry ? structuredClone(entry.payload) : undefined;
      },
      async findByUid(uid) {
        const key = byUid.get(k(uid));
        const entry = key && live(key);
        return entry ? structuredClone(entry.payload) : undefined;
      },
      async findByUserCode(userCode) {
        const key = byUserCode.get(k(userCode));
        const entry = key && live(key);
        return entry ? structuredClone(entry.payload) : undefined;
      },
      async consume(id) {
        const entry = live(k(id));
        if (entry) entry.payload.consumed = now();
      },
      async destroy(id) {
        store.delete(k(id));
      },
      async revokeByGrantId(grantId) {
        for (const key of grantKeys.get(grantId) ?? []) store.delete(key);
        grantKeys.delete(grantId);
      },
    };
  };
}

// ---------------------------------------------------------------- providers

function clientMetadata(input) {
  if (!input || typeof input !== "object") throw new Error("client must be an object");
  const { provider: _ignored, ...metadata } = input;
  return {
    response_types: ["code"],
    grant_types: ["authorization_code"],
    token_endpoint_auth_method: "client_secret_basic",
    ...metadata,
  };
}

function findUser(state, hint) {
  if (hint === undefined || hint === null || hint === "") return state.users[0];
  const lower = String(hint).toLowerCase();
  return (
    state.users.find((u) => u.sub === hint) ??
    state.users.find((u) => typeof u.email === "string" && u.email.toLowerCase() === lower)
  );
}

function userClaims(state, user) {
  const claims = { ...state.extraClaims, sub: user.sub };
  for (const [key, value] of Object.entries(user)) {
    if (key !== "claims" && key !== "sub" && STANDARD_USER_FIELDS.has(key) && value !== undefined && value !== null) {
      claims[key] = value;
    }
  }
  Object.assign(claims, user.claims ?? {});
  claims.sub = user.sub;
  return claims;
}

function addUser(state, user) {
  if (!user || typeof user !== "object" || typeof user.sub !== "string" || !user.sub) {
    throw new Error('user needs a non-empty string "sub"');
  }
  if (user.claims !== undefined && (typeof user.claims !== "object" || Array.isArray(user.claims))) {
    throw new Error('user "claims" must be an object');
  }
  const copy = structuredClone(user);
  const i = state.users.findIndex((u) => u.sub === copy.sub);
  if (i === -1) state.users.push(copy);
  else state.users[i] = copy;
  const standard = new Set(Object.values(STANDARD_CLAIMS).flat());
  const ignored = Object.keys(copy.claims ?? {}).filter(
    (name) => name !== "sub" && !standard.has(name) && !state.knownExtraClaims.has(name),
  );
  const unknownFields = Object.keys(copy).filter((name) => !STANDARD_USER_FIELDS.has(name));
  if (ignored.length) log(`${state.name}: user ${copy.sub}: claims not emitted (unknown at start): ${ignored.join(", ")}`);
  if (unknownFields.length) {
    log(`${state.name}: user ${copy.sub}: fields ignored (put extra claims under "claims"): ${unknownFields.join(", ")}`);
  }
  return { ignored_claims: ignored, ignored_fields: unknownFields };
}

function signingKey(name) {
  const { privateKey } = crypto.generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = privateKey.export({ format: "jwk" });
  return { ...jwk, kid: `${name}-${crypto.randomBytes(6).toString("hex")}`, alg: "RS256", use: "sig" };
}

function policy() {
  const p = interactionPolicy.base();
  // Accepted (Google-style relying parties send it) and resolved together
  // with login and consent by the interaction route.
  p.add(new interactionPolicy.Prompt({ name: "select_account", requestable: true }));
  return p;
}

async function makeProvider(spec, issuer) {
  const state = {
    spec,
    name: spec.name,
    path: spec.path ?? `/${spec.name}`,
    issuer,
    clients: new Map(),
    users: [],
    extraClaims: structuredClone(spec.extra_claims ?? {}),
    knownExtraClaims: new Set(),
  };
  for (const name of Object.keys(state.extraClaims)) state.knownExtraClaims.add(name);
  for (const name of spec.claim_names ?? []) state.knownExtraClaims.add(String(name));
  for (const user of spec.users ?? []) {
    for (const name of Object.keys(user?.claims ?? {})) state.knownExtraClaims.add(name);
  }
  for (const name of Object.values(STANDARD_CLAIMS).flat()) state.knownExtraClaims.delete(name);
  state.knownExtraClaims.delete("sub");

  const provider = new Provider(issuer, {
    adapter: makeAdapterFactory(state),
    jwks: { keys: [signingKey(spec.name)] },
    responseTypes: ["code"],
    pkce: { required: () => true }, // 9.x knows only S256
    clientAuthMethods: ["client_secret_basic", "client_secret_post"],
    clientDefaults: {
      grant_types: ["authorization_code"],
      response_types: ["code"],
      id_token_signed_response_alg: "RS256",
      token_endpoint_auth_method: "client_secret_basic",
    },
    claims: {
      openid: ["sub", ...state.knownExtraClaims],
      ...STANDARD_CLAIMS,
    },
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: false },
    },
    interactions: {
      policy: policy(),
      url: (_ctx, interaction) => `${issuer}/interaction/${interaction.uid}`,
    },
    async findAccount(_ctx, sub) {
      const user = state.users.find((u) => u.sub === sub);
      if (!user) return undefined;
      return {
        accountId: sub,
        async claims() {
          // Look the user up again: the admin API may have replaced it.
          return userClaims(state, state.users.find((u) => u.sub === sub) ?? user);
        },
      };
    },
    // Own cookie names, and the session cookie scoped to the provider's
    // path: a browser sends 127.0.0.1 cookies to every port, relying party
    // included, and oidc-provider's default session cookie has Path=/.
    cookies: {
      names: COOKIE_NAMES,
      long: { httpOnly: true, sameSite: "lax", path: state.path },
      short: { httpOnly: true, sameSite: "lax" },
    },
    clientBasedCORS: () => true,
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 600,
      Grant: 600,
    },
    async renderError(ctx, out, error) {
      log(`${spec.name}: error page:`, JSON.stringify(out), error?.message ?? "");
      ctx.type = "json";
      ctx.body = out;
    },
  });

  provider.on("server_error", (_ctx, err) => log(`${spec.name}: server_error:`, err));
  for (const event of ["authorization.error", "grant.error", "userinfo.error"]) {
    provider.on(event, (_ctx, err) => log(`${spec.name}: ${event}: ${err.error ?? ""} ${err.error_description ?? err.message}`));
  }

  state.provider = provider;
  state.handler = provider.callback();

  for (const client of spec.clients ?? []) await addClient(state, client);
  for (const user of spec.users ?? []) addUser(state, user);
  return state;
}

async function addClient(state, input) {
  const metadata = clientMetadata(input);
  if (typeof metadata.client_id !== "string" || !metadata.client_id) {
    throw new Error('client needs a non-empty string "client_id"');
  }
  await state.provider.Client.validate(metadata); // throws InvalidClientMetadata
  state.clients.set(metadata.client_id, metadata);
}

// ---------------------------------------------------------------- HTTP

// Rewrites the Cookie header of a request to a provider: oidc-provider's
// session cookie is dropped (each authorization request logs in afresh), and
// the interaction cookies are set from the <uid> in the path.
function rewriteCookies(req, set) {
  const kept = (req.headers.cookie ?? "")
    .split(";")
    .map((c) => c.trim())
    .filter((c) => {
      if (!c) return false;
      const eq = c.indexOf("=");
      const name = (eq === -1 ? c : c.slice(0, eq)).replace(/\.sig$/, "");
      return name !== COOKIE_NAMES.session && name !== set?.[0];
    });
  if (set) kept.push(`${set[0]}=${set[1]}`);
  if (kept.length) req.headers.cookie = kept.join("; ");
  else delete req.headers.cookie;
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text);
  } catch (err) {
    const e = new Error(`body is not JSON: ${err.message}`);
    e.status = 400;
    throw e;
  }
}

async function handleInteraction(state, uid, req, res) {
  const { provider } = state;
  rewriteCookies(req, [COOKIE_NAMES.interaction, uid]);
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    log(`${state.name}: interaction ${uid}: ${err.error_description ?? err.message}`);
    sendJson(res, 400, { error: err.error ?? "invalid_request", error_description: err.error_description ?? err.message });
    return;
  }
  const { params } = details;
  const user = findUser(state, params.login_hint);
  if (!user) {
    const why = params.login_hint === undefined
      ? "the identity provider has no users"
      : `no user matches login_hint ${JSON.stringify(params.login_hint)}`;
    log(`${state.name}: interaction ${uid}: access_denied: ${why}`);
    await provider.interactionFinished(
      req,
      res,
      { error: "access_denied", error_description: why },
      { mergeWithLastSubmission: false },
    );
    return;
  }

  const grant = new provider.Grant({ accountId: user.sub, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  if (params.claims) {
    try {
      const requested = JSON.parse(params.claims);
      const names = [...Object.keys(requested.id_token ?? {}), ...Object.keys(requested.userinfo ?? {})];
      if (names.length) grant.addOIDCClaims(names);
    } catch {
      // oidc-provider has rejected a malformed claims parameter already
    }
  }
  const grantId = await grant.save();
  log(`${state.name}: interaction ${uid}: log in ${user.sub} for ${params.client_id}, scope "${params.scope ?? ""}"`);
  await provider.interactionFinished(
    req,
    res,
    {
      login: { accountId: user.sub, remember: false },
      consent: { grantId },
      select_account: {},
    },
    { mergeWithLastSubmission: false },
  );
}

async function handleAdmin(providers, path, req, res) {
  if (path === "/_admin/health" && (req.method === "GET" || req.method === "HEAD")) {
    sendJson(res, 200, { ok: true });
    return;
  }
  if (req.method !== "POST" || (path !== "/_admin/clients" && path !== "/_admin/users")) {
    sendJson(res, 404, { error: "not_found", error_description: `no admin route ${req.method} ${path}` });
    return;
  }
  const body = await readJson(req);
  const state = providers.find((p) => p.name === body?.provider);
  if (!state) {
    sendJson(res, 404, { error: "unknown_provider", error_description: `no provider named ${JSON.stringify(body?.provider)}` });
    return;
  }
  try {
    if (path === "/_admin/clients") {
      await addClient(state, body);
      log(`${state.name}: admin: client ${body.client_id} set`);
      sendJson(res, 200, { ok: true, provider: state.name, client_id: body.client_id });
    } else {
      const notes = addUser(state, body.user);
      log(`${state.name}: admin: user ${body.user.sub} set`);
      sendJson(res, 200, { ok: true, provider: state.name, sub: body.user.sub, ...notes });
    }
  } catch (err) {
    sendJson(res, 400, { error: err.error ?? "invalid_request", error_description: err.error_description ?? err.message });
  }
}

const config = await readConfig();
let byPath; // set once every provider is up; until then requests get 503
const providers = [];
const server = http.createServer((req, res) => {
  if (!byPath) sendJson(res, 503, { error: "temporarily_unavailable", error_description: "starting" });
  else dispatch(req, res);
});
await new Promise((resolve) => {
  server.once("error", (err) => fail(`cannot listen on ${HOST}:${config.port}: ${err.message}`));
  server.listen(config.port, HOST, resolve);
});
const { port } = server.address();
const base = `http://${HOST}:${port}`;

for (const spec of config.providers) {
  try {
    providers.push(await makeProvider(spec, `${base}${spec.path ?? `/${spec.name}`}`));
  } catch (err) {
    fail(`provider ${spec.name}: ${err.message}`);
  }
}
// Longest path first, so "/a/b" wins over "/a".
byPath = [...providers].sort((a, b) => b.path.length - a.path.length);

async function dispatch(req, res) {
  const url = req.url ?? "/";
  const q = url.indexOf("?");
  const path = q === -1 ? url : url.slice(0, q);
  try {
    if (path === "/_admin" || path.startsWith("/_admin/")) {
      await handleAdmin(providers, path, req, res);
      return;
    }
    // Microsoft's multi-tenant discovery: at a path of its own, the
    // document of a tenant's provider with the issuer as a template
    // ("…/{tenantid}/v2.0"); tokens still come from the tenant's issuer.
    const aliased = providers.find(
      (p) => p.spec.tenant_alias && path === `${p.spec.tenant_alias.path}/.well-known/openid-configuration`,
    );
    if (aliased) {
      const own = await fetch(`${aliased.issuer}/.well-known/openid-configuration`);
      const doc = await own.json();
      doc.issuer = aliased.issuer.replace(aliased.spec.tenant_alias.tenant, "{tenantid}");
      sendJson(res, 200, doc);
      return;
    }
    const state = byPath.find((p) => path === p.path || path.startsWith(`${p.path}/`));
    if (!state) {
      sendJson(res, 404, { error: "not_found", error_description: `no provider at ${path}` });
      return;
    }
    const rest = url.slice(state.path.length) || "/";
    const restPath = path.slice(state.path.length);
    const interaction = /^\/interaction\/([^/]+)$/.exec(restPath);
    if (interaction) {
      await handleInteraction(state, decodeURIComponent(interaction[1]), req, res);
      return;
    }
    const resume = /^\/auth\/([^/]+)$/.exec(restPath);
    rewriteCookies(req, resume ? [COOKIE_NAMES.resume, decodeURIComponent(resume[1])] : undefined);
    // Mount the provider (a Koa app) under its path: oidc-provider derives
    // its mount path from req.originalUrl minus req.url.
    req.originalUrl = url;
    req.url = rest.startsWith("/") ? rest : `/${rest}`;
    state.handler(req, res);
  } catch (err) {
    log(`${req.method} ${url}:`, err);
    if (!res.headersSent) {
      sendJson(res, err.status ?? 500, { error: err.status === 400 ? "invalid_request" : "server_error", error_description: err.message });
    } else {
      res.end();
    }
  }
}

function shutdown(signal) {
  log(`${signal}: shutting down`);
  server.close();
  server.closeAllConnections?.();
  process.exit(0);
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));

const issuers = Object.fromEntries(providers.map((p) => [p.name, p.issuer]));
log(`listening on ${base}; issuers ${JSON.stringify(issuers)}`);
process.stdout.write(`${JSON.stringify({ port, base, issuers })}\n`);
