//! Every browser route of a process as one router.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::MatchedPath;
use futures::future::BoxFuture;
use http::{Request, Response};

use crate::EdgeTrust;

/// One module's browser routes, as the composition hands them over.
pub struct BrowserMount {
    /// The module.
    pub module: &'static str,
    /// Its prefix (checked; `/sso/`).
    pub prefix: &'static str,
    /// Its routes, relative to the prefix (`/start` is `/sso/start`), or
    /// the edge's forwarding (absolute).
    pub router: axum::Router,
    /// Whether `router` forwards to the module's process (the edge) rather
    /// than serving here.
    pub forwarded: bool,
}

/// The browser routes of a process: one router, and the prefixes it owns.
pub struct Mounted {
    /// Every route under every prefix.
    pub router: axum::Router,
    /// The prefixes (the server answers no CORS under them).
    pub prefixes: Vec<String>,
}

/// Mounts each module's routes under its prefix. Routes served here get
/// [`ClientInfo`](crate::ClientInfo) from `trust` (a forged forwarding is
/// refused); every answer carries its route's template for the request
/// metrics.
pub fn mount(mounts: Vec<BrowserMount>, trust: &EdgeTrust) -> Option<Mounted> {
    if mounts.is_empty() {
        return None;
    }
    let mut router = axum::Router::new();
    let mut prefixes = Vec::new();
    for mount in mounts {
        prefixes.push(mount.prefix.to_string());
        let routes = if mount.forwarded {
            mount.router
        } else {
            axum::Router::new()
                .nest(mount.prefix.trim_end_matches('/'), mount.router)
                .layer(trust.layer())
        };
        router = router.merge(routes);
    }
    Some(Mounted {
        router: router.layer(TemplateLayer),
        prefixes,
    })
}

/// Copies the answering route's template into its response, where the
/// server's trace reads it.
#[derive(Clone, Copy, Debug)]
struct TemplateLayer;

impl<S> tower::Layer<S> for TemplateLayer {
    type Service = Template<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Template { inner }
    }
}

#[derive(Clone, Debug)]
struct Template<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for Template<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let template = request.extensions().get::<MatchedPath>().cloned();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            if let Some(template) = template
                && response.extensions().get::<MatchedPath>().is_none()
            {
                response.extensions_mut().insert(template);
            }
            Ok(response)
        })
    }
}
