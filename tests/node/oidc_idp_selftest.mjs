// Self-check of oidc_idp.mjs: starts the peer with a temporary config and
// walks the flows the Rust end-to-end tests rely on, with node's fetch only
// (redirects followed by hand, a small cookie jar honouring Domain-less
// host cookies and Path).
//
// Usage: node tests/node/oidc_idp_selftest.mjs
// Exit 0 when every check passes, 1 otherwise (the failures are printed).

import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const SECRET = "s3cret-at-least-32-characters-long!!";
const REDIRECT = "http://127.0.0.1:5555/sso/oidc/callback";
const failures = [];
let passed = 0;

function check(name, ok, detail = "") {
  if (ok) {
    passed += 1;
    console.log(`ok   ${name}`);
  } else {
    failures.push(`${name}${detail ? `: ${detail}` : ""}`);
    console.log(`FAIL ${name}${detail ? `: ${detail}` : ""}`);
  }
}

function eq(name, actual, expected) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  check(name, a === e, `got ${a}, want ${e}`);
}

// ---------------------------------------------------------------- cookie jar

class CookieJar {
  #cookies = []; // { name, value, host, path, expires }

  store(url, response) {
    const u = new URL(url);
    for (const header of response.headers.getSetCookie()) {
      const [pair, ...attrs] = header.split(";").map((s) => s.trim());
      const eqAt = pair.indexOf("=");
      const name = pair.slice(0, eqAt);
      const value = pair.slice(eqAt + 1);
      let cpath;
      let expires;
      for (const attr of attrs) {
        const [k, ...v] = attr.split("=");
        const key = k.toLowerCase();
        const val = v.join("=");
        if (key === "path" && val.startsWith("/")) cpath = val;
        if (key === "expires") expires = Date.parse(val);
        if (key === "max-age") expires = Date.now() + Number(val) * 1000;
      }
      if (!cpath) {
        // RFC 6265 5.1.4 default-path
        const slash = u.pathname.lastIndexOf("/");
        cpath = slash <= 0 ? "/" : u.pathname.slice(0, slash);
      }
      this.#cookies = this.#cookies.filter((c) => !(c.name === name && c.host === u.host && c.path === cpath));
      if (expires === undefined || expires > Date.now()) {
        this.#cookies.push({ name, value, host: u.host, path: cpath, expires });
      }
    }
  }

  header(url) {
    const u = new URL(url);
    const pathMatch = (cp) =>
      u.pathname === cp || (u.pathname.startsWith(cp) && (cp.endsWith("/") || u.pathname[cp.length] === "/"));
    const now = Date.now();
    const matching = this.#cookies
      .filter((c) => c.host === u.host && pathMatch(c.path) && (c.expires === undefined || c.expires > now))
      .sort((a, b) => b.path.length - a.path.length);
    return matching.length ? matching.map((c) => `${c.name}=${c.value}`).join("; ") : undefined;
  }

  names() {
    return this.#cookies.map((c) => `${c.name}@${c.path}`);
  }
}

// ---------------------------------------------------------------- helpers

const b64url = (buf) => Buffer.from(buf).toString("base64url");
const formEncode = (s) => new URLSearchParams({ x: s }).toString().slice(2);

function pkce() {
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = crypto.createHash("sha256").update(verifier).digest("base64url");
  return { verifier, challenge };
}

// GET url, then follow Location headers by hand (carrying the jar's cookies)
// until a URL starting with stopAt. Returns { url, hops }.
async function follow(url, { jar, stopAt, maxHops = 10 }) {
  const hops = [];
  let current = url;
  for (let i = 0; i < maxHops; i += 1) {
    if (current.startsWith(stopAt)) return { url: new URL(current), hops };
    const headers = {};
    const cookie = jar?.header(current);
    if (cookie) headers.cookie = cookie;
    const res = await fetch(current, { redirect: "manual", headers });
    jar?.store(current, res);
    hops.push(`${res.status} ${new URL(current).pathname}`);
    const location = res.headers.get("location");
    if (res.status < 300 || res.status >= 400 || !location) {
      const body = await res.text();
      throw new Error(`stopped at ${res.status} ${current}: ${body.slice(0, 300)}`);
    }
    await res.arrayBuffer().catch(() => {});
    current = new URL(location, current).href;
  }
  throw new Error(`more than ${maxHops} redirects (${hops.join(" -> ")})`);
}

async function authorize(disco, { clientId, redirectUri = REDIRECT, loginHint, jar, scope = "openid email profile groups", withPkce = true, extra = {} }) {
  const state = b64url(crypto.randomBytes(12));
  const nonce = b64url(crypto.randomBytes(12));
  const { verifier, challenge } = pkce();
  const u = new URL(disco.authorization_endpoint);
  u.searchParams.set("response_type", "code");
  u.searchParams.set("client_id", clientId);
  u.searchParams.set("redirect_uri", redirectUri);
  u.searchParams.set("scope", scope);
  u.searchParams.set("state", state);
  u.searchParams.set("nonce", nonce);
  if (withPkce) {
    u.searchParams.set("code_challenge", challenge);
    u.searchParams.set("code_challenge_method", "S256");
  }
  if (loginHint !== undefined) u.searchParams.set("login_hint", loginHint);
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v);
  const { url, hops } = await follow(u.href, { jar, stopAt: redirectUri });
  return { url, hops, state, nonce, verifier };
}

async function token(disco, { code, verifier, clientId, secret = SECRET, redirectUri = REDIRECT, auth = "basic" }) {
  const body = new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: redirectUri, code_verifier: verifier });
  const headers = { "content-type": "application/x-www-form-urlencoded" };
  if (auth === "basic") {
    headers.authorization = `Basic ${Buffer.from(`${formEncode(clientId)}:${formEncode(secret)}`).toString("base64")}`;
  } else {
    body.set("client_id", clientId);
    body.set("client_secret", secret);
  }
  const res = await fetch(disco.token_endpoint, { method: "POST", headers, body });
  return { status: res.status, body: await res.json() };
}

function verifyIdToken(idToken, jwks) {
  const [h, p, s] = idToken.split(".");
  const header = JSON.parse(Buffer.from(h, "base64url"));
  const payload = JSON.parse(Buffer.from(p, "base64url"));
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk) return { header, payload, valid: false };
  const key = crypto.createPublicKey({ key: jwk, format: "jwk" });
  const valid = crypto.verify("sha256", Buffer.from(`${h}.${p}`), key, Buffer.from(s, "base64url"));
  return { header, payload, valid };
}

async function admin(base, route, body) {
  const res = await fetch(`${base}/_admin/${route}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

// ---------------------------------------------------------------- the peer

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "oidc-idp-selftest-"));
const configPath = path.join(tmp, "config.json");
fs.writeFileSync(configPath, JSON.stringify({
  port: 0,
  providers: [
    {
      name: "acme",
      clients: [{ client_id: "twig-acme", client_secret: SECRET, redirect_uris: [REDIRECT] }],
      users: [
        { sub: "u-alice", email: "alice@acme.test", email_verified: true, name: "Alice A", groups: ["engineering", "admins"] },
        { sub: "u-bob", email: "Bob@acme.test", email_verified: false, name: "Bob B", groups: [] },
      ],
      extra_claims: { tenant: "acme" },
    },
    {
      name: "google",
      clients: [{ client_id: "twig-google", client_secret: SECRET, redirect_uris: [REDIRECT] }],
      users: [{ sub: "1234567890", email: "carol@gmail.test", email_verified: true, name: "Carol C", claims: { hd: "gmail.test" } }],
    },
    {
      name: "microsoft",
      path: "/ms/tenant-1/v2.0",
      users: [],
      extra_claims: { tid: "tenant-1" },
    },
  ],
}));

const child = spawn(process.execPath, [path.join(here, "oidc_idp.mjs"), "--config", configPath], {
  stdio: ["ignore", "pipe", "pipe"],
});
const stderrLines = [];
createInterface({ input: child.stderr }).on("line", (l) => stderrLines.push(l));
const stdoutLines = [];
const lines = createInterface({ input: child.stdout });
const ready = new Promise((resolve, reject) => {
  lines.once("line", resolve);
  child.once("exit", (code) => reject(new Error(`peer exited (${code}) before ready:\n${stderrLines.join("\n")}`)));
  setTimeout(() => reject(new Error("peer not ready after 20 s")), 20_000).unref();
});

let exitCode = 0;
try {
  const readyLine = await ready;
  lines.on("line", (l) => stdoutLines.push(l));
  console.log(`ready line: ${readyLine}`);
  const info = JSON.parse(readyLine);
  const { base } = info;
  eq("ready line keys", Object.keys(info).sort(), ["base", "issuers", "port"]);
  eq("ready base", base, `http://127.0.0.1:${info.port}`);
  eq("ready issuers", info.issuers, {
    acme: `${base}/acme`,
    google: `${base}/google`,
    microsoft: `${base}/ms/tenant-1/v2.0`,
  });

  const health = await fetch(`${base}/_admin/health`);
  eq("admin health", health.status, 200);

  // Discovery and JWKS for several providers.
  const disco = {};
  const jwks = {};
  for (const name of ["acme", "google", "microsoft"]) {
    const issuer = info.issuers[name];
    const res = await fetch(`${issuer}/.well-known/openid-configuration`);
    eq(`${name}: discovery status`, res.status, 200);
    disco[name] = await res.json();
    eq(`${name}: discovery issuer`, disco[name].issuer, issuer);
    eq(`${name}: response_types_supported`, disco[name].response_types_supported, ["code"]);
    eq(`${name}: code_challenge_methods_supported`, disco[name].code_challenge_methods_supported, ["S256"]);
    eq(`${name}: token_endpoint_auth_methods_supported`, disco[name].token_endpoint_auth_methods_supported, ["client_secret_basic", "client_secret_post"]);
    check(`${name}: endpoints under issuer`, [disco[name].authorization_endpoint, disco[name].token_endpoint, disco[name].jwks_uri].every((u) => u.startsWith(`${issuer}/`)));
    const jr = await fetch(disco[name].jwks_uri);
    eq(`${name}: jwks status`, jr.status, 200);
    jwks[name] = await jr.json();
    check(`${name}: jwks has one RS256 RSA public key`, jwks[name].keys.length === 1 && jwks[name].keys[0].kty === "RSA" && jwks[name].keys[0].alg === "RS256" && !("d" in jwks[name].keys[0]), JSON.stringify(jwks[name]));
  }
  check("providers have distinct keys", jwks.acme.keys[0].n !== jwks.google.keys[0].n);

  // Full code flow with PKCE, cookie jar honouring Path, client_secret_basic.
  const jar = new CookieJar();
  const a = await authorize(disco.acme, { clientId: "twig-acme", jar });
  console.log(`     redirect chain: ${a.hops.join(" -> ")}`);
  console.log(`     cookies set: ${jar.names().join(", ")}`);
  eq("flow: state echoed", a.url.searchParams.get("state"), a.state);
  eq("flow: iss parameter", a.url.searchParams.get("iss"), info.issuers.acme);
  const code = a.url.searchParams.get("code");
  check("flow: code returned", !!code, a.url.href);
  const t = await token(disco.acme, { code, verifier: a.verifier, clientId: "twig-acme" });
  eq("token (basic): status", t.status, 200);
  check("token: has id_token and access_token", !!t.body.id_token && !!t.body.access_token, JSON.stringify(t.body));
  check("token: no refresh_token", t.body.refresh_token === undefined);
  const idt = verifyIdToken(t.body.id_token, jwks.acme);
  eq("id_token: alg", idt.header.alg, "RS256");
  check("id_token: signature verifies with the JWKS", idt.valid);
  eq("id_token: iss", idt.payload.iss, info.issuers.acme);
  eq("id_token: aud", idt.payload.aud, "twig-acme");
  eq("id_token: nonce", idt.payload.nonce, a.nonce);
  eq("id_token: sub", idt.payload.sub, "u-alice");
  eq("id_token: email", idt.payload.email, "alice@acme.test");
  eq("id_token: email_verified", idt.payload.email_verified, true);
  eq("id_token: name", idt.payload.name, "Alice A");
  eq("id_token: groups", idt.payload.groups, ["engineering", "admins"]);
  eq("id_token: extra_claims", idt.payload.tenant, "acme");

  // Userinfo with the access token.
  const ui = await fetch(disco.acme.userinfo_endpoint, { headers: { authorization: `Bearer ${t.body.access_token}` } });
  const uiBody = await ui.json();
  eq("userinfo: status", ui.status, 200);
  eq("userinfo: email", uiBody.email, "alice@acme.test");

  // The same code twice.
  const t2 = await token(disco.acme, { code, verifier: a.verifier, clientId: "twig-acme" });
  eq("code reuse: status", t2.status, 400);
  eq("code reuse: error", t2.body.error, "invalid_grant");

  // Wrong code_verifier (client_secret_post this time).
  const b = await authorize(disco.acme, { clientId: "twig-acme", jar });
  const t3 = await token(disco.acme, { code: b.url.searchParams.get("code"), verifier: pkce().verifier, clientId: "twig-acme", auth: "post" });
  eq("wrong verifier: status", t3.status, 400);
  eq("wrong verifier: error", t3.body.error, "invalid_grant");

  // client_secret_post works; login_hint by email (case-insensitive), same jar.
  const c = await authorize(disco.acme, { clientId: "twig-acme", jar, loginHint: "bob@ACME.test" });
  const t4 = await token(disco.acme, { code: c.url.searchParams.get("code"), verifier: c.verifier, clientId: "twig-acme", auth: "post" });
  eq("token (post): status", t4.status, 200);
  const idt4 = verifyIdToken(t4.body.id_token ?? "..", jwks.acme);
  eq("login_hint email, same jar after alice: sub", idt4.payload.sub, "u-bob");
  eq("login_hint email: email_verified false", idt4.payload.email_verified, false);
  eq("login_hint email: empty groups", idt4.payload.groups, []);

  // login_hint by sub, again in the same jar.
  const d = await authorize(disco.acme, { clientId: "twig-acme", jar, loginHint: "u-alice" });
  const t5 = await token(disco.acme, { code: d.url.searchParams.get("code"), verifier: d.verifier, clientId: "twig-acme" });
  eq("login_hint sub, same jar after bob: sub", verifyIdToken(t5.body.id_token ?? "..", jwks.acme).payload.sub, "u-alice");

  // Scopes limit the claims.
  const e = await authorize(disco.acme, { clientId: "twig-acme", jar, scope: "openid email" });
  const t6 = await token(disco.acme, { code: e.url.searchParams.get("code"), verifier: e.verifier, clientId: "twig-acme" });
  const p6 = verifyIdToken(t6.body.id_token ?? "..", jwks.acme).payload;
  check("scope openid email: email but no name/groups", p6.email === "alice@acme.test" && p6.name === undefined && p6.groups === undefined, JSON.stringify(p6));

  // Unknown login_hint -> access_denied at the redirect_uri.
  const f = await authorize(disco.acme, { clientId: "twig-acme", jar, loginHint: "mallory@acme.test" });
  eq("unknown login_hint: error", f.url.searchParams.get("error"), "access_denied");
  eq("unknown login_hint: state", f.url.searchParams.get("state"), f.state);
  check("unknown login_hint: no code", !f.url.searchParams.has("code"));

  // A provider with no users -> access_denied too.
  await admin(base, "clients", { provider: "microsoft", client_id: "twig-ms", client_secret: SECRET, redirect_uris: [REDIRECT] });
  const g = await authorize(disco.microsoft, { clientId: "twig-ms", jar });
  eq("no users: error", g.url.searchParams.get("error"), "access_denied");

  // No PKCE -> invalid_request at the redirect_uri.
  const h = await authorize(disco.acme, { clientId: "twig-acme", jar, withPkce: false });
  eq("no PKCE: error", h.url.searchParams.get("error"), "invalid_request");

  // prompt=select_account (Google-style relying parties) is accepted.
  const i = await authorize(disco.google, { clientId: "twig-google", jar, extra: { prompt: "select_account" } });
  const t7 = await token(disco.google, { code: i.url.searchParams.get("code"), verifier: i.verifier, clientId: "twig-google" });
  const p7 = verifyIdToken(t7.body.id_token ?? "..", jwks.google).payload;
  eq("google, prompt=select_account: sub", p7.sub, "1234567890");
  eq("google: user claims", p7.hd, "gmail.test");
  eq("google: iss", p7.iss, info.issuers.google);

  // Without a cookie jar at all.
  const j = await authorize(disco.acme, { clientId: "twig-acme", jar: undefined, loginHint: "u-bob" });
  const t8 = await token(disco.acme, { code: j.url.searchParams.get("code"), verifier: j.verifier, clientId: "twig-acme" });
  eq("no cookie jar: sub", verifyIdToken(t8.body.id_token ?? "..", jwks.acme).payload.sub, "u-bob");

  // A client and a user added through the admin API after start.
  const redirect2 = "http://127.0.0.1:5999/sso/oidc/callback";
  const ac = await admin(base, "clients", { provider: "acme", client_id: "late-client", client_secret: SECRET, redirect_uris: [redirect2] });
  eq("admin clients: status", ac.status, 200);
  const au = await admin(base, "users", { provider: "acme", user: { sub: "u-dave", email: "dave@acme.test", email_verified: true, name: "Dave D", groups: ["late"] } });
  eq("admin users: status", au.status, 200);
  const k = await authorize(disco.acme, { clientId: "late-client", redirectUri: redirect2, jar, loginHint: "dave@acme.test" });
  const t9 = await token(disco.acme, { code: k.url.searchParams.get("code"), verifier: k.verifier, clientId: "late-client", redirectUri: redirect2 });
  eq("late client: token status", t9.status, 200);
  const p9 = verifyIdToken(t9.body.id_token ?? "..", jwks.acme).payload;
  eq("late client: aud", p9.aud, "late-client");
  eq("late user: sub and groups", [p9.sub, p9.groups], ["u-dave", ["late"]]);

  // Replacing a client: the new redirect_uri and secret apply at once.
  const redirect3 = "http://127.0.0.1:6001/cb";
  await admin(base, "clients", { provider: "acme", client_id: "late-client", client_secret: `${SECRET}-2`, redirect_uris: [redirect3] });
  const l = await authorize(disco.acme, { clientId: "late-client", redirectUri: redirect3, jar });
  const t10 = await token(disco.acme, { code: l.url.searchParams.get("code"), verifier: l.verifier, clientId: "late-client", redirectUri: redirect3, secret: `${SECRET}-2` });
  eq("replaced client: token status", t10.status, 200);
  const oldRedirect = await fetch(`${disco.acme.authorization_endpoint}?response_type=code&client_id=late-client&redirect_uri=${encodeURIComponent(redirect2)}&scope=openid&code_challenge=${pkce().challenge}&code_challenge_method=S256`, { redirect: "manual" });
  eq("replaced client: old redirect_uri refused", oldRedirect.status, 400);

  // Wrong client secret.
  const m = await authorize(disco.acme, { clientId: "twig-acme", jar });
  const t11 = await token(disco.acme, { code: m.url.searchParams.get("code"), verifier: m.verifier, clientId: "twig-acme", secret: "wrong-secret-wrong-secret-wrong-secret" });
  eq("wrong secret: error", t11.body.error, "invalid_client");

  // Admin API errors.
  eq("admin: unknown provider", (await admin(base, "users", { provider: "nope", user: { sub: "x" } })).status, 404);
  eq("admin: user without sub", (await admin(base, "users", { provider: "acme", user: { email: "x@y" } })).status, 400);
  eq("admin: invalid client metadata", (await admin(base, "clients", { provider: "acme", client_id: "bad", client_secret: SECRET, redirect_uris: ["not a url"] })).status, 400);

  check("stdout: nothing after the ready line", stdoutLines.length === 0, JSON.stringify(stdoutLines));

  // SIGTERM -> exit 0 promptly.
  const started = Date.now();
  child.kill("SIGTERM");
  const [codeAtExit, signal] = child.exitCode !== null ? [child.exitCode, null] : await once(child, "exit");
  check("SIGTERM: exit 0 within 3 s", codeAtExit === 0 && Date.now() - started < 3000, `code ${codeAtExit} signal ${signal} after ${Date.now() - started} ms`);
} catch (err) {
  failures.push(`exception: ${err.stack ?? err}`);
  console.log(`FAIL exception: ${err.stack ?? err}`);
} finally {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  fs.rmSync(tmp, { recursive: true, force: true });
}

if (failures.length) {
  console.log(`\n${failures.length} check(s) failed, ${passed} passed:`);
  for (const f of failures) console.log(`  - ${f}`);
  console.log("\npeer stderr:");
  for (const l of stderrLines) console.log(`  ${l}`);
  exitCode = 1;
} else {
  console.log(`\nall ${passed} checks passed`);
}
process.exit(exitCode);
