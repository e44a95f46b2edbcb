//! The `twig-identity` binary as an operator runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::twig_binary;
use twig_tests::{Backend, TestDatabase};

fn twig(db_url: &str) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .env("TWIG__SERVER__ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn invalid_configuration_is_refused_before_listening() {
    let out = twig("mysql://nowhere")
        .env("TWIG__SESSIONS__PASSWORD_MIN_CHARS", "2")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("database.url"), "{err}");
    assert!(err.contains("password_min_chars"), "{err}");
}

#[test]
fn absurd_quota_limits_are_refused_before_listening() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{dir}/twig.db?mode=rwc");
    for (key, value, message) in [
        (
            "TWIG__QUOTA__DEFAULT_LIMIT",
            "0",
            "the limit must be at least 1",
        ),
        (
            "TWIG__QUOTA__PERIOD",
            "10ms",
            "the period must be between 1 s and 1 day",
        ),
        (
            "TWIG__QUOTA__BUCKETS",
            "0",
            "buckets must be between 1 and 600",
        ),
    ] {
        let out = twig(&url).env(key, value).arg("serve").output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("invalid configuration")
                && err.contains("quota.default_limit, period, buckets")
                && err.contains(message),
            "{err}"
        );
    }
}

#[test]
fn plans_are_checked_before_listening() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{dir}/twig.db?mode=rwc");
    let out = twig(&url)
        .env("TWIG__PLANS__DEFAULT_PLAN", "gold")
        .env("TWIG__PLANS__TEAM__MAX_CUSTOM_LIMIT__REQUESTS", "5")
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for problem in [
        "plans.default_plan \"gold\" is not a plan; plans: enterprise, free, team",
        "plans.team.max_custom_limit (5 requests per 60 s) is below its default_limit",
    ] {
        assert!(err.contains(problem), "{problem}: {err}");
    }
    let out = twig(&url)
        .env("TWIG__PLANS__FREE__FEATURES", r#"["allowlists"]"#)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("allowlists") && err.contains("ip_allowlists"),
        "{err}"
    );
}

/// `migrate --services` is how the chart's migration hook checks the names
/// it deploys, before any pod starts.
#[test]
fn unknown_service_names_are_refused() {
    let dir = tempfile_dir();
    let url = format!("sqlite://{dir}/twig.db?mode=rwc");
    let known = twig_identity::MODULES
        .iter()
        .map(|m| m.name())
        .collect::<Vec<_>>()
        .join(", ");
    for command in ["serve", "migrate"] {
        let out = twig(&url)
            .args([command, "--services", "sessions,nope"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("unknown service \"nope\"") && err.contains(&format!("known: {known}")),
            "{command}: {err}"
        );
    }
}

fn tempfile_dir() -> String {
    let dir = std::env::temp_dir().join(format!("twig-bin-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.display().to_string()
}

async fn bootstrap_prints_credentials_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let first = twig(&db.url)
        .args([
            "bootstrap",
            "--org-name",
            "Acme",
            "--email",
            "Admin@Acme.test",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.contains("admin@acme.test"), "{out}");
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password:"))
        .map(str::trim)
        .expect("password line");
    assert!(password.len() >= 24);

    let second = twig(&db.url)
        .args([
            "bootstrap",
            "--org-name",
            "Other",
            "--email",
            "other@acme.test",
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("bootstrap has run already"), "{err}");
    // No credentials the second time (the log may name the "password
    // rules" port a bootstrap does not need).
    let again = String::from_utf8_lossy(&second.stdout);
    assert!(
        !again
            .lines()
            .any(|l| l.starts_with("password:") || l.contains(password)),
        "{again}"
    );
}

async fn serve_answers_and_stops_on_sigterm(backend: Backend) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let db = TestDatabase::new(backend).await;
    let (mut child, channel) =
        start_server(&db.url, &[("TWIG__SERVER__DRAIN_TIMEOUT", "2s")]).await;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status);
    assert_eq!(status, Some(1), "health SERVING");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(code) = child.try_wait().unwrap() {
            exited = Some(code);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("server did not stop within 10 s of SIGTERM")
    });
    assert!(code.success(), "{code:?}");
}

/// The operator's `org` commands against a running server's database:
/// the change reaches the server through Redis at once, and the API shows
/// what the command did.
async fn the_operator_moves_an_organisation_from_the_command_line(backend: Backend) {
    use twig_proto::quota::v1 as pb;
    use twig_proto::quota::v1::quota_service_client::QuotaServiceClient;
    use twig_proto::sessions::v1 as spb;

    let db = TestDatabase::new(backend).await;
    let prefix = twig_testkit::redis_prefix();
    let redis = twig_testkit::redis_url();
    let cli = |args: &[&str]| {
        let out = twig(&db.url)
            .env("REDIS_URL", &redis)
            .env("TWIG__REDIS__KEY_PREFIX", &prefix)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = cli(&["bootstrap", "--email", "ops@acme.test"]);
    assert!(ok, "{out}{err}");
    let line = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{prefix} in {out}"))
    };
    let org = line("organisation:");
    let org = org[org.rfind('(').unwrap() + 1..org.len() - 1].to_string();
    let password = line("password:");

    let (mut server, channel) = start_server(
        &db.url,
        &[
            ("REDIS_URL", redis.as_str()),
            ("TWIG__REDIS__KEY_PREFIX", prefix.as_str()),
        ],
    )
    .await;
    let token = spb::session_service_client::SessionServiceClient::new(channel.clone())
        .login(spb::LoginRequest {
            email: "ops@acme.test".into(),
            password,
            organization_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let mut quota = QuotaServiceClient::new(channel);
    let own_limit = |n: u64| {
        twig_tests::bearer(
            &token,
            pb::SetLimitRequest {
                limit: Some(pb::Limit {
                    subject: format!("org:{org}"),
                    limit: n,
                    period: Some(prost_types::Duration {
                        seconds: 60,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
            },
        )
    };
    // On `free`, the owner may not (and the server caches the plan).
    let err = quota.set_limit(own_limit(1000)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // Mistakes: clear, nothing changed.
    let (ok, _, err) = cli(&["org", "plan", "--org", &org, "--plan", "gold"]);
    assert!(!ok && err.contains("\"gold\" is not a plan"), "{err}");
    let stranger = uuid::Uuid::new_v4().to_string();
    let (ok, _, err) = cli(&["org", "plan", "--org", &stranger, "--plan", "team"]);
    assert!(!ok && err.contains("no organisation has the id"), "{err}");

    let (ok, out, err) = cli(&["org", "plan", "--org", &org, "--plan", "enterprise"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("enterprise"), "{out}");
    // The running server heard it: the owner may now set a limit.
    let started = std::time::Instant::now();
    loop {
        match quota.set_limit(own_limit(1000)).await {
            Ok(_) => break,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                assert_eq!(e.code(), tonic::Code::FailedPrecondition);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the server still has the old plan: {e:?}"),
        }
    }
    let plan = quota
        .get_organization_plan(twig_tests::bearer(
            &token,
            pb::GetOrganizationPlanRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plan.plan.unwrap().name, "enterprise");
    assert_eq!(plan.updated_by, "operator:cli");

    // Beyond the plan's maximum (1,000,000 a minute): the operator's.
    let (ok, out, err) = cli(&[
        "org",
        "limit",
        "--org",
        &org,
        "--requests",
        "5000000",
        "--period-seconds",
        "60",
    ]);
    assert!(ok, "{out}{err}");
    let started = std::time::Instant::now();
    loop {
        let got = quota
            .get_limit(twig_tests::bearer(
                &token,
                pb::GetLimitRequest {
                    subject: format!("org:{org}"),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .limit
            .unwrap();
        if got.limit == 5_000_000 {
            assert_eq!(got.updated_by, "operator:cli");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the server still has the old limit: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, out, err) = cli(&["org", "show", "--org", &org]);
    assert!(ok, "{out}{err}");
    for needle in [
        "plan:          enterprise (since",
        "by operator:cli",
        "custom limits: up to 1000000 requests per 60 s",
        "features:      ip_allowlists, sso, custom_limits",
        &format!("org:{org} 5000000 requests per 60 s"),
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    sigterm(&server);
    wait_exit(&mut server, Duration::from_secs(10)).await;
    let _ = server.wait();
}

on_both_backends!(
    bootstrap_prints_credentials_once,
    serve_answers_and_stops_on_sigterm,
    the_operator_moves_an_organisation_from_the_command_line
);

/// Starts `serve` on a free port; returns the child and a connected channel.
async fn start_server(
    db_url: &str,
    envs: &[(&str, &str)],
) -> (std::process::Child, tonic::transport::Channel) {
    let mut cmd = twig(db_url);
    cmd.envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    twig_tests::spawn_serve(cmd).await
}

/// A login that takes `delay` because its email has failed three times.
async fn slow_login(channel: tonic::transport::Channel) -> Result<(), tonic::Status> {
    use twig_proto::sessions::v1 as pb;
    let mut client = pb::session_service_client::SessionServiceClient::new(channel);
    let req = |p: &str| pb::LoginRequest {
        email: "slow@example.com".into(),
        password: p.into(),
        organization_id: String::new(),
    };
    for _ in 0..3 {
        let _ = client.login(req("wrong wrong wrong")).await;
    }
    client.login(req("wrong wrong wrong")).await.map(|_| ())
}

fn sigterm(child: &std::process::Child) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

async fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::time::Instant {
    let start = std::time::Instant::now();
    while start.elapsed() < within {
        if child.try_wait().unwrap().is_some() {
            return std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    panic!("server did not exit within {within:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_requests_finish_within_the_drain_deadline() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let slow = [
        ("TWIG__SESSIONS__LOGIN_DELAY_BASE", "2s"),
        ("TWIG__SESSIONS__LOGIN_DELAY_MAX", "2s"),
        ("TWIG__SERVER__DRAIN_TIMEOUT", "10s"),
    ];
    let (mut child, channel) = start_server(&db.url, &slow).await;
    let login = tokio::spawn(slow_login(channel));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    sigterm(&child);
    // The in-flight login gets its real answer, not a dropped connection.
    let answer = login.await.unwrap().unwrap_err();
    assert_eq!(answer.code(), tonic::Code::Unauthenticated, "{answer:?}");
    let status = {
        wait_exit(&mut child, Duration::from_secs(10)).await;
        child.wait().unwrap()
    };
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_waiting_at_the_drain_deadline() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let slow = [
        ("TWIG__SESSIONS__LOGIN_DELAY_BASE", "10s"),
        ("TWIG__SESSIONS__LOGIN_DELAY_MAX", "10s"),
        ("TWIG__SERVER__DRAIN_TIMEOUT", "500ms"),
    ];
    let (mut child, channel) = start_server(&db.url, &slow).await;
    let login = tokio::spawn(slow_login(channel));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let signalled = std::time::Instant::now();
    sigterm(&child);
    let exited = wait_exit(&mut child, Duration::from_secs(8)).await;
    assert!(
        exited - signalled < Duration::from_secs(5),
        "exited at the deadline, not after the 10 s login"
    );
    assert!(login.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_the_admin_port() {
    use twig_proto::sessions::v1 as pb;

    let db = TestDatabase::new(Backend::Sqlite).await;
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let admin_env = admin.to_string();
    let (mut child, channel) = start_server(
        &db.url,
        &[("TWIG__SERVER__ADMIN_LISTEN", admin_env.as_str())],
    )
    .await;
    let mut client = pb::session_service_client::SessionServiceClient::new(channel);
    client
        .sign_up(pb::SignUpRequest {
            email: "metrics@example.com".into(),
            password: "correct horse battery staple".into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap();
    let _ = client
        .login(pb::LoginRequest {
            email: "metrics@example.com".into(),
            password: "wrong wrong wrong".into(),
            organization_id: String::new(),
        })
        .await;
    let body = tokio::task::spawn_blocking(move || twig_tests::scrape_metrics(admin))
        .await
        .unwrap();
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(10)).await;
    let _ = child.wait();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let has = |needle: &str| body.lines().any(|l| l.contains(needle));
    assert!(
        has(
            r#"twig_rpc_requests_total{service="twig.sessions.v1.SessionService",method="SignUp",code="OK"} 1"#
        ),
        "{body}"
    );
    assert!(
        has(
            r#"twig_rpc_requests_total{service="twig.sessions.v1.SessionService",method="Login",code="UNAUTHENTICATED"} 1"#
        ),
        "{body}"
    );
    assert!(has(r#"twig_logins_total{outcome="failure"} 1"#), "{body}");
    assert!(has("twig_rpc_duration_seconds_bucket"), "{body}");
}
