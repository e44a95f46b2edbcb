// createTwigClient: one SessionKeeper, one gRPC-web transport that carries
// its token, and a Connect client for every twig service.

import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { services } from "./gen/services.js";
import { authInterceptor } from "./interceptor.js";
import { SessionKeeper } from "./session.js";

export interface TwigClientOptions {
  /** Where the gRPC-web API is served, e.g. "https://id.example.com". */
  baseUrl: string;
  /** Where the `/auth/` cookie routes are served; baseUrl by default. */
  authBaseUrl?: string;
  /** fetch for both the `/auth/` routes and the gRPC-web calls; the global one by default. */
  fetch?: typeof globalThis.fetch;
  /** Refresh the access token when it expires within this many ms (default 60 000). */
  refreshBeforeMs?: number;
  /** The clock (ms since the epoch); Date.now by default. */
  now?: () => number;
  /** More interceptors, run inside the auth interceptor (they see the Authorization header). */
  interceptors?: Interceptor[];
}

/**
 * A client per service of the generated code (src/gen/services.ts, written
 * by `npm run generate`): `sessions`, `apiKeys`, `audit`, `quota`, `vault`,
 * `sso`, and `authorize` (the edge's AuthorizeService, internal: it needs
 * `x-twig-internal-token`, so a browser session is refused).
 */
export type TwigServiceClients = {
  readonly [K in keyof typeof services]: Client<(typeof services)[K]>;
};

export type TwigClient = TwigServiceClients & {
  readonly keeper: SessionKeeper;
  readonly transport: Transport;
};

export function createTwigClient(options: TwigClientOptions): TwigClient {
  const { baseUrl, authBaseUrl = baseUrl, fetch, refreshBeforeMs, now, interceptors = [] } = options;
  const keeper = new SessionKeeper({ authBaseUrl, fetch, refreshBeforeMs, now });
  const transport = createGrpcWebTransport({
    baseUrl,
    useBinaryFormat: true,
    interceptors: [authInterceptor(keeper), ...interceptors],
    ...(fetch ? { fetch } : {}),
  });
  const clients = Object.fromEntries(
    Object.entries(services).map(([name, service]) => [name, createClient(service, transport)]),
  ) as unknown as TwigServiceClients;
  return { ...clients, keeper, transport };
}
