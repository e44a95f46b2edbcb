//! End-to-end tests: the real suite on port 0, each test with its own
//! database. Every storage test runs on SQLite and on PostgreSQL through
//! [`on_both_backends!`].

/// The `twig-identity` binary cargo built for this test run, from the code
/// under test (the tests belong to its package, so cargo builds it first).
pub fn twig_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_twig-identity"))
}

/// Runs each listed `async fn name(backend: Backend)` once per backend, as
/// `sqlite::name` and `postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(twig_tests::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(twig_tests::Backend::Postgres).await
                }
            )*
        }
    };
}

mod access;
mod accounts;
mod api_keys;
mod authorize;
mod batched_writes;
mod binary;
mod brakes;
mod browser;
mod browser_routes;
mod browser_sessions;
mod buf_curl;
mod concurrent_writes;
mod connections;
mod cors;
mod crash;
mod credentials;
mod field_bounds;
mod forged_keys;
mod h2_frames;
mod http_json;
mod invitations;
mod ip_allowlists;
mod mail;
mod memberships;
mod metrics_bounds;
mod modules;
mod node_grpc_web;
mod notifications;
mod openapi;
mod plans;
mod quota;
mod quota_replicas;
mod replicas;
mod server;
mod service_accounts;
mod sessions_abuse;
mod sessions_flow;
mod sessions_issuing;
mod sessions_tokens;
mod split;
mod sso_attacks;
mod sso_browser;
mod sso_domains;
mod sso_oidc;
mod sso_social;
mod telemetry;
mod vault;
mod vault_logs;
mod vault_rotation;
mod wire;
