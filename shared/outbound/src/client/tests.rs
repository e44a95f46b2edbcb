//! The resolver path with a DNS of the tests' own: names that resolve to
//! refused addresses, to a mix, and names that change their answer
//! (rebinding).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::CertificateDer;

use super::*;
use crate::address::AddressClass;
use crate::resolver::LookupFuture;

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{Reply, TestServer};

/// Answers from a table; each name's answers are served in turn, the
/// last one repeated.
#[derive(Default)]
struct TableLookup {
    answers: Mutex<HashMap<String, Vec<Vec<IpAddr>>>>,
    lookups: AtomicUsize,
}

impl TableLookup {
    fn with(entries: &[(&str, &[&[&str]])]) -> Arc<Self> {
        let table = entries
            .iter()
            .map(|(name, answers)| {
                let answers = answers
                    .iter()
                    .map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect())
                    .collect();
                (name.to_string(), answers)
            })
            .collect();
        Arc::new(Self {
            answers: Mutex::new(table),
            lookups: AtomicUsize::new(0),
        })
    }
}

impl Lookup for TableLookup {
    fn lookup(&self, host: String) -> LookupFuture {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let mut table = self.answers.lock().unwrap();
        let answer = match table.get_mut(&host) {
            Some(answers) if answers.len() > 1 => Ok(answers.remove(0)),
            Some(answers) => Ok(answers[0].clone()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such name")),
        };
        Box::pin(async move {
            answer.map(|ips| ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())
        })
    }
}

fn config(allow: &[&str]) -> OutboundConfig {
    OutboundConfig {
        allow_networks: allow.iter().map(|n| n.parse().unwrap()).collect(),
        connect_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(2),
        ..OutboundConfig::default()
    }
}

fn get(url: &str) -> http::Request<Vec<u8>> {
    http::Request::get(url).body(Vec::new()).unwrap()
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused_without_connecting() {
    let server = TestServer::start(|_, _| Reply::ok("secret")).await;
    let lookup = TableLookup::with(&[("idp.test", &[&["127.0.0.1"]])]);
    let client = OutboundClient::with_lookup(&config(&[]), lookup, &[]).unwrap();
    let url = format!("http://idp.test:{}/", server.addr.port());
    let error = client.send(Purpose::JWKS, get(&url)).await.unwrap_err();
    match error {
        OutboundError::ForbiddenAddress {
            host,
            address,
            class,
        } => {
            assert_eq!(host, "idp.test");
            assert_eq!(address, IpAddr::from([127, 0, 0, 1]));
            assert_eq!(class, AddressClass::Loopback);
        }
        other => panic!("expected ForbiddenAddress, got {other:?}"),
    }
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn only_the_allowed_addresses_of_a_name_are_connected_to() {
    let server = TestServer::start(|_, _| Reply::ok("public")).await;
    // 10.0.0.1 first: were it tried, the test would time out or fail.
    let lookup = TableLookup::with(&[("mixed.test", &[&["10.0.0.1", "127.0.0.1"]])]);
    let client = OutboundClient::with_lookup(&config(&["127.0.0.1/32"]), lookup, &[]).unwrap();
    let url = format!("http://mixed.test:{}/", server.addr.port());
    let response = client.send(Purpose::JWKS, get(&url)).await.unwrap();
    assert_eq!(response.body().as_ref(), b"public");
}

#[tokio::test]
async fn rebinding_to_a_refused_address_is_caught_at_connect() {
    let allowed = TestServer::start(|_, _| Reply::ok("first")).await;
    let port = allowed.addr.port();
    // Same name: first an allowed address, then a refused one.
    let lookup = TableLookup::with(&[("rebind.test", &[&["127.0.0.1"], &["127.0.0.2"]])]);
    let client = OutboundClient::with_lookup(&config(&["127.0.0.1/32"]), lookup, &[]).unwrap();
    let url = format!("http://rebind.test:{port}/");
    let first = client.send(Purpose::JWKS, get(&url)).await.unwrap();
    assert_eq!(first.body().as_ref(), b"first");
    // The server closed that connection: the next one resolves again.
    let error = client.send(Purpose::JWKS, get(&url)).await.unwrap_err();
    assert!(
        matches!(error, OutboundError::ForbiddenAddress { address, .. } if address == IpAddr::from([127, 0, 0, 2])),
        "{error:?}"
    );
    assert_eq!(allowed.connections(), 1);
}

#[tokio::test]
async fn a_redirect_to_a_name_resolving_to_a_refused_address_is_refused() {
    let inner = TestServer::start_on(IpAddr::from([127, 0, 0, 2]), |_, _| Reply::ok("inner")).await;
    let location = format!("http://internal.test:{}/", inner.addr.port());
    let outer = TestServer::start(move |_, _| Reply::redirect(302, &location)).await;
    let lookup = TableLookup::with(&[("internal.test", &[&["127.0.0.2"]])]);
    let client = OutboundClient::with_lookup(
        &OutboundConfig {
            max_redirects: 3,
            ..config(&["127.0.0.1/32"])
        },
        lookup,
        &[],
    )
    .unwrap();
    let error = client
        .send(Purpose::OIDC_DISCOVERY, get(&outer.url("/")))
        .await
        .unwrap_err();
    assert!(
        matches!(error, OutboundError::ForbiddenAddress { ref host, .. } if host == "internal.test"),
        "{error:?}"
    );
    assert_eq!(inner.connections(), 0);
    assert_eq!(outer.requests().len(), 1);
}

#[tokio::test]
async fn an_unknown_name_is_a_transport_error_and_retried() {
    let lookup = TableLookup::with(&[]);
    let client = OutboundClient::with_lookup(
        &OutboundConfig {
            retry: RetryConfig {
                attempts: 2,
                first_backoff: Duration::from_millis(10),
                max_backoff: Duration::from_millis(10),
                jitter: false,
            },
            ..config(&[])
        },
        lookup.clone(),
        &[],
    )
    .unwrap();
    let error = client
        .send(Purpose::JWKS, get("http://nowhere.test/"))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Transport(_)), "{error:?}");
    assert_eq!(lookup.lookups.load(Ordering::SeqCst), 2, "two attempts");
}

#[tokio::test]
async fn the_send_future_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let client = OutboundClient::new(&OutboundConfig::default()).unwrap();
    let future = client.send(Purpose::JWKS, get("https://example.com/"));
    is_send(&future);
}

/// A TLS server for `idp.test` with a self-signed certificate, and that
/// certificate.
fn tls_identity() -> (tokio_rustls::TlsAcceptor, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["idp.test".to_owned()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key.into())
    .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert)
}

#[tokio::test]
async fn https_reaches_a_trusted_server() {
    let (tls, cert) = tls_identity();
    let server = TestServer::start_tls(tls, |_, _| Reply::ok("over tls")).await;
    let lookup = TableLookup::with(&[("idp.test", &[&["127.0.0.1"]])]);
    let client = OutboundClient::with_lookup(&config(&["127.0.0.1/32"]), lookup, &[cert]).unwrap();
    let url = format!("https://idp.test:{}/", server.addr.port());
    let response = client.send(Purpose::JWKS, get(&url)).await.unwrap();
    assert_eq!(response.body().as_ref(), b"over tls");
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let (tls, _) = tls_identity();
    let server = TestServer::start_tls(tls, |_, _| Reply::ok("over tls")).await;
    let lookup = TableLookup::with(&[("idp.test", &[&["127.0.0.1"]])]);
    let client = OutboundClient::with_lookup(&config(&["127.0.0.1/32"]), lookup, &[]).unwrap();
    let url = format!("https://idp.test:{}/", server.addr.port());
    let error = client.send(Purpose::JWKS, get(&url)).await.unwrap_err();
    assert!(matches!(error, OutboundError::Transport(_)), "{error:?}");
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn an_https_redirect_to_http_is_refused() {
    let plain = TestServer::start(|_, _| Reply::ok("plain")).await;
    let location = format!("http://idp.test:{}/", plain.addr.port());
    let (tls, cert) = tls_identity();
    let secure = TestServer::start_tls(tls, move |_, _| Reply::redirect(302, &location)).await;
    let lookup = TableLookup::with(&[("idp.test", &[&["127.0.0.1"]])]);
    let client = OutboundClient::with_lookup(
        &OutboundConfig {
            max_redirects: 3,
            ..config(&["127.0.0.1/32"])
        },
        lookup,
        &[cert],
    )
    .unwrap();
    let url = format!("https://idp.test:{}/", secure.addr.port());
    let error = client.send(Purpose::JWKS, get(&url)).await.unwrap_err();
    assert!(
        matches!(error, OutboundError::RedirectRefused { reason, .. } if reason.contains("downgrade")),
        "{error:?}"
    );
    assert_eq!(secure.requests().len(), 1);
    assert_eq!(plain.connections(), 0);
}
