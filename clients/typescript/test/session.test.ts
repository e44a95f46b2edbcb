/// <reference types="node" />
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { afterEach, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AuthRequestError,
  SessionKeeper,
  createTwigClient,
  parseRfc3339,
  services,
  type SessionEvent,
  type TwigClient,
} from "../src/index.js";
import { EMAIL, FakeTwig, ORG_ID, PASSWORD, USER_ID, browserLikeFetch, type SeenRequest } from "./fake-server.js";

const MINUTE = 60_000;
const START = Date.UTC(2030, 0, 1, 12, 0, 0);

interface Harness {
  server: FakeTwig;
  client: TwigClient;
  seen: SeenRequest[];
  fetch: typeof globalThis.fetch;
  events: SessionEvent[];
  clock: { now: number };
  advance(ms: number): void;
  call(): Promise<unknown>;
}

const open: FakeTwig[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.stop();
});

async function harness(opts: { refreshBeforeMs?: number; clientAheadMs?: number } = {}): Promise<Harness> {
  const clock = { now: START };
  const serverNow = () => clock.now - (opts.clientAheadMs ?? 0);
  const now = () => clock.now;
  const server = await new FakeTwig({ now: serverNow }).start();
  open.push(server);
  const { fetch, seen } = browserLikeFetch();
  const client = createTwigClient({ baseUrl: server.url, fetch, now, refreshBeforeMs: opts.refreshBeforeMs ?? MINUTE });
  const events: SessionEvent[] = [];
  client.keeper.onChange((e) => events.push(e));
  return {
    server,
    client,
    seen,
    fetch,
    events,
    clock,
    advance: (ms) => {
      clock.now += ms;
    },
    call: () => client.sessions.getCurrentUser({}),
  };
}

async function rejectsWith(p: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    assert.equal(e.code, code, `expected ${Code[code]}, got ${Code[e.code]}: ${e.message}`);
    return e;
  }
  assert.fail(`expected a rejection with ${Code[code]}`);
}

const authRequests = (seen: SeenRequest[]) => seen.filter((r) => new URL(r.url).pathname.startsWith("/auth/"));

describe("login and calls", () => {
  test("login keeps the session in memory and calls carry its token", async () => {
    const h = await harness();
    const info = await h.client.keeper.login(EMAIL, PASSWORD);
    assert.equal(info.accessToken, "t1");
    assert.equal(info.userId, USER_ID);
    assert.equal(info.organizationId, ORG_ID);
    assert.equal(info.sessionId, "ses_1");
    assert.equal(info.accessExpiresAt.getTime(), START + 15 * MINUTE);
    assert.equal(h.client.keeper.status, "signed-in");
    assert.deepEqual(h.client.keeper.current(), info);
    assert.deepEqual(h.events, [{ type: "signed-in", session: info }]);

    const me = await h.call();
    assert.equal((me as { sessionId: string }).sessionId, "ses_1");
    assert.deepEqual(h.server.rpcAuth, ["Bearer t1"]);
    assert.equal(h.server.counts.refresh, 0);
  });

  test("a wrong password is an Unauthenticated AuthRequestError with the server's message; state unchanged", async () => {
    const h = await harness();
    const err = await rejectsWith(h.client.keeper.login(EMAIL, "nope"), Code.Unauthenticated);
    assert.ok(err instanceof AuthRequestError);
    assert.equal(err.status, 401);
    assert.equal(err.route, "login");
    assert.equal(err.rawMessage, "wrong email or password");
    assert.equal(h.client.keeper.status, "unknown");
    assert.equal(h.client.keeper.current(), undefined);
    assert.deepEqual(h.events, []);
  });

  test("organization_id goes in the login body when given; other statuses carry status and message", async () => {
    const h = await harness();
    const err = await rejectsWith(h.client.keeper.login(EMAIL, PASSWORD, "org_other"), Code.PermissionDenied);
    assert.ok(err instanceof AuthRequestError);
    assert.equal(err.status, 403);
    assert.equal(err.rawMessage, "not a member of that organization");
    await h.client.keeper.login(EMAIL, PASSWORD, ORG_ID);
    const bodies = authRequests(h.seen).map((r) => JSON.parse(String(r.init?.body)));
    assert.deepEqual(bodies, [
      { email: EMAIL, password: PASSWORD, organization_id: "org_other" },
      { email: EMAIL, password: PASSWORD, organization_id: ORG_ID },
    ]);
    // A plain ConnectError is not taken for an AuthRequestError.
    assert.equal(new ConnectError("x", Code.Unauthenticated) instanceof AuthRequestError, false);
  });

  test("a fresh page resumes the session from the cookie with one refresh", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    // A reload: a new keeper (nothing in memory), the same browser cookie jar.
    const reloaded = createTwigClient({ baseUrl: h.server.url, fetch: h.fetch, now: () => h.clock.now });
    const events: SessionEvent[] = [];
    reloaded.keeper.onChange((e) => events.push(e));
    assert.equal(reloaded.keeper.status, "unknown");
    await Promise.all([reloaded.sessions.getCurrentUser({}), reloaded.sessions.getCurrentUser({})]);
    assert.equal(h.server.counts.refresh, 1);
    assert.deepEqual(h.server.rpcAuth, ["Bearer t2", "Bearer t2"]);
    assert.equal(events.length, 1);
    assert.equal(events[0]?.type, "signed-in");
  });

  test("a fresh page without a session: one refresh (401), then signed out, public calls go without a token", async () => {
    const h = await harness();
    await rejectsWith(h.call(), Code.Unauthenticated);
    assert.equal(h.client.keeper.status, "signed-out");
    assert.deepEqual(h.events, [{ type: "signed-out" }]);
    await rejectsWith(h.call(), Code.Unauthenticated);
    assert.equal(h.server.counts.refresh, 1, "signed out: no more refreshes");
    assert.deepEqual(h.server.rpcAuth, [null, null]);
  });
});

describe("refresh", () => {
  test("(a) 20 concurrent calls with an expired token share ONE refresh and all succeed", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.advance(16 * MINUTE); // past expiry
    h.server.refreshDelayMs = 50;
    const results = await Promise.all(Array.from({ length: 20 }, () => h.call()));
    assert.equal(results.length, 20);
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(h.server.counts.rpc, 20);
    assert.deepEqual(h.server.rpcAuth, Array(20).fill("Bearer t2"));
    assert.equal(h.client.keeper.current()?.accessToken, "t2");
  });

  test("(a') accessToken(), refresh() and calls at once still make one refresh request", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.advance(20 * MINUTE);
    h.server.refreshDelayMs = 30;
    const k = h.client.keeper;
    const [a, b, info] = await Promise.all([k.accessToken(), k.accessToken(), k.refresh(), h.call(), h.call()]);
    assert.equal(a, "t2");
    assert.equal(b, "t2");
    assert.equal(info.accessToken, "t2");
    assert.equal(h.server.counts.refresh, 1);
  });

  test("(b) a token within refreshBeforeMs of expiry is refreshed before the call; the call never sees it", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.advance(13 * MINUTE); // 2 minutes left: outside the 1-minute margin
    await h.call();
    assert.equal(h.server.counts.refresh, 0);
    h.advance(MINUTE + 30_000); // 30 s left: inside the margin, still valid
    await h.call();
    assert.equal(h.server.counts.refresh, 1);
    assert.deepEqual(h.server.rpcAuth, ["Bearer t1", "Bearer t2"]);
    assert.equal(await h.client.keeper.accessToken(), "t2");
  });

  test("refreshBeforeMs is configurable", async () => {
    const h = await harness({ refreshBeforeMs: 5 * MINUTE });
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.advance(11 * MINUTE); // 4 minutes left
    await h.call();
    assert.deepEqual(h.server.rpcAuth, ["Bearer t2"]);
  });

  test("a margin longer than the token's life does not make every call refresh", async () => {
    const h = await harness({ refreshBeforeMs: 30 * MINUTE });
    await h.client.keeper.login(EMAIL, PASSWORD); // 15-minute token
    await h.call();
    await h.call();
    assert.equal(h.server.counts.refresh, 0);
    h.advance(8 * MINUTE); // past half its life
    await h.call();
    assert.equal(h.server.counts.refresh, 1);
  });

  test("a client clock far ahead of the server's does not make every call refresh", async () => {
    const h = await harness({ clientAheadMs: 20 * MINUTE });
    await h.client.keeper.login(EMAIL, PASSWORD); // looks expired on arrival
    await Promise.all([h.call(), h.call(), h.call()]);
    assert.equal(h.server.counts.refresh, 0);
    h.advance(4_000);
    await h.call();
    assert.equal(h.server.counts.refresh, 0);
    h.advance(2_000); // 5 s after it arrived: renewed, then held 5 s again
    await Promise.all([h.call(), h.call()]);
    await h.call();
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(h.server.counts.rpc, 7);
  });

  test("(c) Unauthenticated for a valid-looking (revoked) token: one refresh, one retry, success", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.revokeAccessToken();
    await h.call();
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(h.server.counts.rpc, 2);
    assert.deepEqual(h.server.rpcAuth, ["Bearer t1", "Bearer t2"]);
  });

  test("(c') 20 concurrent calls refused for a revoked token: still ONE refresh, each retried once", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.revokeAccessToken();
    h.server.refreshDelayMs = 20;
    await Promise.all(Array.from({ length: 20 }, () => h.call()));
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(h.server.counts.rpc, 40);
    const count = (token: string) => h.server.rpcAuth.filter((a) => a === `Bearer ${token}`).length;
    assert.equal(count("t1"), 20);
    assert.equal(count("t2"), 20);
  });

  test("a refused token already replaced by a newer one is not refreshed again", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    const k = h.client.keeper;
    const replaced = await k.refresh(); // t2 is current now
    assert.equal(await k.replaceToken("t1"), replaced.accessToken);
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(await k.replaceToken("t2"), "t3");
    assert.equal(h.server.counts.refresh, 2);
  });

  test("a refresh that lost a race with another tab (409) is retried, and the session kept", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.refreshRaces = 1;
    await h.client.keeper.refresh();
    assert.equal(h.client.keeper.status, "signed-in");
    assert.equal(h.server.counts.refresh, 2);
    h.server.refreshRaces = 5;
    await assert.rejects(h.client.keeper.refresh());
    assert.equal(h.server.counts.refresh, 5, "two retries at most");
    assert.equal(h.client.keeper.status, "signed-in", "a lost race is never a sign-out");
  });

  test("(d) refresh answering 401 signs out; the caller gets Unauthenticated; no retry loop", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.endSession(); // token and cookie both dead
    const err = await rejectsWith(h.call(), Code.Unauthenticated);
    assert.match(err.message, /no session/);
    assert.equal(h.client.keeper.status, "signed-out");
    assert.equal(h.client.keeper.current(), undefined);
    assert.deepEqual(h.events.map((e) => e.type), ["signed-in", "signed-out"]);
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(h.server.counts.rpc, 1);

    // Later calls: no refresh, no token, no retry.
    await rejectsWith(h.call(), Code.Unauthenticated);
    await rejectsWith(h.client.keeper.accessToken(), Code.Unauthenticated);
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(h.server.counts.rpc, 2);
    assert.deepEqual(h.server.rpcAuth, ["Bearer t1", null]);
  });

  test("(d') expired token and refresh 401: signed out before the call, which goes once without a token", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.endSession();
    h.advance(16 * MINUTE);
    h.server.refreshDelayMs = 20;
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => h.call()));
    for (const r of results) {
      assert.equal(r.status, "rejected");
      assert.equal(ConnectError.from(r.reason).code, Code.Unauthenticated);
    }
    assert.equal(h.client.keeper.status, "signed-out");
    assert.equal(h.server.counts.refresh, 1);
    assert.equal(h.server.counts.rpc, 5);
    assert.deepEqual(h.server.rpcAuth, Array(5).fill(null));
  });

  test("(e) a second Unauthenticated after the retry is thrown; exactly two calls", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.rpcMode = "always-unauthenticated";
    await rejectsWith(h.call(), Code.Unauthenticated);
    assert.equal(h.server.counts.rpc, 2);
    assert.equal(h.server.counts.refresh, 1);
    assert.deepEqual(h.server.rpcAuth, ["Bearer t1", "Bearer t2"]);
    assert.equal(h.client.keeper.status, "signed-in", "the refresh worked; the session stands");
  });

  test("(h) a call failing with another code (PermissionDenied) is not retried", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.rpcMode = "permission-denied";
    await rejectsWith(h.call(), Code.PermissionDenied);
    assert.equal(h.server.counts.rpc, 1);
    assert.equal(h.server.counts.refresh, 0);
  });

  test("a call with its own Authorization header is left alone", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    await rejectsWith(
      h.client.sessions.getCurrentUser({}, { headers: { authorization: "Bearer twig_sk_key" } }),
      Code.Unauthenticated,
    );
    assert.deepEqual(h.server.rpcAuth, ["Bearer twig_sk_key"]);
    assert.equal(h.server.counts.refresh, 0);
  });

  test("a failed refresh (503) keeps a not-yet-expired token in use, and fails calls once it has expired", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.refreshFailure = 503;
    h.advance(14 * MINUTE + 30_000); // inside the margin, still valid
    await h.call();
    assert.deepEqual(h.server.rpcAuth, ["Bearer t1"]);
    h.advance(MINUTE); // expired
    const err = await rejectsWith(h.call(), Code.Unavailable);
    assert.ok(err instanceof AuthRequestError);
    assert.equal(err.status, 503);
    assert.equal(err.rawMessage, "store unreachable");
    assert.equal(h.client.keeper.status, "signed-in", "a 503 is not a sign-out");
    h.server.refreshFailure = undefined;
    await h.call();
    assert.equal(h.server.counts.rpc, 2);
  });
});

describe("logout", () => {
  test("logout ends the session and clears the cookie", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    await h.client.keeper.logout();
    assert.equal(h.client.keeper.current(), undefined);
    assert.equal(h.client.keeper.status, "signed-out");
    assert.deepEqual(h.events.map((e) => e.type), ["signed-in", "signed-out"]);
    // The cookie is gone: an explicit refresh finds no session.
    await rejectsWith(h.client.keeper.refresh(), Code.Unauthenticated);
    assert.equal(h.server.counts.logout, 1);
  });

  test("(f) logout clears local state even when the server fails (and says so)", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.logoutStatus = 500;
    const err = await rejectsWith(h.client.keeper.logout(), Code.Internal);
    assert.ok(err instanceof AuthRequestError);
    assert.equal(err.status, 500);
    assert.equal(err.rawMessage, "session store down");
    assert.equal(h.client.keeper.current(), undefined);
    assert.equal(h.client.keeper.status, "signed-out");
    assert.deepEqual(h.events.map((e) => e.type), ["signed-in", "signed-out"]);
    // Signed out locally: no token is handed out and no refresh is tried.
    await rejectsWith(h.client.keeper.accessToken(), Code.Unauthenticated);
    assert.equal(h.server.counts.refresh, 0);
  });

  test("(f') logout clears local state when the request cannot even be sent", async () => {
    const h = await harness();
    let down = false;
    const fetch: typeof globalThis.fetch = (input, init) =>
      down ? Promise.reject(new TypeError("Failed to fetch")) : h.fetch(input, init);
    const keeper = new SessionKeeper({ authBaseUrl: h.server.url, fetch, now: () => h.clock.now });
    await keeper.login(EMAIL, PASSWORD);
    down = true;
    const err = await rejectsWith(keeper.logout(), Code.Unavailable);
    assert.ok(err instanceof AuthRequestError);
    assert.equal(err.status, 0);
    assert.equal(keeper.current(), undefined);
    assert.equal(keeper.status, "signed-out");
  });

  test("a refresh in flight when logout starts does not bring the session back", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    h.server.refreshDelayMs = 40;
    const refreshing = h.client.keeper.refresh();
    const loggingOut = h.client.keeper.logout();
    await rejectsWith(refreshing, Code.Unauthenticated);
    await loggingOut;
    assert.equal(h.client.keeper.current(), undefined);
    assert.equal(h.client.keeper.status, "signed-out");
    // The logout went after the refresh: its cookie-clearing answer is the last word.
    assert.deepEqual(
      authRequests(h.seen).map((r) => new URL(r.url).pathname),
      ["/auth/login", "/auth/refresh", "/auth/logout"],
    );
    await rejectsWith(h.client.keeper.refresh(), Code.Unauthenticated);
  });
});

describe("ordering", () => {
  test("a refresh in flight when login starts lands first; the login's session is the one kept", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD); // ses_1, t1
    h.server.refreshDelayMs = 30;
    const refreshing = h.client.keeper.refresh();
    const again = await h.client.keeper.login(EMAIL, PASSWORD);
    assert.equal((await refreshing).sessionId, "ses_1");
    assert.equal(again.sessionId, "ses_2");
    assert.equal(h.client.keeper.current()?.sessionId, "ses_2");
    assert.equal(h.client.keeper.current()?.accessToken, "t3");
    assert.deepEqual(
      h.events.map((e) => (e.type === "signed-in" ? e.session.sessionId : e.type)),
      ["ses_1", "ses_2"],
    );
    await h.call();
    assert.deepEqual(h.server.rpcAuth, ["Bearer t3"]);
  });

  test("logout called while a login is on its way: the login is voided", async () => {
    const h = await harness();
    const loggingIn = h.client.keeper.login(EMAIL, PASSWORD);
    const loggingOut = h.client.keeper.logout();
    await rejectsWith(loggingIn, Code.Canceled);
    await loggingOut;
    assert.equal(h.client.keeper.current(), undefined);
    assert.equal(h.client.keeper.status, "signed-out");
    assert.equal(h.server.counts.logout, 1);
    // The server session the login made was ended by the logout after it.
    await rejectsWith(h.client.keeper.refresh(), Code.Unauthenticated);
  });
});

describe("the /auth/ contract", () => {
  test("(g) every /auth/ request is a POST with credentials: include and x-twig-csrf: 1; JSON content type only with a body", async () => {
    const h = await harness();
    await h.client.keeper.login(EMAIL, PASSWORD);
    await h.client.keeper.refresh();
    h.advance(15 * MINUTE);
    await h.call(); // refresh through the interceptor
    h.server.revokeAccessToken();
    await h.call(); // refresh through the retry
    await h.client.keeper.logout();
    await rejectsWith(h.client.keeper.refresh(), Code.Unauthenticated);

    const auth = authRequests(h.seen);
    assert.deepEqual(
      auth.map((r) => new URL(r.url).pathname),
      ["/auth/login", "/auth/refresh", "/auth/refresh", "/auth/refresh", "/auth/logout", "/auth/refresh"],
    );
    for (const { url, init } of auth) {
      const headers = new Headers(init?.headers);
      assert.equal(init?.method, "POST", url);
      assert.equal(init?.credentials, "include", url);
      assert.equal(headers.get("x-twig-csrf"), "1", url);
      if (url.endsWith("/auth/login")) {
        assert.equal(headers.get("content-type"), "application/json", url);
        assert.equal(typeof init?.body, "string");
      } else {
        assert.equal(init?.body, undefined, url);
        assert.equal(headers.get("content-type"), null, url);
      }
    }
    assert.deepEqual(h.server.violations, []);
    assert.equal(h.server.counts.refresh, 4);
  });

  test("the auth base URL may differ from the API's and may end with a slash", async () => {
    const h = await harness();
    const { fetch, seen } = browserLikeFetch();
    const client = createTwigClient({ baseUrl: "http://127.0.0.1:1/unused", authBaseUrl: `${h.server.url}/`, fetch });
    await client.keeper.login(EMAIL, PASSWORD);
    assert.equal(seen[0]?.url, `${h.server.url}/auth/login`);
  });

  test("nothing touches localStorage, sessionStorage or document.cookie", async () => {
    const touched: string[] = [];
    const g = globalThis as Record<string, unknown>;
    const names = ["localStorage", "sessionStorage", "document"];
    for (const name of names) {
      Object.defineProperty(globalThis, name, {
        configurable: true,
        get: () => {
          touched.push(name);
          return undefined;
        },
      });
    }
    try {
      const h = await harness();
      await h.client.keeper.login(EMAIL, PASSWORD);
      h.advance(15 * MINUTE);
      await h.call();
      await h.client.keeper.logout();
    } finally {
      for (const name of names) delete g[name];
    }
    assert.deepEqual(touched, []);
  });

  test("onChange: unsubscribing stops the events; a throwing listener does not break the keeper", async () => {
    const h = await harness();
    const seen: string[] = [];
    const stop = h.client.keeper.onChange((e) => seen.push(e.type));
    const reported: unknown[] = [];
    const g = globalThis as { reportError?: (e: unknown) => void };
    const before = g.reportError;
    g.reportError = (e) => reported.push(e);
    try {
      h.client.keeper.onChange(() => {
        throw new Error("listener bug");
      });
      await h.client.keeper.login(EMAIL, PASSWORD);
      stop();
      await h.client.keeper.logout();
    } finally {
      if (before) g.reportError = before;
      else delete g.reportError;
    }
    assert.deepEqual(seen, ["signed-in"]);
    assert.equal(h.client.keeper.status, "signed-out");
    assert.equal(reported.length, 2);
  });
});

describe("createTwigClient", () => {
  test("has a client for every service in proto/twig", () => {
    const protoDir = new URL("../../../../proto/twig/", import.meta.url);
    const declared: string[] = [];
    const walk = (dir: URL) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (e.isDirectory()) walk(new URL(`${e.name}/`, dir));
        else if (e.name.endsWith(".proto")) {
          const text = readFileSync(new URL(e.name, dir), "utf8");
          const pkg = /^package ([\w.]+);/m.exec(text)?.[1];
          for (const m of text.matchAll(/^service (\w+)/gm)) declared.push(`${pkg}.${m[1]}`);
        }
      }
    };
    walk(protoDir);
    assert.ok(declared.includes("twig.sessions.v1.SessionService"));
    assert.ok(declared.includes("twig.apikeys.v1.ApiKeyService"));

    const client = createTwigClient({ baseUrl: "http://127.0.0.1:1" });
    const byTypeName = new Map(Object.entries(services).map(([name, svc]) => [svc.typeName, name]));
    assert.deepEqual([...byTypeName.keys()].sort(), [...declared].sort());
    for (const [typeName, name] of byTypeName) {
      const svc = services[name as keyof typeof services];
      const c = client[name as keyof typeof services] as unknown as Record<string, unknown>;
      assert.ok(c, `${typeName}: no client "${name}"`);
      for (const method of svc.methods) assert.equal(typeof c[method.localName], "function", `${name}.${method.localName}`);
    }
    assert.equal(typeof client.sessions.getCurrentUser, "function");
    assert.equal(typeof client.apiKeys.listApiKeys, "function");
  });
});

describe("parseRfc3339", () => {
  test("reads what servers write", () => {
    assert.equal(parseRfc3339("2030-01-01T12:00:00Z"), START);
    assert.equal(parseRfc3339("2030-01-01T12:00:00.123456789Z"), START + 123);
    assert.equal(parseRfc3339("2030-01-01T12:00:00.5Z"), START + 500);
    assert.equal(parseRfc3339("2030-01-01T14:00:00+02:00"), START);
    assert.equal(parseRfc3339("2030-01-01T11:30:00.000-00:30"), START);
    assert.equal(parseRfc3339("2030-01-01 12:00:00z"), START);
    for (const bad of ["", "2030-01-01", "2030-13-01T00:00:00Z", "2030-01-01T12:00:00", "soon"]) {
      assert.equal(parseRfc3339(bad), undefined, bad);
    }
  });
});
