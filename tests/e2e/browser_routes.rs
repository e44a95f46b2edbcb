//! Browser routes of a module: a test-only module (not in the binary's
//! list) adds a redirect that sets a state cookie, a page that shows who
//! it sees, and a form POST protected by `twig_web::Csrf`. In one process
//! they answer on the main port without a bearer token, without CORS,
//! with CSRF refusals and route metrics by template. Apart, the edge
//! forwards the module's prefix to its process with the client's address
//! and the cookies intact, and a request forging the edge's forwarding
//! straight to the module's process is refused.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::oneshot;
use twig_config::{Config, Secret};
use twig_module::{Context, Module, ModuleError};
use twig_tests::{Backend, TEST_MASTER_KEY, TestDatabase, http1};
use twig_web::{ClientInfo, Cookie, Csrf};

const PREFIX: &str = "/browser-test/";
const SITE: &str = "https://id.example.com";
const EDGE: &str = "browser-edge-token-0123456789abcdef0123";

/// The test-only module.
struct BrowserTest;

static BROWSER_TEST: BrowserTest = BrowserTest;

fn state_cookie() -> Cookie {
    Cookie::scoped("state", PREFIX).expect("a good cookie")
}

impl Module for BrowserTest {
    fn name(&self) -> &'static str {
        "browser-test"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[]
    }

    fn migrate<'a>(&'a self, _db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(async { Ok(()) })
    }

    fn browser_prefix(&self) -> Option<&'static str> {
        Some(PREFIX)
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let csrf = Csrf::from_config(cx.config());
            let router = axum::Router::new()
                // To the identity provider, with a state cookie.
                .route(
                    "/start",
                    axum::routing::get(|| async {
                        let cookie = state_cookie()
                            .set("abc123", Duration::from_secs(300))
                            .unwrap();
                        (
                            StatusCode::SEE_OTHER,
                            [
                                (
                                    header::LOCATION,
                                    "https://idp.example/login?state=abc123".parse().unwrap(),
                                ),
                                (header::SET_COOKIE, cookie),
                            ],
                        )
                    }),
                )
                .route(
                    "/whoami",
                    axum::routing::get(|client: ClientInfo, headers: HeaderMap| async move {
                        let state = match state_cookie().read(&headers) {
                            Ok(state) => state,
                            Err(e) => return e.into_response(),
                        };
                        format!(
                            "ip={} proto={} host={} via_edge={} state={} other={}",
                            client.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                            client.proto,
                            client.host.unwrap_or_default(),
                            client.via_edge,
                            state.unwrap_or_default(),
                            twig_web::cookie::read_cookie(&headers, "other")
                                .ok()
                                .flatten()
                                .unwrap_or_default(),
                        )
                        .into_response()
                    }),
                )
                // The state-changing form POST back.
                .route(
                    "/finish",
                    axum::routing::post(|headers: HeaderMap, body: String| async move {
                        match state_cookie().read(&headers) {
                            Err(e) => e.into_response(),
                            Ok(None) => (StatusCode::BAD_REQUEST, "no state").into_response(),
                            Ok(Some(state)) => (
                                [(header::SET_COOKIE, state_cookie().clear())],
                                format!("finished state={state} body={body}"),
                            )
                                .into_response(),
                        }
                    })
                    .route_layer(csrf.layer()),
                );
            cx.browser_routes(PREFIX, router);
            Ok(())
        })
    }
}

/// Every module the binary knows, and the test's.
fn known() -> Vec<&'static dyn Module> {
    let mut all = twig_identity::MODULES.to_vec();
    all.push(&BROWSER_TEST);
    all
}

struct Process {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    _db: TestDatabase,
}

impl Process {
    async fn start(mut config: Config, services: &[&'static dyn Module]) -> Self {
        twig_testkit::init_logs();
        let db = TestDatabase::new(Backend::Sqlite).await;
        config.database.url = Secret::new(db.url.clone());
        config.auth.internal_token = Some(Secret::new("browser-internal-token-0123456789abcdef"));
        config.edit::<twig_secrets_vault::VaultConfig>(|vault| {
            vault
                .master_keys
                .insert("1".into(), Secret::new(TEST_MASTER_KEY));
        });
        let conn = twig_identity::open_database(&config).await.unwrap();
        twig_identity::migrate(&conn, services).await.unwrap();
        let suite = twig_identity::build_known(
            &config,
            conn,
            services,
            &known(),
            twig_identity::Deps::default(),
        )
        .await
        .expect("build the suite");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            twig_identity::run(listener, suite, Duration::from_secs(5), async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            addr,
            shutdown: Some(tx),
            server,
            _db: db,
        }
    }

    async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        let _ = self.server.await;
    }
}

fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn finish(extra: &str) -> String {
    format!(
        "POST /browser-test/finish HTTP/1.1\r\nCookie: __Secure-state=abc123\r\n\
         Content-Type: application/x-www-form-urlencoded{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_routes_on_the_main_port() {
    let metrics = twig_server::install_recorder().expect("a recorder");
    let mut config = Config::default();
    config.server.public_origins = vec![SITE.into()];
    config.server.cors_origins = vec!["https://app.example.com".into()];
    let mut services = twig_identity::MODULES.to_vec();
    services.push(&BROWSER_TEST);
    let app = Process::start(config, &services).await;

    // The redirect with its cookie, without any bearer token.
    let (status, headers, _) = http1(app.addr, "GET /browser-test/start HTTP/1.1", b"").await;
    assert!(status.contains(" 303"), "{status}");
    assert_eq!(
        header_values(&headers, "location"),
        ["https://idp.example/login?state=abc123"]
    );
    assert_eq!(
        header_values(&headers, "set-cookie"),
        ["__Secure-state=abc123; Max-Age=300; Path=/browser-test/; HttpOnly; Secure; SameSite=Lax"]
    );

    // The page sees its client and the cookie; no CORS for it, even from
    // an origin configured for gRPC-web.
    let (status, headers, body) = http1(
        app.addr,
        "GET /browser-test/whoami HTTP/1.1\r\nOrigin: https://app.example.com\r\n\
         Cookie: other=1; __Secure-state=abc123\r\nX-Forwarded-For: 203.0.113.9",
        b"",
    )
    .await;
    assert!(status.contains(" 200"), "{status}");
    let body = text(&body);
    assert!(
        body.starts_with("ip=127.0.0.1 proto=http host=127.0.0.1:"),
        "{body}"
    );
    assert!(
        body.ends_with("via_edge=false state=abc123 other=1"),
        "{body}"
    );
    assert!(
        headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-")),
        "{headers:?}"
    );
    let (status, headers, _) = http1(
        app.addr,
        "OPTIONS /browser-test/finish HTTP/1.1\r\nOrigin: https://app.example.com\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: x-twig-csrf",
        b"",
    )
    .await;
    assert!(!status.contains(" 200"), "{status}");
    assert!(
        headers
            .iter()
            .all(|(k, _)| !k.starts_with("access-control-")),
        "{headers:?}"
    );

    // A cookie sent twice is refused.
    let (status, _, body) = http1(
        app.addr,
        "GET /browser-test/whoami HTTP/1.1\r\nCookie: __Secure-state=a; __Secure-state=b",
        b"",
    )
    .await;
    assert!(status.contains(" 400"), "{status}");
    assert!(text(&body).contains("more than once"), "{}", text(&body));

    // The POST back: from the site's own page with the header.
    let (status, headers, body) = http1(
        app.addr,
        &finish(&format!("\r\nOrigin: {SITE}\r\nX-Twig-Csrf: 1")),
        b"code=xyz",
    )
    .await;
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(text(&body), "finished state=abc123 body=code=xyz");
    assert_eq!(
        header_values(&headers, "set-cookie"),
        ["__Secure-state=; Max-Age=0; Path=/browser-test/; HttpOnly; Secure; SameSite=Lax"]
    );

    // CSRF refusals: a form (no header), another site, null, no origin.
    for (extra, reason) in [
        (
            format!("\r\nOrigin: {SITE}"),
            "x-twig-csrf header is missing",
        ),
        (
            "\r\nOrigin: https://evil.example\r\nX-Twig-Csrf: 1".to_string(),
            "\"https://evil.example\" is not one of server.public_origins",
        ),
        (
            "\r\nOrigin: null\r\nX-Twig-Csrf: 1".to_string(),
            "Origin null",
        ),
        ("\r\nX-Twig-Csrf: 1".to_string(), "no Origin or Referer"),
    ] {
        let (status, _, body) = http1(app.addr, &finish(&extra), b"code=xyz").await;
        assert!(status.contains(" 403"), "{extra:?}: {status}");
        assert!(text(&body).contains(reason), "{extra:?}: {}", text(&body));
    }
    // The Referer stands in for a missing Origin.
    let (status, _, _) = http1(
        app.addr,
        &finish(&format!(
            "\r\nReferer: {SITE}/browser-test/start\r\nX-Twig-Csrf: 1"
        )),
        b"",
    )
    .await;
    assert!(status.contains(" 200"), "{status}");

    // Metrics by route template.
    let page = metrics.render();
    for line in [
        r#"twig_http_requests_total{route="GET /browser-test/start",status="303"} 1"#,
        r#"twig_http_requests_total{route="GET /browser-test/whoami",status="200"} 1"#,
        r#"twig_http_requests_total{route="GET /browser-test/whoami",status="400"} 1"#,
        r#"twig_http_requests_total{route="POST /browser-test/finish",status="200"} 2"#,
        r#"twig_http_requests_total{route="POST /browser-test/finish",status="403"} 4"#,
    ] {
        assert!(page.contains(line), "{line} missing from\n{page}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_forwards_browser_routes_to_the_module_process() {
    // The module's own process: it believes the edge's credential only.
    let mut config = Config::default();
    config.server.public_origins = vec![SITE.into()];
    config.auth.edge_token = Some(Secret::new(EDGE));
    let module = Process::start(config, &[&BROWSER_TEST]).await;

    // The edge: the module at its remote address; the client comes
    // through a proxy the edge trusts.
    let mut config = Config::default();
    config.remote.token = Some(Secret::new(EDGE));
    config
        .remote
        .set_address("browser-test", format!("http://{}", module.addr));
    config.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    let edge = Process::start(config, &[&twig_edge::MODULE]).await;

    // The client's address (as the edge decided it), host, cookies.
    let (status, _, body) = http1(
        edge.addr,
        "GET /browser-test/whoami HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n\
         Cookie: other=1; __Secure-state=abc123\r\nX-Twig-Internal-Token: a-guess",
        b"",
    )
    .await;
    assert!(status.contains(" 200"), "{status}: {}", text(&body));
    assert_eq!(
        text(&body),
        format!(
            "ip=203.0.113.7 proto=http host={} via_edge=true state=abc123 other=1",
            edge.addr
        )
    );

    // Redirects and cookies come back as the module set them.
    let (status, headers, _) = http1(edge.addr, "GET /browser-test/start?x=1 HTTP/1.1", b"").await;
    assert!(status.contains(" 303"), "{status}");
    assert_eq!(
        header_values(&headers, "location"),
        ["https://idp.example/login?state=abc123"]
    );
    assert_eq!(
        header_values(&headers, "set-cookie"),
        ["__Secure-state=abc123; Max-Age=300; Path=/browser-test/; HttpOnly; Secure; SameSite=Lax"]
    );

    // The POST back, body and all, and its CSRF check in the module.
    let (status, headers, body) = http1(
        edge.addr,
        &finish(&format!("\r\nOrigin: {SITE}\r\nX-Twig-Csrf: 1")),
        b"code=xyz",
    )
    .await;
    assert!(status.contains(" 200"), "{status}");
    assert_eq!(text(&body), "finished state=abc123 body=code=xyz");
    assert_eq!(header_values(&headers, "set-cookie").len(), 1);
    let (status, _, _) = http1(edge.addr, &finish(&format!("\r\nOrigin: {SITE}")), b"").await;
    assert!(status.contains(" 403"), "{status}");

    // Straight to the module's process: forwarded headers without the
    // edge's credential are not believed; a forged credential is refused.
    let (status, _, body) = http1(
        module.addr,
        "GET /browser-test/whoami HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n\
         X-Forwarded-Host: evil.example",
        b"",
    )
    .await;
    assert!(status.contains(" 200"), "{status}");
    let body = text(&body);
    assert!(
        body.starts_with("ip=127.0.0.1 proto=http host=127.0.0.1:"),
        "{body}"
    );
    assert!(body.contains("via_edge=false"), "{body}");
    let (status, _, _) = http1(
        module.addr,
        "GET /browser-test/whoami HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n\
         X-Twig-Internal-Token: browser-edge-token-0123456789abcdef0124",
        b"",
    )
    .await;
    assert!(status.contains(" 403"), "{status}");

    edge.stop().await;
    module.stop().await;
}

/// A module claiming a path inside the test module's prefix.
struct Clash;

static CLASH: Clash = Clash;

impl Module for Clash {
    fn name(&self) -> &'static str {
        "browser-clash"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[]
    }

    fn migrate<'a>(&'a self, _db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(async { Ok(()) })
    }

    fn browser_prefix(&self) -> Option<&'static str> {
        Some("/browser-test/clash/")
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            cx.browser_routes("/browser-test/clash/", axum::Router::new());
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_browser_prefixes_stop_the_build() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut config = Config::default();
    config.database.url = Secret::new(db.url.clone());
    config.remote.token = Some(Secret::new(EDGE));
    let conn = twig_identity::open_database(&config).await.unwrap();
    let known: Vec<&'static dyn Module> = vec![&BROWSER_TEST, &CLASH];
    // Both here.
    let err = twig_identity::build_known(
        &config,
        conn.clone(),
        &[&BROWSER_TEST, &CLASH],
        &known,
        twig_identity::Deps::default(),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        format!("{err:#}").contains("overlaps browser-test's"),
        "{err:#}"
    );
    // One here, one at a remote address.
    config
        .remote
        .set_address("browser-clash", "http://127.0.0.1:1");
    let err = twig_identity::build_known(
        &config,
        conn,
        &[&BROWSER_TEST],
        &known,
        twig_identity::Deps::default(),
    )
    .await
    .err()
    .expect("refused");
    assert!(
        format!("{err:#}").contains("overlaps browser-test's"),
        "{err:#}"
    );
}
