//! Logs and traces: `tracing` everywhere, human or JSON log lines, and
//! OpenTelemetry OTLP export of spans when the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT` variable is set (W3C trace context).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};
use twig_config::TelemetryConfig;

/// Keeps the exporter alive; call [`Telemetry::shutdown`] before exit to
/// flush spans.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Why logging and tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The configured log filter does not parse (`RUST_LOG`, when set and
    /// valid, wins over it).
    #[error(
        "telemetry.log_filter {filter:?} is not a valid filter; fix it (e.g. \"info,twig=debug\")"
    )]
    Filter {
        /// The filter as configured.
        filter: String,
        /// What the parser said.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built from the environment.
    #[error(
        "cannot build the OTLP span exporter; check OTEL_EXPORTER_OTLP_ENDPOINT and the other \
         OTEL_EXPORTER_OTLP_* variables, or unset OTEL_EXPORTER_OTLP_ENDPOINT to export nothing"
    )]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// Another global subscriber is installed already.
    #[error("cannot install the log subscriber: one is installed already (call init once)")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber. Must run inside a tokio runtime (the
/// OTLP exporter spawns onto it).
pub fn init(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .map_err(|source| TelemetryError::Filter {
            filter: config.log_filter.clone(),
            source,
        })?;
    let fmt = if config.json_logs {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };

    let provider = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(TelemetryError::Exporter)?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("twig-identity")
                    .build(),
            )
            .build();
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        opentelemetry::global::set_tracer_provider(provider.clone());
        Some(provider)
    } else {
        None
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("twig-identity")));

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(TelemetryError::Install)?;
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Flushes and stops the exporter (blocking work, off the runtime).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        }
    }
}
