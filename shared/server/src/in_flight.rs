//! The outermost service of a connection: counts each request in flight
//! on its connection (for the idle timeout) and across the process (the
//! in-flight cap), refuses a request at once beyond the cap (gRPC
//! RESOURCE_EXHAUSTED, HTTP 503), and gives the request its connection's
//! addresses. A request stays in flight until its response body is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use hyper::body::Incoming;
use tonic::body::Body;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;
use tower::util::Oneshot;

use crate::registry::{ActiveRequest, Conn};

/// What the shared service stack behind every connection must be. It is
/// one concrete type (not boxed), cloned once per request.
pub(crate) trait Stack:
    tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = tower::BoxError,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Stack for S where
    S: tower::Service<
            Request<Body>,
            Response = Response<Body>,
            Error = tower::BoxError,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Requests in flight across the process, and the cap.
#[derive(Debug)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    max: usize,
}

impl InFlight {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            count: AtomicUsize::new(0),
            max,
        })
    }

    /// Requests in flight across the process.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(self.clone()))
    }
}

pub(crate) struct Permit(Arc<InFlight>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's view of the stack: what hyper calls for each request.
/// (A hyper service, not a tower one: hyper calls it by reference, so the
/// stack is cloned once per request here and nowhere else.)
pub(crate) struct Tracked<S> {
    pub(crate) stack: S,
    pub(crate) conn: Arc<Conn>,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) info: TcpConnectInfo,
}

impl<S: Stack> hyper::service::Service<Request<Incoming>> for Tracked<S> {
    type Response = Response<Guarded>;
    type Error = tower::BoxError;
    type Future = TrackedFuture<S>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let Some(permit) = self.in_flight.try_acquire() else {
            ::metrics::counter!("twig_requests_shed_total").increment(1);
            return TrackedFuture::Refused {
                response: Some(overloaded(&request)),
            };
        };
        let active = self.conn.start_request();
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(self.info.clone());
        TrackedFuture::Admitted {
            call: self.stack.clone().oneshot(request),
            guards: Some((active, permit)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request, with its guards until it is ready.
    #[project = TrackedProj]
    pub(crate) enum TrackedFuture<S: Stack> {
        Admitted {
            #[pin]
            call: Oneshot<S, Request<Body>>,
            guards: Option<(ActiveRequest, Permit)>,
        },
        Refused {
            response: Option<Response<Body>>,
        },
    }
}

impl<S: Stack> Future for TrackedFuture<S> {
    type Output = Result<Response<Guarded>, tower::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            TrackedProj::Admitted { call, guards } => {
                let response = ready!(call.poll(cx))?;
                let (active, permit) = guards
                    .take()
                    .map_or((None, None), |(a, p)| (Some(a), Some(p)));
                Poll::Ready(Ok(response.map(|body| Guarded {
                    body,
                    _active: active,
                    _permit: permit,
                })))
            }
            TrackedProj::Refused { response } => {
                let response = response.take().expect("polled after completion");
                Poll::Ready(Ok(response.map(|body| Guarded {
                    body,
                    _active: None,
                    _permit: None,
                })))
            }
        }
    }
}

/// The answer to a request beyond the in-flight cap.
fn overloaded<B>(request: &Request<B>) -> Response<Body> {
    let grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let message = "the server has too many requests in flight; retry shortly";
    if grpc {
        tonic::Status::resource_exhausted(message).into_http()
    } else {
        let mut response = Response::new(Body::new(message.to_string()));
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        response
    }
}

/// A response body that keeps its request counted until it is done
/// (handed to hyper as it is: boxing it again cost an allocation and a
/// dynamic call per frame of every response).
pub(crate) struct Guarded {
    body: Body,
    _active: Option<ActiveRequest>,
    _permit: Option<Permit>,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_permits_until_they_are_dropped() {
        let in_flight = InFlight::new(2);
        let a = in_flight.try_acquire().unwrap();
        let _b = in_flight.try_acquire().unwrap();
        assert!(in_flight.try_acquire().is_none());
        drop(a);
        assert!(in_flight.try_acquire().is_some());
    }

    #[test]
    fn overload_answers_in_each_protocol() {
        let grpc = Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let response = overloaded(&grpc);
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "8");
        let plain = Request::builder().body(()).unwrap();
        let response = overloaded(&plain);
        assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
