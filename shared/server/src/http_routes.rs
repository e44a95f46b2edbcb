//! Plain HTTP requests go to the HTTP routes (the HTTP/JSON surface);
//! gRPC and gRPC-web go on to the gRPC stack. Sits outside the gRPC-web
//! translation, which refuses every other HTTP/1.1 request.

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Request, Response};

/// Builds [`HttpRoutes`].
#[derive(Clone)]
pub(crate) struct HttpRoutesLayer {
    pub(crate) routes: Option<axum::Router>,
}

impl<S> tower::Layer<S> for HttpRoutesLayer {
    type Service = HttpRoutes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpRoutes {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// Sends requests that are not gRPC (by content type) to the HTTP routes.
#[derive(Clone)]
pub(crate) struct HttpRoutes<S> {
    inner: S,
    routes: Option<axum::Router>,
}

fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

impl<S, B> tower::Service<Request<B>> for HttpRoutes<S>
where
    S: tower::Service<Request<B>, Response = Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match &self.routes {
            Some(routes) if !is_grpc(&request) => {
                let routes = routes.clone();
                Box::pin(async move {
                    let response =
                        tower::ServiceExt::oneshot(routes, request.map(axum::body::Body::new))
                            .await?;
                    Ok(response.map(tonic::body::Body::new))
                })
            }
            _ => {
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
        }
    }
}
