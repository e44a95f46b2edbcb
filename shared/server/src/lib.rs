//! Serving one port: gRPC (HTTP/2) and gRPC-web (HTTP/1.1), the health
//! service, server reflection, the authentication layer and graceful
//! shutdown with a drain deadline.
//!
//! The caller binds the listener (port 0 in tests) and hands it in, so the
//! bound address is known before serving starts.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use twig_auth::AuthLayer;

mod coalesce;
mod cors;
mod framing;
mod http_routes;
mod methods;
mod metrics;
mod trace;

pub use coalesce::CoalescingIo;
pub use metrics::{install_recorder, serve_admin};
pub use tonic_health;
pub use trace::TraceLayer;

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
    /// Plain HTTP routes (the HTTP/JSON surface), beside gRPC on the port.
    pub http_routes: Option<axum::Router>,
}

/// Limits of one connection and one request; the message size limit is
/// set on each service.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest header block a client may send (HTTP/2 SETTINGS).
    pub max_header_bytes: u32,
    /// Longest a request may run; a client's shorter `grpc-timeout` wins.
    pub request_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once.
    pub max_concurrent_streams: u32,
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
) -> anyhow::Result<()> {
    let (reporter, health_service) = health();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(twig_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(twig_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let routes = options
        .routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown_reporter = reporter.clone();
    let names = options.service_names.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown requested: health NOT_SERVING, draining");
        set_all(&shutdown_reporter, &names, ServingStatus::NotServing).await;
        let _ = started_tx.send(());
    };

    let local = listener.local_addr()?;
    let limits = options.limits;
    let server = tonic::transport::Server::builder()
        .accept_http1(true)
        .http2_max_header_list_size(limits.max_header_bytes)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timeout(limits.request_timeout)
        .layer(TraceLayer)
        .layer(cors::layer(&options.cors_origins))
        .layer(http_routes::HttpRoutesLayer {
            routes: options.http_routes,
        })
        .layer(tonic_web::GrpcWebLayer::new())
        // Malformed request bodies: INVALID_ARGUMENT, not INTERNAL.
        .layer(framing::FramingLayer)
        .layer(options.auth)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // Without TCP_NODELAY a response written in two parts waits
            // for the peer's delayed ACK (40 ms) before its second part.
            futures::TryStreamExt::map_ok(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                CoalescingIo::new,
            ),
            signal,
        );

    set_all(&reporter, &options.service_names, ServingStatus::Serving).await;
    tracing::info!(address = %local, services = ?options.service_names, "serving");

    let drain = options.drain_timeout;
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result?,
        () = async move {
            if started_rx.await.is_ok() {
                tokio::time::sleep(drain).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!(?drain, "drain deadline passed; closing remaining connections");
        }
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
