//! Where a request may not go: every refusal happens before any
//! connection (the local servers see none).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use twig_outbound::{AddressClass, OutboundConfig, OutboundError, Purpose};

use crate::common::{Reply, TestServer};
use crate::{client, get, local_config};

async fn refused(config: &OutboundConfig, url: &str) -> OutboundError {
    // Built first: loading the TLS roots is not part of the refusal.
    let client = client(config);
    let started = Instant::now();
    let error = client.send(Purpose::JWKS, get(url)).await.expect_err(url);
    // No connection attempt: nothing waited for a connect timeout.
    assert!(started.elapsed() < Duration::from_millis(500), "{url}");
    error
}

fn assert_forbidden(error: &OutboundError, want: AddressClass) {
    match error {
        OutboundError::ForbiddenAddress { class, .. } => assert_eq!(*class, want, "{error}"),
        other => panic!("expected ForbiddenAddress({want:?}), got {other:?}"),
    }
    assert!(error.to_string().contains("allow_networks"), "{error}");
}

#[tokio::test]
async fn default_refuses_loopback_literal() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    let error = refused(&OutboundConfig::default(), &server.url("/")).await;
    assert_forbidden(&error, AddressClass::Loopback);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn default_refuses_localhost_after_resolution() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    let url = format!("http://localhost:{}/", server.addr.port());
    let error = refused(&OutboundConfig::default(), &url).await;
    match &error {
        OutboundError::ForbiddenAddress { host, address, .. } => {
            assert_eq!(host, "localhost");
            assert!(address.is_loopback(), "{address}");
        }
        other => panic!("expected ForbiddenAddress, got {other:?}"),
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn default_refuses_ipv6_loopback() {
    let server = TestServer::try_start_on(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]), |_, _| {
        Reply::ok("secret")
    })
    .await;
    let port = server.as_ref().map_or(80, |s| s.addr.port());
    let error = refused(&OutboundConfig::default(), &format!("http://[::1]:{port}/")).await;
    assert_forbidden(&error, AddressClass::Loopback);
    if let Some(server) = server {
        assert_eq!(server.connections(), 0);
    }
}

#[tokio::test]
async fn default_refuses_cloud_metadata() {
    let error = refused(
        &OutboundConfig::default(),
        "http://169.254.169.254/latest/meta-data",
    )
    .await;
    assert_forbidden(&error, AddressClass::LinkLocal);
}

#[tokio::test]
async fn default_refuses_ipv4_mapped_loopback() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    let url = format!("http://[::ffff:127.0.0.1]:{}/", server.addr.port());
    let error = refused(&OutboundConfig::default(), &url).await;
    assert_forbidden(&error, AddressClass::Ipv4Mapped);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn default_refuses_numeric_forms_of_loopback() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    let port = server.addr.port();
    for url in [
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
    ] {
        let error = refused(&OutboundConfig::default(), &url).await;
        assert_forbidden(&error, AddressClass::Loopback);
        match error {
            OutboundError::ForbiddenAddress { address, .. } => {
                assert_eq!(address, IpAddr::from([127, 0, 0, 1]), "{url}");
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn default_refuses_private_ranges() {
    for url in [
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.5.4/",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[64:ff9b::7f00:1]/",
    ] {
        let error = refused(&OutboundConfig::default(), url).await;
        assert!(
            matches!(error, OutboundError::ForbiddenAddress { .. }),
            "{url}: {error:?}"
        );
    }
}

#[tokio::test]
async fn only_http_and_https_schemes() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    let config = local_config();
    for url in [
        "file://localhost/etc/passwd".to_owned(),
        format!("ftp://127.0.0.1:{}/", server.addr.port()),
        format!("gopher://127.0.0.1:{}/", server.addr.port()),
    ] {
        let error = refused(&config, &url).await;
        assert!(
            matches!(error, OutboundError::ForbiddenScheme { .. }),
            "{url}: {error:?}"
        );
    }
    // A URL without an authority cannot even be expressed as a request.
    let error = client(&config)
        .get_json::<serde_json::Value>(Purpose::JWKS, "file:///etc/passwd")
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::InvalidRequest { .. }),
        "{error:?}"
    );
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn credentials_in_urls_are_refused() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    // Allowed address: the refusal is for the credentials.
    let config = local_config();
    for url in [
        format!("http://user:pw@127.0.0.1:{}/", server.addr.port()),
        format!("http://user@127.0.0.1:{}/", server.addr.port()),
        "http://user:pw@idp.example.com/".to_owned(),
    ] {
        let error = refused(&config, &url).await;
        assert!(
            matches!(error, OutboundError::CredentialsInUrl),
            "{url}: {error:?}"
        );
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn allowed_network_is_reached() {
    let server = TestServer::start(|_, seen| Reply::ok(&format!("hello {}", seen.path))).await;
    let response = client(&local_config())
        .send(Purpose::JWKS, get(&server.url("/keys?x=1")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_ref(), b"hello /keys?x=1");
    assert_eq!(response.headers()["content-type"], "text/plain");
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .header("user-agent")
            .unwrap()
            .starts_with("twig-identity/")
    );
    assert_eq!(seen[0].header("accept-encoding"), None);
}

#[tokio::test]
async fn allowed_network_reached_by_name() {
    // localhost may also resolve to ::1, which stays refused: only the
    // allowed 127.0.0.1 is connected to.
    let server = TestServer::start(|_, _| Reply::ok("by name")).await;
    let url = format!("http://localhost:{}/", server.addr.port());
    let response = client(&local_config())
        .send(Purpose::JWKS, get(&url))
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), b"by name");
}

#[tokio::test]
async fn allowing_one_address_does_not_allow_its_neighbours() {
    let neighbour =
        TestServer::start_on(IpAddr::from([127, 0, 0, 2]), |_, _| Reply::ok("no")).await;
    let error = refused(&local_config(), &neighbour.url("/")).await;
    assert_forbidden(&error, AddressClass::Loopback);
    assert_eq!(neighbour.connections(), 0);
}

#[tokio::test]
async fn non_2xx_statuses_are_responses() {
    let server = TestServer::start(|_, _| Reply::status(404, &[], b"nope")).await;
    let client = client(&local_config());
    let response = client
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.body().as_ref(), b"nope");
    let error = client
        .get_json::<serde_json::Value>(Purpose::JWKS, &server.url("/"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::Status { status } if status == 404),
        "{error:?}"
    );
}

#[tokio::test]
async fn get_json_decodes() {
    let server = TestServer::start(|_, seen| {
        assert_eq!(seen.header("accept"), Some("application/json"));
        Reply::status(
            200,
            &[("Content-Type", "application/json")],
            br#"{"keys":[]}"#,
        )
    })
    .await;
    let value: serde_json::Value = client(&local_config())
        .get_json(Purpose::JWKS, &server.url("/jwks"))
        .await
        .unwrap();
    assert_eq!(value, serde_json::json!({ "keys": [] }));
}

#[tokio::test]
async fn http_client_shape_for_openidconnect() {
    let server =
        TestServer::start(|_, seen| Reply::ok(std::str::from_utf8(&seen.body).unwrap())).await;
    let outbound = client(&local_config());
    let http_client = outbound.http_client(Purpose::TOKEN_EXCHANGE);
    let response: http::Response<Vec<u8>> =
        http_client(crate::post(&server.url("/token"), "code=abc"))
            .await
            .unwrap();
    assert_eq!(response.body(), b"code=abc");
}

#[tokio::test]
async fn check_url_without_sending() {
    let client = client(&OutboundConfig::default());
    client
        .check_url("https://login.example.com/.well-known/openid-configuration")
        .unwrap();
    for (url, ok) in [
        ("http://169.254.169.254/latest/meta-data", false),
        ("http://[::ffff:10.0.0.1]/", false),
        ("ftp://idp.example.com/", false),
        ("https://u:p@idp.example.com/", false),
        ("not a url", false),
        ("/relative", false),
    ] {
        assert_eq!(client.check_url(url).is_ok(), ok, "{url}");
    }
}

/// Spellings of "this host" that Linux connects to the local server
/// (0.0.0.0 and [::] reach a socket bound on loopback) or that name
/// loopback in another form: each is refused before any connection.
#[tokio::test]
async fn default_refuses_other_spellings_of_this_host() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    let port = server.addr.port();
    for host in [
        "0.0.0.0",
        "0",
        "[::]",
        "[::ffff:7f00:1]",
        "[0:0:0:0:0:ffff:127.0.0.1]",
        "127.0.0.1.",
        "LOCALHOST",
    ] {
        let url = format!("http://{host}:{port}/");
        let error = refused(&OutboundConfig::default(), &url).await;
        assert!(
            matches!(error, OutboundError::ForbiddenAddress { .. }),
            "{url}: {error:?}"
        );
    }
    // A fully qualified `localhost.` either does not resolve here or
    // resolves to loopback: refused either way, never reached. It goes to
    // the system resolver, whose answer may take a while here; the
    // server's connection count, not the time, shows it was not reached.
    let url = format!("http://localhost.:{port}/");
    let error = client(&OutboundConfig::default())
        .send(Purpose::JWKS, get(&url))
        .await
        .expect_err(&url);
    assert!(
        matches!(
            error,
            OutboundError::ForbiddenAddress { .. } | OutboundError::Transport(_)
        ),
        "{url}: {error:?}"
    );
    assert_eq!(server.connections(), 0);
}
