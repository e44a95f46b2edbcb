//! Prometheus metrics on the admin port (`server.admin_listen`, path
//! `/metrics`), apart from the gRPC port so it can stay inside the cluster.
//!
//! Every RPC is counted by [`crate::TraceLayer`] as
//! `twig_rpc_requests_total{service, method, code}` and timed as
//! `twig_rpc_duration_seconds{service, method}`; services add their own
//! counters with the `metrics` macros.
//!
//! The recorder keeps each histogram sample until it is folded into its
//! buckets; a scrape does that, and so does the upkeep thread every
//! [`UPKEEP_EVERY`], so memory stays bounded whether or not anything
//! scrapes (without it, about 20 bytes a request until the first scrape).

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::ServerError;

/// How often histogram samples are folded into their buckets when nothing
/// scrapes: the samples kept are at most this long's worth of requests.
const UPKEEP_EVERY: Duration = Duration::from_secs(1);

/// Installs the process-wide Prometheus recorder and starts its upkeep
/// (a thread of its own, which runs whatever the async runtime is doing).
/// Call once, in the binary.
pub fn install_recorder() -> Result<PrometheusHandle, ServerError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
            &[
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 10.0,
            ],
        )
        .map_err(ServerError::MetricsBuckets)?
        .install_recorder()
        .map_err(ServerError::MetricsInstall)?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(ServerError::MetricsUpkeep)?;
    Ok(handle)
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve_admin(
    listener: TcpListener,
    handle: PrometheusHandle,
) -> Result<(), ServerError> {
    let address = listener.local_addr().map_err(ServerError::Admin)?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tracing::info!(%address, "admin port: /metrics");
    axum::serve(listener, app).await.map_err(ServerError::Admin)
}
