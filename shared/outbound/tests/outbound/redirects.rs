//! Redirects: refused by default, followed hop by hop under the same
//! rules when allowed.

use std::net::IpAddr;

use http::StatusCode;
use twig_outbound::{AddressClass, OutboundConfig, OutboundError, Purpose};

use crate::common::{Reply, TestServer};
use crate::{client, get, local_config, post};

fn following(max_redirects: u32) -> OutboundConfig {
    OutboundConfig {
        max_redirects,
        ..local_config()
    }
}

/// `/` redirects to `/next`, which answers.
async fn one_hop() -> TestServer {
    TestServer::start(|_, seen| match seen.path.as_str() {
        "/" => Reply::redirect(302, "/next?token=secret"),
        _ => Reply::ok("arrived"),
    })
    .await
}

#[tokio::test]
async fn refused_by_default() {
    let server = one_hop().await;
    let error = client(&local_config())
        .send(Purpose::OIDC_DISCOVERY, get(&server.url("/")))
        .await
        .unwrap_err();
    match &error {
        OutboundError::RedirectRefused {
            status, location, ..
        } => {
            assert_eq!(*status, StatusCode::FOUND);
            assert_eq!(*location, server.url("/next"), "query dropped");
        }
        other => panic!("expected RedirectRefused, got {other:?}"),
    }
    assert!(error.to_string().contains("max_redirects"), "{error}");
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn followed_when_allowed() {
    let server = one_hop().await;
    let response = client(&following(1))
        .send(Purpose::OIDC_DISCOVERY, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.body().as_ref(), b"arrived");
    let paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/", "/next?token=secret"]);
}

#[tokio::test]
async fn a_chain_longer_than_the_limit() {
    // /0 → /1 → /2 → … forever.
    let server =
        TestServer::start(|index, _| Reply::redirect(307, &format!("/{}", index + 1))).await;
    let error = client(&following(2))
        .send(Purpose::OIDC_DISCOVERY, get(&server.url("/0")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::TooManyRedirects { limit: 2 }),
        "{error:?}"
    );
    assert_eq!(server.requests().len(), 3, "the first request and two hops");
}

#[tokio::test]
async fn a_hop_to_a_refused_address() {
    // Only 127.0.0.1 is allowed; 127.0.0.2 is loopback like any other.
    let inner = TestServer::start_on(IpAddr::from([127, 0, 0, 2]), |_, _| Reply::ok("inner")).await;
    let location = inner.url("/admin");
    let outer = TestServer::start(move |_, _| Reply::redirect(302, &location)).await;
    let error = client(&following(3))
        .send(Purpose::SAML_METADATA, get(&outer.url("/")))
        .await
        .unwrap_err();
    match error {
        OutboundError::ForbiddenAddress { address, class, .. } => {
            assert_eq!(address, IpAddr::from([127, 0, 0, 2]));
            assert_eq!(class, AddressClass::Loopback);
        }
        other => panic!("expected ForbiddenAddress, got {other:?}"),
    }
    assert_eq!(inner.connections(), 0);
}

#[tokio::test]
async fn a_hop_to_cloud_metadata_or_another_scheme() {
    for (location, metadata) in [
        ("http://169.254.169.254/latest/meta-data/", true),
        ("http://[::ffff:169.254.169.254]/", true),
        ("file://localhost/etc/passwd", false),
        ("gopher://127.0.0.1:70/", false),
    ] {
        let outer = TestServer::start(move |_, _| Reply::redirect(301, location)).await;
        let error = client(&following(3))
            .send(Purpose::JWKS, get(&outer.url("/")))
            .await
            .unwrap_err();
        if metadata {
            assert!(
                matches!(error, OutboundError::ForbiddenAddress { .. }),
                "{location}: {error:?}"
            );
        } else {
            assert!(
                matches!(error, OutboundError::ForbiddenScheme { .. }),
                "{location}: {error:?}"
            );
        }
    }
}

#[tokio::test]
async fn credentials_stay_within_the_origin() {
    // Another origin: same address, other port.
    let other = TestServer::start(|_, _| Reply::ok("other")).await;
    let other_url = other.url("/elsewhere");
    let first = TestServer::start(move |_, seen| match seen.path.as_str() {
        "/start" => Reply::redirect(302, "/same"),
        "/same" => Reply::redirect(307, &other_url),
        _ => Reply::ok("?"),
    })
    .await;
    let request = http::Request::get(first.url("/start"))
        .header("authorization", "Bearer s3cret")
        .header("cookie", "session=s3cret")
        .header("x-kept", "yes")
        .body(Vec::new())
        .unwrap();
    let response = client(&following(5))
        .send(Purpose::USERINFO, request)
        .await
        .unwrap();
    assert_eq!(response.body().as_ref(), b"other");
    let same = &first.requests()[1];
    assert_eq!(same.path, "/same");
    assert_eq!(same.header("authorization"), Some("Bearer s3cret"));
    let across = &other.requests()[0];
    assert_eq!(across.header("authorization"), None);
    assert_eq!(across.header("cookie"), None);
    assert_eq!(across.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn see_other_turns_a_post_into_a_get_and_307_keeps_it() {
    let server = TestServer::start(|_, seen| match seen.path.as_str() {
        "/303" => Reply::redirect(303, "/landing"),
        "/307" => Reply::redirect(307, "/landing"),
        _ => Reply::ok(&format!(
            "{} {}",
            seen.method,
            String::from_utf8_lossy(&seen.body)
        )),
    })
    .await;
    let client = client(&following(1));
    let after_303 = client
        .send(Purpose::TOKEN_EXCHANGE, post(&server.url("/303"), "a=1"))
        .await
        .unwrap();
    assert_eq!(after_303.body().as_ref(), b"GET ");
    let after_307 = client
        .send(Purpose::TOKEN_EXCHANGE, post(&server.url("/307"), "a=1"))
        .await
        .unwrap();
    assert_eq!(after_307.body().as_ref(), b"POST a=1");
}

#[tokio::test]
async fn a_redirect_without_location_is_an_answer() {
    let server = TestServer::start(|_, _| Reply::status(302, &[], b"")).await;
    let response = client(&local_config())
        .send(Purpose::JWKS, get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(response.status(), 302);
}
