/// <reference types="node" />
// A stand-in for twig-identity in the tests: the three cookie-mode /auth/
// routes, and SessionService.GetCurrentUser over gRPC-web (Connect's Node
// adapter), which accepts only the bearer of the current access token.
// Plus a fetch that behaves like a browser's for cookies: it keeps the
// cookies the server sets and sends them back only on requests made with
// credentials: "include".

import http from "node:http";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { SessionService } from "../src/gen/twig/sessions/v1/sessions_pb.js";

export const EMAIL = "ada@example.com";
export const PASSWORD = "correct horse battery staple";
export const USER_ID = "usr_1";
export const ORG_ID = "org_1";
const COOKIE = "twig_refresh";

export type RpcMode = "normal" | "always-unauthenticated" | "permission-denied";

export interface FakeOptions {
  /** The tests' clock, shared with the keeper. */
  now: () => number;
  /** Lifetime of each access token issued, in ms (default 15 minutes). */
  tokenLifetimeMs?: number;
}

export class FakeTwig {
  url = "";
  readonly counts = { login: 0, refresh: 0, logout: 0, rpc: 0 };
  /** The Authorization header of each RPC, in order. */
  readonly rpcAuth: (string | null)[] = [];
  /** Contract violations seen on /auth/ requests (missing CSRF header, wrong content type…). */
  readonly violations: string[] = [];
  /** The token GetCurrentUser accepts; undefined after revocation. */
  currentToken: string | undefined;
  /** The refresh cookie value that is valid now. */
  refreshCookie: string | undefined;
  sessionId = "";
  tokenLifetimeMs: number;
  /** Delay before /auth/refresh answers, so concurrent callers overlap it. */
  refreshDelayMs = 0;
  /** Status /auth/logout answers (204, or a failure). */
  logoutStatus = 204;
  /** Status /auth/refresh answers instead of doing its work (e.g. 503), when set. */
  refreshFailure: number | undefined;
  /** How many next /auth/refresh calls lose a race with another tab (409). */
  refreshRaces = 0;
  rpcMode: RpcMode = "normal";

  private seq = 0;
  private sessionSeq = 0;
  private readonly server: http.Server;
  private readonly now: () => number;

  constructor(options: FakeOptions) {
    this.now = options.now;
    this.tokenLifetimeMs = options.tokenLifetimeMs ?? 15 * 60_000;
    const rpc = connectNodeAdapter({
      grpcWeb: true,
      connect: false,
      grpc: false,
      routes: (router: ConnectRouter) => {
        router.service(SessionService, {
          getCurrentUser: (_req, ctx) => {
            this.counts.rpc++;
            const auth = ctx.requestHeader.get("authorization");
            this.rpcAuth.push(auth);
            if (this.rpcMode === "always-unauthenticated") {
              throw new ConnectError("token refused", Code.Unauthenticated);
            }
            if (!this.currentToken || auth !== `Bearer ${this.currentToken}`) {
              throw new ConnectError("invalid or expired access token", Code.Unauthenticated);
            }
            if (this.rpcMode === "permission-denied") {
              throw new ConnectError("not allowed", Code.PermissionDenied);
            }
            return {
              user: { id: USER_ID, email: EMAIL },
              sessionId: this.sessionId,
              organizationId: ORG_ID,
            };
          },
        });
      },
    });
    this.server = http.createServer((req, res) => {
      if (req.url?.startsWith("/auth/")) {
        this.auth(req, res).catch((e: unknown) => {
          res.writeHead(500).end(String(e));
        });
        return;
      }
      rpc(req, res);
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
    return this;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The access token stops working; the session (and its cookie) go on. */
  revokeAccessToken(): void {
    this.currentToken = undefined;
  }

  /** The session ends server side: token and refresh cookie both die. */
  endSession(): void {
    this.currentToken = undefined;
    this.refreshCookie = undefined;
  }

  private issue(res: http.ServerResponse): void {
    const n = ++this.seq;
    this.currentToken = `t${n}`;
    this.refreshCookie = `r${n}`;
    const expires = new Date(this.now() + this.tokenLifetimeMs);
    json(
      res,
      200,
      {
        access_token: this.currentToken,
        access_expires_at: expires.toISOString(),
        session_id: this.sessionId,
        user_id: USER_ID,
        organization_id: ORG_ID,
      },
      { "set-cookie": `${COOKIE}=${this.refreshCookie}; Path=/auth; HttpOnly; Secure; SameSite=Strict` },
    );
  }

  private async auth(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const route = req.url ?? "";
    const body = await readBody(req);
    if (req.method !== "POST") {
      this.violations.push(`${route}: method ${req.method}`);
      return json(res, 405, { code: "unimplemented", message: "POST only" });
    }
    if (req.headers["x-twig-csrf"] !== "1") {
      this.violations.push(`${route}: no x-twig-csrf: 1`);
      return json(res, 403, { code: "permission_denied", message: "missing x-twig-csrf header" });
    }
    if (body.length > 0 && !(req.headers["content-type"] ?? "").startsWith("application/json")) {
      this.violations.push(`${route}: body sent as ${req.headers["content-type"]}`);
      return json(res, 415, { code: "invalid_argument", message: "JSON only" });
    }
    const cookie = cookieValue(req.headers.cookie, COOKIE);
    switch (route) {
      case "/auth/login": {
        this.counts.login++;
        let creds: Record<string, unknown>;
        try {
          creds = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
        } catch {
          return json(res, 400, { code: "invalid_argument", message: "body is not JSON" });
        }
        if (creds.organization_id !== undefined && creds.organization_id !== ORG_ID) {
          return json(res, 403, { code: "permission_denied", message: "not a member of that organization" });
        }
        if (creds.email !== EMAIL || creds.password !== PASSWORD) {
          return json(res, 401, { code: "unauthenticated", message: "wrong email or password" });
        }
        this.sessionId = `ses_${++this.sessionSeq}`;
        return this.issue(res);
      }
      case "/auth/refresh": {
        this.counts.refresh++;
        if (this.refreshDelayMs > 0) await new Promise((r) => setTimeout(r, this.refreshDelayMs));
        if (this.refreshRaces > 0) {
          this.refreshRaces--;
          return json(res, 409, { code: "refresh_race", message: "another tab refreshed; retry" });
        }
        if (this.refreshFailure !== undefined) {
          return json(res, this.refreshFailure, { code: "unavailable", message: "store unreachable" });
        }
        if (!cookie || cookie !== this.refreshCookie) {
          return json(res, 401, { code: "unauthenticated", message: "no session" });
        }
        return this.issue(res);
      }
      case "/auth/logout": {
        this.counts.logout++;
        if (this.logoutStatus !== 204) {
          return json(res, this.logoutStatus, { code: "internal", message: "session store down" });
        }
        this.endSession();
        res.writeHead(204, { "set-cookie": `${COOKIE}=; Path=/auth; Max-Age=0; HttpOnly; Secure; SameSite=Strict` });
        res.end();
        return;
      }
      default:
        return json(res, 404, { code: "not_found", message: "no such route" });
    }
  }
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const [k, ...v] = part.trim().split("=");
    if (k === name) return v.join("=");
  }
  return undefined;
}

/** One request as the wrapper fetch saw it. */
export interface SeenRequest {
  url: string;
  init: RequestInit | undefined;
}

/**
 * A fetch that keeps cookies like a browser: Set-Cookie answers go into the
 * jar, and the jar goes with requests made with credentials: "include" (and
 * only those). Every request is recorded in `seen`.
 */
export function browserLikeFetch(): { fetch: typeof globalThis.fetch; seen: SeenRequest[]; jar: Map<string, string> } {
  const seen: SeenRequest[] = [];
  const jar = new Map<string, string>();
  const f: typeof globalThis.fetch = async (input, init) => {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
    seen.push({ url, init });
    const headers = new Headers(init?.headers);
    if (init?.credentials === "include" && jar.size > 0) {
      headers.set("cookie", [...jar].map(([k, v]) => `${k}=${v}`).join("; "));
    }
    const res = await globalThis.fetch(input, { ...init, headers });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(";");
      const eq = (pair ?? "").indexOf("=");
      const name = (pair ?? "").slice(0, eq).trim();
      const value = (pair ?? "").slice(eq + 1).trim();
      if (attrs.some((a) => a.trim().toLowerCase() === "max-age=0") || value === "") jar.delete(name);
      else jar.set(name, value);
    }
    return res;
  };
  return { fetch: f, seen, jar };
}
