//! Prometheus metrics on the admin port (`server.admin_listen`, path
//! `/metrics`), apart from the gRPC port so it can stay inside the cluster.
//!
//! Every RPC is counted by [`crate::TraceLayer`] as
//! `twig_rpc_requests_total{service, method, code}` and timed as
//! `twig_rpc_duration_seconds{service, method}`; services add their own
//! counters with the `metrics` macros.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Installs the process-wide Prometheus recorder. Call once, in the binary.
pub fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("duration_seconds".into()),
            &[
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 10.0,
            ],
        )?
        .install_recorder()?;
    Ok(handle)
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve_admin(listener: TcpListener, handle: PrometheusHandle) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tracing::info!(%address, "admin port: /metrics");
    axum::serve(listener, app).await?;
    Ok(())
}
