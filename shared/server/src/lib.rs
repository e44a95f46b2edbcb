//! Serving one port: gRPC (HTTP/2) and gRPC-web (HTTP/1.1), the health
//! service, server reflection, the authentication layer and graceful
//! shutdown with a drain deadline.
//!
//! The caller binds the listener (port 0 in tests) and hands it in, so the
//! bound address is known before serving starts. The accept loop is ours
//! (`accept.rs`, `registry.rs`, `connection.rs`): every connection gets a
//! first-byte deadline, an idle timeout, an age limit and explicit HTTP/1
//! and HTTP/2 limits, and the number of open connections is capped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use twig_auth::AuthLayer;

mod accept;
mod coalesce;
mod connection;
mod cors;
mod deadline;
mod error;
mod framing;
mod http_routes;
mod in_flight;
mod limits;
mod metrics;
mod registry;
mod trace;
mod workers;

pub use coalesce::{Always, CoalescingIo, FlushPolicy, Hold};
pub use error::ServerError;
pub use limits::{Limits, default_max_connections, descriptor_limit};
pub use metrics::{install_recorder, serve_admin};
pub use tonic_health;
pub use trace::TraceLayer;
pub use workers::{Run, Workers};

/// What [`serve`] needs besides the listener.
pub struct ServeOptions {
    /// The services, already registered.
    pub routes: Routes,
    /// Authentication in front of every route.
    pub auth: AuthLayer,
    /// Fully-qualified names of the services, for per-service health.
    pub service_names: Vec<&'static str>,
    /// How long in-flight requests may finish after shutdown starts.
    pub drain_timeout: Duration,
    /// Browser origins allowed across origins (validated configuration).
    pub cors_origins: Vec<String>,
    /// Limits of one connection and one request.
    pub limits: Limits,
    /// Plain HTTP routes (the HTTP/JSON surface and browser routes),
    /// beside gRPC on the port.
    pub http_routes: Option<axum::Router>,
    /// Path prefixes of the browser routes (`/sso/`): same-origin pages,
    /// answered without CORS.
    pub browser_prefixes: Vec<String>,
}

/// The health service and its reporter. Every status starts NOT_SERVING;
/// [`serve`] flips them to SERVING once it is accepting connections with
/// every service registered, and back when shutdown starts.
pub fn health() -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// Serves until `shutdown` resolves, then drains for at most
/// `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (reporter, health_service) = health();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(twig_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(ServerError::Reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(twig_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(ServerError::Reflection)?;

    let routes = options
        .routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let limits = options.limits;
    let stack = tower::ServiceBuilder::new()
        .map_response(|response: http::Response<_>| response.map(tonic::body::Body::new))
        // Errors become gRPC statuses (a passed deadline: CANCELLED).
        .layer(tonic::service::RecoverErrorLayer::new())
        .layer(deadline::DeadlineLayer {
            server_timeout: limits.request_timeout,
        })
        .layer(TraceLayer)
        .layer(cors::CorsExceptLayer {
            cors: cors::layer(&options.cors_origins),
            same_origin: options.browser_prefixes.into(),
        })
        .layer(http_routes::HttpRoutesLayer {
            routes: options.http_routes,
        })
        .layer(tonic_web::GrpcWebLayer::new())
        // Malformed request bodies: INVALID_ARGUMENT, not INTERNAL.
        .layer(framing::FramingLayer)
        .layer(options.auth)
        .service(routes.prepare());

    let (phase_tx, phase_rx) = tokio::sync::watch::channel(connection::Phase::Serving);
    let shared = Arc::new(connection::Shared {
        http: connection::http_builder(&limits),
        limits,
        in_flight: in_flight::InFlight::new(limits.max_requests_in_flight),
        phase: phase_rx,
    });
    let registry =
        registry::Registry::new(limits.max_connections, limits.max_connections_per_address);

    let descriptors = descriptor_limit();
    if limits.max_connections as u64 >= descriptors {
        tracing::warn!(
            max_connections = limits.max_connections,
            descriptors,
            "server.max_connections is not below the descriptor limit (ulimit -n): \
             accepts will fail before the cap is reached; lower it or raise the limit"
        );
    }
    let local = listener
        .local_addr()
        .map_err(ServerError::ListenerAddress)?;
    set_all(&reporter, &options.service_names, ServingStatus::Serving).await;
    tracing::info!(
        address = %local,
        services = ?options.service_names,
        max_connections = limits.max_connections,
        "serving"
    );

    // The stack moves in: shared by reference it would have to be `Sync`.
    let (listener_ref, registry_ref, shared_ref) = (&listener, &registry, &shared);
    let accepting = async move {
        let (listener, registry, shared) = (listener_ref, registry_ref, shared_ref);
        let mut backoff = accept::Backoff::default();
        loop {
            let (tcp, peer) = accept::accept(listener, &mut backoff, || {
                registry.shed_one();
            })
            .await;
            // Without TCP_NODELAY a response written in two parts waits
            // for the peer's delayed ACK (40 ms) before its second part.
            let _ = tcp.set_nodelay(true);
            match registry.admit(peer.ip()) {
                Ok(registered) => {
                    let stack = stack.clone();
                    tokio::spawn(connection::run(tcp, registered, stack, shared.clone()));
                }
                Err(refusal) => {
                    tracing::debug!(?refusal, %peer, "connection refused: at the connection cap");
                    connection::Closed::Refused.count();
                }
            }
        }
    };
    tokio::select! {
        () = accepting => {}
        () = shutdown => {}
    }
    tracing::info!("shutdown requested: health NOT_SERVING, draining");
    set_all(&reporter, &options.service_names, ServingStatus::NotServing).await;
    // Stop accepting at once: new clients are refused rather than left
    // waiting for a server that will not answer them.
    drop(listener);
    phase_tx.send_replace(connection::Phase::Draining);
    // Every connection holds `shared`; the phase's receivers are gone when
    // the last connection is.
    drop(shared);
    let drain = options.drain_timeout;
    if tokio::time::timeout(drain, phase_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "drain deadline passed; closing remaining connections"
        );
        phase_tx.send_replace(connection::Phase::Closing);
        let _ = tokio::time::timeout(Duration::from_secs(1), phase_tx.closed()).await;
    }
    tracing::info!("server stopped");
    Ok(())
}

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
