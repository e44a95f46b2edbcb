//! What can stop the server, its metrics or its admin port from starting
//! or running. Each variant keeps its cause as its source.

use metrics_exporter_prometheus::BuildError;

/// Everything that can go wrong in `twig-server`.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The reflection service could not read the compiled descriptor sets
    /// (a build problem, not a configuration one).
    #[error(
        "cannot build the reflection service from the compiled descriptor sets; \
         rebuild twig-proto (its descriptor set is generated at build time)"
    )]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The listener's own address could not be read.
    #[error("cannot read the address the gRPC listener is bound to (server.listen)")]
    ListenerAddress(#[source] std::io::Error),
    /// The histogram buckets were refused.
    #[error("cannot configure the Prometheus histogram buckets")]
    MetricsBuckets(#[source] BuildError),
    /// The Prometheus recorder could not be installed.
    #[error(
        "cannot install the Prometheus recorder: one is installed already (call install_recorder once)"
    )]
    MetricsInstall(#[source] BuildError),
    /// The metrics upkeep thread could not be started.
    #[error("cannot start the metrics upkeep thread (out of threads or memory?)")]
    MetricsUpkeep(#[source] std::io::Error),
    /// The admin port failed while serving.
    #[error("the admin port (server.admin_listen) stopped serving")]
    Admin(#[source] std::io::Error),
}
