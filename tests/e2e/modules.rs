//! The module list: every service the binary lists has one name
//! everywhere (folder, crate, `--services`, configuration section and
//! `remote` key; the chart names no other), migrates, and runs in the
//! monolith and alone, serving health and reflection for each of its gRPC
//! services.

use std::path::Path;
use std::process::{Command, Stdio};

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use twig_config::{Owners, config_key};
use twig_identity::MODULES;
use twig_tests::{Backend, TestDatabase};

use crate::twig_binary;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The keys of the chart's `services:` map (what it deploys by default),
/// read as the chart writes them (two-space indentation, one key per line).
fn chart_service_names() -> Vec<String> {
    let values = std::fs::read_to_string(root().join("helm/twig-identity/values.yaml"))
        .expect("the chart's values.yaml");
    let mut names = Vec::new();
    let mut inside = false;
    for line in values.lines() {
        if line == "services:" {
            inside = true;
        } else if inside && !line.starts_with(' ') && !line.trim().is_empty() {
            break;
        } else if inside
            && let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !key.starts_with(' ')
        {
            names.push(key.to_string());
        }
    }
    names
}

/// The schema's rule for the names under `services:`.
fn chart_schema_name_rule() -> serde_json::Value {
    let schema = std::fs::read_to_string(root().join("helm/twig-identity/values.schema.json"))
        .expect("the chart's schema");
    let schema: serde_json::Value = serde_json::from_str(&schema).expect("JSON");
    schema["properties"]["services"]["propertyNames"].clone()
}

#[test]
fn every_module_has_one_name_everywhere() {
    let mut names: Vec<String> = Vec::new();
    for module in MODULES {
        let name = module.name();
        assert!(
            !name.is_empty()
                && name.split('-').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase())
                }),
            "{name:?}: a service's name is lower-case words joined by -"
        );
        let manifest =
            std::fs::read_to_string(root().join("services").join(name).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("{name}: services/{name}/Cargo.toml: {e}"));
        assert!(
            manifest.contains(&format!("name = \"twig-{name}\"")),
            "{name}: its crate is twig-{name}"
        );
        assert_eq!(
            twig_identity::module(name).map(|m| m.name()),
            Ok(name),
            "--services {name}"
        );
        let mut owners = Owners::default();
        module.owns(&mut owners);
        for key in owners.section_keys() {
            assert_eq!(key, config_key(name), "{name}: its configuration section");
        }
        assert!(!module.grpc_services().is_empty(), "{name}: serves gRPC");
        for service in module.grpc_services() {
            assert!(service.starts_with("twig."), "{name}: {service}");
        }
        assert!(!names.contains(&name.to_string()), "{name} listed twice");
        names.push(name.to_string());
    }
    // The chart deploys any service named in its values (the binary checks
    // the names at the migration hook): it keeps no list of its own.
    let chart = chart_service_names();
    assert!(
        !chart.is_empty(),
        "values.yaml deploys a service by default"
    );
    for name in chart {
        assert!(
            names.contains(&name),
            "the chart's values.yaml names {name:?}, which is no module of MODULES"
        );
    }
    let rule = chart_schema_name_rule();
    assert!(
        rule.get("enum").is_none(),
        "the chart's schema lists the services' names ({rule}): it must take any module"
    );
}

#[test]
fn an_unknown_remote_key_or_section_is_refused_naming_the_services() {
    let mut config = twig_config::Config::default();
    config.remote.token = Some(twig_config::Secret::new("e".repeat(32)));
    config
        .remote
        .set_address("apikeys", "http://elsewhere:50051");
    let err = config
        .validate(&twig_identity::owners())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("remote.apikeys: no such service") && err.contains("api_keys"),
        "{err}"
    );
    config.remote.addresses.clear();
    config.set_section(&twig_quota::QuotaConfig::default());
    config.validate(&twig_identity::owners()).unwrap();
}

async fn health_and_reflection(channel: &Channel, services: &[&str]) {
    let mut health = HealthClient::new(channel.clone());
    for service in services.iter().chain(&[""]) {
        let status = health
            .check(HealthCheckRequest {
                service: (*service).into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = stream.next().await.expect("an answer").expect("no error");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer");
    };
    let listed: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in services {
        assert!(
            listed.contains(service),
            "reflection lists {service}: {listed:?}"
        );
    }
}

/// The binary with `--services <list>` on a fresh database of its own:
/// migrates, serves health and reflection for every gRPC service of its
/// modules, and stops cleanly.
async fn serve_and_check(backend: Backend, services: Option<&str>) {
    let database = TestDatabase::new(backend).await;
    let mut command = Command::new(twig_binary());
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", &database.url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if let Some(services) = services {
        command.env("TWIG_SERVICES", services);
    }
    let (mut child, channel) = twig_tests::spawn_serve(command).await;
    let expected: Vec<&str> = match services {
        None => MODULES
            .iter()
            .flat_map(|m| m.grpc_services())
            .copied()
            .collect(),
        Some(name) => twig_identity::module(name)
            .expect("a listed module")
            .grpc_services()
            .to_vec(),
    };
    health_and_reflection(&channel, &expected).await;
    // Alone means alone: the other services are not served here.
    let mut health = HealthClient::new(channel.clone());
    for other in MODULES.iter().flat_map(|m| m.grpc_services()) {
        if expected.contains(other) {
            continue;
        }
        let status = health
            .check(HealthCheckRequest {
                service: (*other).into(),
            })
            .await
            .expect_err(other);
        assert_eq!(
            status.code(),
            tonic::Code::NotFound,
            "{other} runs beside {services:?}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn every_module_runs_alone(backend: Backend) {
    for module in MODULES {
        serve_and_check(backend, Some(module.name())).await;
    }
}

async fn every_module_runs_in_the_monolith(backend: Backend) {
    serve_and_check(backend, None).await;
}

on_both_backends!(every_module_runs_alone, every_module_runs_in_the_monolith);
