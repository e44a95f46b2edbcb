//! [`OutboundClient`]: one request in, one response (body read and
//! capped) out, with the address rules, redirects and retries applied.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use twig_clock::{Clock, SystemClock};

use bytes::{Bytes, BytesMut};
use http::header::{
    AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, LOCATION,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, StatusCode};
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::Instrument;

use crate::address::AddressPolicy;
use crate::config::{OutboundConfig, OutboundConfigError, RetryConfig};
use crate::error::{OutboundError, TimeoutPhase};
use crate::purpose::Purpose;
use crate::resolver::{AddressRefused, GuardedResolver, Lookup, SystemLookup};
use crate::rules;

/// Put this in a request's extensions to allow retries of a method that
/// is not GET or HEAD, when sending it twice does no harm (e.g. a token
/// revocation, RFC 7009).
#[derive(Debug, Clone, Copy, Default)]
pub struct Idempotent;

/// One hop's request, rebuilt for each attempt.
struct Outgoing {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Bytes,
}

/// The future of [`OutboundClient::http_client`]'s function.
pub type VecResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Vec<u8>>, OutboundError>> + Send>>;

/// The one way out of the process over HTTP. Cheap to clone (the
/// connection pool is shared).
#[derive(Clone)]
pub struct OutboundClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    http: reqwest::Client,
    /// Whose now a `Retry-After` date is measured from.
    clock: Arc<dyn Clock>,
    policy: Arc<AddressPolicy>,
    max_body_bytes: u64,
    max_redirects: u32,
    total_timeout: Duration,
    retry: RetryConfig,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("policy", &self.inner.policy)
            .field("max_body_bytes", &self.inner.max_body_bytes)
            .field("max_redirects", &self.inner.max_redirects)
            .field("total_timeout", &self.inner.total_timeout)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client for `config`, which is validated first.
    pub fn new(config: &OutboundConfig) -> Result<Self, OutboundConfigError> {
        Self::with_lookup(config, Arc::new(SystemLookup), &[])
    }

    /// A client resolving names through `lookup` and trusting
    /// `extra_roots` besides the usual ones (tests put a DNS table here to
    /// play rebinding, and their own certificate).
    pub(crate) fn with_lookup(
        config: &OutboundConfig,
        lookup: Arc<dyn Lookup>,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, OutboundConfigError> {
        config.validate()?;
        let policy = Arc::new(AddressPolicy::new(config.allow_networks.clone()));
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config(extra_roots).map_err(OutboundConfigError::Tls)?)
            .dns_resolver(GuardedResolver::new(policy.clone(), lookup))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .referer(false)
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(config.user_agent.as_str())
            .build()
            .map_err(OutboundConfigError::Build)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                clock: Arc::new(SystemClock),
                policy,
                max_body_bytes: config.max_body_bytes,
                max_redirects: config.max_redirects,
                total_timeout: config.total_timeout,
                retry: config.retry.clone(),
            }),
        })
    }

    /// The same client, reading the time from `clock` (the composition's
    /// clock, so that tests can move it).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        Arc::make_mut(&mut self.inner).clock = clock;
        self
    }

    /// The checks that need no network, for a URL an administrator is
    /// about to save (an IdP's metadata or discovery URL): a valid
    /// absolute http(s) URL, no credentials, and, when the host is an
    /// address, one the rules allow. A host name is checked only when a
    /// request resolves it.
    pub fn check_url(&self, url: &str) -> Result<(), OutboundError> {
        let uri: http::Uri = url.parse().map_err(|error| OutboundError::InvalidRequest {
            reason: format!("the URL is not a valid URI: {error}"),
        })?;
        rules::check_url(&rules::parse(&uri)?, &self.inner.policy)
    }

    /// Sends `request` and reads the whole response body (at most
    /// `max_body_bytes`).
    ///
    /// Any status is a response, not an error: the caller decides what a
    /// 4xx or 5xx means. What is an error: a URL or address the rules
    /// refuse, a redirect not followed, a timeout, a body over the cap, a
    /// broken connection. Idempotent requests (GET, HEAD, or carrying
    /// [`Idempotent`]) are retried after a connection failure, a timeout
    /// of one attempt, or a 429/502/503/504 answer, within
    /// `total_timeout`.
    ///
    /// The `Host`, `Content-Length`, `Transfer-Encoding` and `Connection`
    /// headers of `request` are ignored (set from the URL and the body).
    pub async fn send(
        &self,
        purpose: Purpose,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Bytes>, OutboundError> {
        let started = Instant::now();
        let deadline = started + self.inner.total_timeout;
        let span = tracing::info_span!(
            "outbound",
            purpose = purpose.as_str(),
            method = %request.method(),
            host = request.uri().host().unwrap_or_default(),
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
            redirects = tracing::field::Empty,
        );
        let sending = self.send_within(purpose, request, deadline);
        let result = match tokio::time::timeout_at(deadline, sending)
            .instrument(span.clone())
            .await
        {
            Ok(result) => result,
            Err(_) => Err(OutboundError::Timeout {
                phase: TimeoutPhase::Total,
            }),
        };
        let outcome = match &result {
            Ok(response) => {
                span.record("status", response.status().as_u16());
                status_outcome(response.status())
            }
            Err(error) => {
                tracing::debug!(parent: &span, error = %error_chain(error), "outbound request failed");
                error.outcome()
            }
        };
        metrics::counter!(
            "twig_outbound_requests_total",
            "purpose" => purpose.as_str(),
            "outcome" => outcome,
        )
        .increment(1);
        metrics::histogram!("twig_outbound_duration_seconds", "purpose" => purpose.as_str())
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// [`send`](Self::send) with a `Vec<u8>` body in the response: the
    /// shape openidconnect 4 / oauth2 5 clients take.
    pub async fn send_vec(
        &self,
        purpose: Purpose,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let response = self.send(purpose, request).await?;
        Ok(response.map(Vec::from))
    }

    /// A function for openidconnect 4 / oauth2 5 (`AsyncHttpClient`):
    /// `client.exchange_code(code)?.request_async(&outbound.http_client(Purpose::TOKEN_EXCHANGE))`.
    /// Each call goes through [`send`](Self::send).
    pub fn http_client(
        &self,
        purpose: Purpose,
    ) -> impl Fn(http::Request<Vec<u8>>) -> VecResponseFuture + Clone + Send + Sync + 'static {
        let client = self.clone();
        move |request| {
            let client = client.clone();
            Box::pin(async move { client.send_vec(purpose, request).await })
        }
    }

    /// GETs `url` with `Accept: application/json` and decodes a 2xx
    /// body as `T`; any other status is [`OutboundError::Status`].
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        purpose: Purpose,
        url: &str,
    ) -> Result<T, OutboundError> {
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())
            .map_err(|error| OutboundError::InvalidRequest {
                reason: format!("the URL is not a valid URI: {error}"),
            })?;
        let response = self.send(purpose, request).await?;
        if !response.status().is_success() {
            return Err(OutboundError::Status {
                status: response.status(),
            });
        }
        serde_json::from_slice(response.body()).map_err(OutboundError::Json)
    }

    /// The request, hop by hop through redirects.
    async fn send_within(
        &self,
        purpose: Purpose,
        request: http::Request<Vec<u8>>,
        deadline: Instant,
    ) -> Result<http::Response<Bytes>, OutboundError> {
        let (parts, body) = request.into_parts();
        let marked_idempotent = parts.extensions.get::<Idempotent>().is_some();
        let url = rules::parse(&parts.uri)?;
        rules::check_url(&url, &self.inner.policy)?;
        let mut headers = parts.headers;
        for name in [HOST, CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION] {
            headers.remove(name);
        }
        let mut out = Outgoing {
            method: parts.method,
            url,
            headers,
            body: Bytes::from(body),
        };
        let mut hops = 0;
        loop {
            let idempotent =
                marked_idempotent || out.method == Method::GET || out.method == Method::HEAD;
            let response = self
                .with_retries(purpose, &out, idempotent, deadline)
                .await?;
            let status = response.status();
            if !is_redirect(status) {
                tracing::Span::current().record("redirects", hops);
                return Ok(response);
            }
            // A redirect without a Location is only a status: the caller's.
            let Some(location) = response.headers().get(LOCATION) else {
                return Ok(response);
            };
            let Some(next) = location.to_str().ok().and_then(|l| out.url.join(l).ok()) else {
                return Err(OutboundError::RedirectRefused {
                    status,
                    location: String::from_utf8_lossy(location.as_bytes())
                        .chars()
                        .take(200)
                        .collect(),
                    reason: "its Location header is not a valid URL",
                });
            };
            if self.inner.max_redirects == 0 {
                return Err(OutboundError::RedirectRefused {
                    status,
                    location: rules::redacted(&next),
                    reason: "redirects are not followed (max_redirects = 0): configure the \
                             final URL, or raise max_redirects",
                });
            }
            if hops >= self.inner.max_redirects {
                return Err(OutboundError::TooManyRedirects {
                    limit: self.inner.max_redirects,
                });
            }
            if let Some(reason) = rules::hop_problem(&out.url, &next) {
                return Err(OutboundError::RedirectRefused {
                    status,
                    location: rules::redacted(&next),
                    reason,
                });
            }
            rules::check_url(&next, &self.inner.policy)?;
            if !rules::same_origin(&out.url, &next) {
                for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
                    out.headers.remove(name);
                }
            }
            // As browsers do: 303 always, and 301/302 after a POST, go on
            // as a GET without the body; 307/308 repeat the request.
            let to_get = match status {
                StatusCode::SEE_OTHER => out.method != Method::HEAD,
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => out.method == Method::POST,
                _ => false,
            };
            if to_get {
                out.method = Method::GET;
                out.body = Bytes::new();
                out.headers.remove(CONTENT_TYPE);
            }
            tracing::debug!(%status, to = %rules::redacted(&next), "following redirect");
            out.url = next;
            hops += 1;
        }
    }

    /// One hop: attempts until one is final, the retries are spent, or
    /// the next wait would pass the deadline.
    async fn with_retries(
        &self,
        purpose: Purpose,
        out: &Outgoing,
        idempotent: bool,
        deadline: Instant,
    ) -> Result<http::Response<Bytes>, OutboundError> {
        let attempts = if idempotent {
            self.inner.retry.attempts
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            let result = self.attempt(out).await;
            tracing::Span::current().record("attempts", attempt);
            if attempt >= attempts {
                return result;
            }
            let Some(wait) = self.retry_wait(&result, attempt) else {
                return result;
            };
            if Instant::now() + wait >= deadline {
                return result;
            }
            tracing::debug!(attempt, wait_ms = wait.as_millis() as u64, "retrying");
            metrics::counter!("twig_outbound_retries_total", "purpose" => purpose.as_str())
                .increment(1);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// How long to wait before retrying after `result`, if it is worth
    /// retrying.
    fn retry_wait(
        &self,
        result: &Result<http::Response<Bytes>, OutboundError>,
        attempt: u32,
    ) -> Option<Duration> {
        let retry = &self.inner.retry;
        match result {
            Ok(response) => match response.status() {
                StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT => {
                    match rules::retry_after(
                        response.headers(),
                        SystemTime::from(self.inner.clock.now()),
                    ) {
                        Some(asked) if asked <= retry.max_backoff => Some(asked),
                        // Longer than we are willing to wait: the caller
                        // gets the answer now.
                        Some(_) => None,
                        None => Some(rules::backoff(retry, attempt)),
                    }
                }
                _ => None,
            },
            Err(OutboundError::Timeout {
                phase: TimeoutPhase::Connect | TimeoutPhase::Read,
            }) => Some(rules::backoff(retry, attempt)),
            Err(OutboundError::Transport(error)) if error.is_connect() => {
                Some(rules::backoff(retry, attempt))
            }
            Err(_) => None,
        }
    }

    /// One attempt: the request, then the body read up to the cap.
    async fn attempt(&self, out: &Outgoing) -> Result<http::Response<Bytes>, OutboundError> {
        let mut request = reqwest::Request::new(out.method.clone(), out.url.clone());
        *request.headers_mut() = out.headers.clone();
        if !out.body.is_empty() || matches!(out.method, Method::POST | Method::PUT | Method::PATCH)
        {
            *request.body_mut() = Some(reqwest::Body::from(out.body.clone()));
        }
        let mut response = self
            .inner
            .http
            .execute(request)
            .await
            .map_err(from_reqwest)?;
        let limit = self.inner.max_body_bytes;
        let declared = response.content_length();
        if declared.is_some_and(|length| length > limit) {
            return Err(OutboundError::BodyTooLarge { limit });
        }
        let status = response.status();
        let version = response.version();
        let headers = std::mem::take(response.headers_mut());
        let capacity = usize::try_from(declared.unwrap_or(0).min(limit)).unwrap_or(0);
        let mut collected = BytesMut::with_capacity(capacity);
        while let Some(chunk) = response.chunk().await.map_err(from_reqwest)? {
            if (collected.len() + chunk.len()) as u64 > limit {
                return Err(OutboundError::BodyTooLarge { limit });
            }
            collected.extend_from_slice(&chunk);
        }
        let mut out = http::Response::new(collected.freeze());
        *out.status_mut() = status;
        *out.version_mut() = version;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// The bounded `outcome` label of a response.
fn status_outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "success",
        300..=399 => "redirect",
        400..=499 => "client_error",
        500..=599 => "server_error",
        _ => "other_status",
    }
}

/// reqwest's error as ours: a refused address found in its sources, a
/// timeout by phase, else a transport failure.
fn from_reqwest(error: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<AddressRefused>() {
            return OutboundError::ForbiddenAddress {
                host: refused.host.clone(),
                address: refused.address,
                class: refused.class,
            };
        }
        source = current.source();
    }
    if error.is_timeout() {
        let phase = if error.is_connect() {
            TimeoutPhase::Connect
        } else {
            TimeoutPhase::Read
        };
        return OutboundError::Timeout { phase };
    }
    OutboundError::Transport(error)
}

/// An error with its sources, for a log line.
fn error_chain(error: &OutboundError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        text.push_str(": ");
        text.push_str(&current.to_string());
        source = current.source();
    }
    text
}

/// rustls with ring (as the rest of the workspace) and the Mozilla roots
/// of webpki-roots: the same trust on every machine, whatever the image
/// holds. HTTP/1.1 only.
fn tls_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra_roots {
        roots.add(root.clone())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests;
