//! The services in processes of their own behind `serve --services edge`
//! (real binaries on one PostgreSQL database): the edge reaches them over
//! gRPC at their configured addresses with the caller it decided, and
//! every surface — native gRPC, gRPC-web (Connect's client), HTTP/JSON,
//! `Authorize` — works as in one process, each request counted once, an
//! internal client's rights reach the vault and the operator's reach
//! quota through the edge, and the api-keys process asks the quota process
//! for an organisation's plan.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::twig_binary;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use twig_auth::{Credential, ForwardedCaller, Principal, Role, Scope};
use twig_proto::apikeys::v1 as kpb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use twig_proto::auth::v1 as apb;
use twig_proto::edge::v1 as epb;
use twig_proto::edge::v1::authorize_service_client::AuthorizeServiceClient;
use twig_proto::quota::v1 as qpb;
use twig_proto::quota::v1::quota_service_client::QuotaServiceClient;
use twig_proto::sessions::v1 as spb;
use twig_proto::sessions::v1::session_service_client::SessionServiceClient;
use twig_proto::vault::v1 as vpb;
use twig_proto::vault::v1::vault_service_client::VaultServiceClient;
use twig_tests::{
    Backend, PASSWORD, TestDatabase, bearer, email, free_addr, http1, spawn_serve_at,
    with_internal_token,
};

use crate::node_grpc_web::{ORIGIN, run_grpc_web_flow};

const INTERNAL: &str = "split-internal-token-0123456789abcdef";
const EDGE: &str = "split-edge-token-0123456789abcdef01234";
const RUNTIME: &str = "split-runtime-token-0123456789abcdef0123";
const OPERATOR: &str = "split-operator-token-0123456789abcdef012";

/// One service process per entry, started one after the other (each
/// migrates its own tables).
struct Split {
    processes: Vec<(&'static str, Child)>,
    /// The api-keys process's metrics port.
    api_keys_admin: SocketAddr,
    edge: Channel,
    edge_addr: SocketAddr,
    api_keys: Channel,
    _db: TestDatabase,
}

impl Split {
    async fn start() -> Self {
        let db = TestDatabase::new(Backend::Postgres).await;
        // Addresses first: api-keys and quota each call the other.
        let [sessions, api_keys, quota, vault, edge, api_keys_admin] = [(); 6].map(|_| free_addr());
        // Changes reach every process through one Redis.
        let prefix = twig_testkit::redis_prefix();
        let url = |addr: SocketAddr| format!("http://{addr}");
        let mut processes = Vec::new();
        let mut start = async |name: &'static str, addr, env: &[(&str, &str)]| {
            let mut command = process(&db.url, name, env);
            command
                .env("REDIS_URL", "redis://127.0.0.1:6379")
                .env("TWIG__REDIS__KEY_PREFIX", &prefix);
            let (child, channel, _) = spawn_serve_at(command, Some(addr)).await;
            processes.push((name, child));
            channel
        };
        // Membership changes stop, resume and revoke keys in the api-keys
        // process (`MemberKeys` over gRPC): without its address they
        // would reach no key.
        start(
            "sessions",
            sessions,
            &[("TWIG__REMOTE__API_KEYS", &url(api_keys))],
        )
        .await;
        // api-keys counts its own direct callers at the quota service; a
        // call the edge forwards must not be counted there again.
        let api_keys_channel = start(
            "api-keys",
            api_keys,
            &[
                ("TWIG__REMOTE__QUOTA", &url(quota)),
                ("TWIG__SERVER__ADMIN_LISTEN", &api_keys_admin.to_string()),
            ],
        )
        .await;
        start(
            "quota",
            quota,
            &[("TWIG__REMOTE__API_KEYS", &url(api_keys))],
        )
        .await;
        start("secrets-vault", vault, &[]).await;
        let edge_channel = start(
            "edge",
            edge,
            &[
                ("TWIG__REMOTE__SECRETS_VAULT", &url(vault)),
                ("TWIG__REMOTE__SESSIONS", &url(sessions)),
                ("TWIG__REMOTE__API_KEYS", &url(api_keys)),
                ("TWIG__REMOTE__QUOTA", &url(quota)),
                ("TWIG__SERVER__CORS_ORIGINS", &format!("[\"{ORIGIN}\"]")),
                // Long: only the announcement can explain a quick refusal.
                ("TWIG__REMOTE__VERIFY_CACHE_TTL", "30s"),
            ],
        )
        .await;
        Self {
            processes,
            api_keys_admin,
            edge: edge_channel,
            edge_addr: edge,
            api_keys: api_keys_channel,
            _db: db,
        }
    }

    fn stop(&mut self, name: &str) {
        let (_, child) = self
            .processes
            .iter_mut()
            .find(|(n, _)| *n == name)
            .expect("a process of that name");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Split {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `serve --services <service>` on `db_url`; every process trusts the same
/// edge credential and presents it when it calls another (`remote.token`).
fn process(db_url: &str, service: &str, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env("DATABASE_URL", db_url)
        .env("TWIG__AUTH__INTERNAL_TOKEN", INTERNAL)
        .env("TWIG__AUTH__EDGE_TOKEN", EDGE)
        .env(
            "TWIG__AUTH__INTERNAL_CLIENTS",
            format!(
                r#"[{{name="runtime",token="{RUNTIME}",scopes=["vault.reveal"]}},
                    {{name="operator",token="{OPERATOR}",scopes=["platform.operator"]}}]"#
            ),
        )
        .env("TWIG__QUOTA__DEFAULT_LIMIT", "1000")
        .env("RUST_LOG", "warn")
        .env("TWIG_SERVICES", service)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        cmd.env(name, value);
        if name.starts_with("TWIG__REMOTE__") {
            cmd.env("TWIG__REMOTE__TOKEN", EDGE);
        }
    }
    cmd
}

/// Starts a sign-up through the edge: a public call, answered at once.
async fn sign_up(from: &Channel, email: &str) -> spb::SignUpResponse {
    SessionServiceClient::new(from.clone())
        .sign_up(spb::SignUpRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .expect("sign up through the edge")
        .into_inner()
}

async fn list_keys(channel: &Channel, token: &str) -> Result<Vec<kpb::ApiKey>, tonic::Status> {
    ApiKeyServiceClient::new(channel.clone())
        .list_api_keys(bearer(token, kpb::ListApiKeysRequest::default()))
        .await
        .map(|r| r.into_inner().keys)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_reaches_services_in_other_processes() {
    let mut split = Split::start().await;
    let edge = split.edge.clone();

    // Public and session calls, forwarded; the client's own address
    // reaches the sessions service (not the edge's).
    let from_7 = Channel::from_shared(format!("http://{}", split.edge_addr))
        .unwrap()
        .local_address(Some("127.0.0.7".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        sign_up(&from_7, &email("split-public")).await,
        spb::SignUpResponse {},
        "a public call, forwarded and answered at once"
    );
    // The account made by the operator's internal client through the
    // edge, then a login from 127.0.0.7.
    let signed_up = twig_tests::sign_up_with(&from_7, &email("split")).await;
    let session = signed_up.tokens.unwrap().access_token;
    let user = signed_up.user.unwrap();
    let org = signed_up.organization.unwrap();
    let me = SessionServiceClient::new(edge.clone())
        .get_current_user(bearer(&session, spb::GetCurrentUserRequest::default()))
        .await
        .expect("a session checked by the sessions process")
        .into_inner();
    assert_eq!(me.user.unwrap().id, user.id);
    let listed = SessionServiceClient::new(edge.clone())
        .list_sessions(bearer(&session, spb::ListSessionsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].ip, "127.0.0.7",
        "the end client's address, forwarded"
    );

    // A key created through the edge, then used on every surface.
    let created = ApiKeyServiceClient::new(edge.clone())
        .create_api_key(bearer(
            &session,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "split".into(),
                scopes: vec![apb::Scope::Read as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("create through the edge")
        .into_inner();
    let key = created.secret;
    let key_id = created.key.unwrap().id;

    // The organisation is on the default plan, `free`: the api-keys
    // process asks the quota process, and refuses an allowlist; quota
    // refuses a limit of its own.
    let quota = QuotaServiceClient::new(edge.clone());
    let allowlist = |cidrs: &[&str]| {
        bearer(
            &session,
            kpb::SetOrgAllowlistRequest {
                allowlist: Some(kpb::CidrList {
                    cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
                }),
            },
        )
    };
    let refused = ApiKeyServiceClient::new(edge.clone())
        .set_org_allowlist(allowlist(&["127.0.0.0/8"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("`free`"), "{refused:?}");
    // The operator moves it, through the edge (an internal client's scope
    // travels with the forwarded call); a member may not.
    let move_to = |plan: &str| qpb::SetOrganizationPlanRequest {
        organization_id: org.id.clone(),
        plan: plan.into(),
    };
    let by_owner = quota
        .clone()
        .set_organization_plan(bearer(&session, move_to("enterprise")))
        .await
        .unwrap_err();
    assert_eq!(by_owner.code(), Code::PermissionDenied);
    let moved = quota
        .clone()
        .set_organization_plan(with_internal_token(OPERATOR, move_to("enterprise")))
        .await
        .expect("the operator through the edge")
        .into_inner();
    assert_eq!(moved.plan.unwrap().plan.unwrap().name, "enterprise");
    ApiKeyServiceClient::new(edge.clone())
        .set_org_allowlist(allowlist(&["127.0.0.0/8"]))
        .await
        .expect("allowlists on enterprise, as the quota process says");
    ApiKeyServiceClient::new(edge.clone())
        .set_org_allowlist(allowlist(&[]))
        .await
        .unwrap();

    // Its own limit, set through the edge: the quota process asks the
    // api-keys process whether the key is the caller's.
    let limit = |subject: String| qpb::Limit {
        subject,
        limit: 5,
        period: Some(prost_types::Duration {
            seconds: 60,
            nanos: 0,
        }),
        ..Default::default()
    };
    quota
        .clone()
        .set_limit(bearer(
            &session,
            qpb::SetLimitRequest {
                limit: Some(limit(format!("key:{key_id}"))),
            },
        ))
        .await
        .expect("a limit for the caller's own key");
    let other = quota
        .clone()
        .set_limit(bearer(
            &session,
            qpb::SetLimitRequest {
                limit: Some(limit(format!("key:{}", uuid::Uuid::new_v4()))),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::NotFound, "{other:?}");

    // 1: Authorize, the edge's whole decision with remote verification
    // and remote quota.
    let decision = AuthorizeServiceClient::new(edge.clone())
        .authorize(with_internal_token(
            INTERNAL,
            epb::AuthorizeRequest {
                credential: key.clone(),
                target: Some(epb::authorize_request::Target::Method(
                    "/twig.apikeys.v1.ApiKeyService/ListApiKeys".into(),
                )),
                client_ip: "203.0.113.5".into(),
                cost: 1,
            },
        ))
        .await
        .expect("authorize")
        .into_inner();
    assert!(decision.allowed, "{decision:?}");
    assert_eq!(decision.principal.unwrap().organization_id, org.id);
    let state = decision.quota.unwrap();
    assert_eq!((state.limit, state.remaining), (5, 4));

    // 2: native gRPC through the edge.
    let keys = list_keys(&edge, &key).await.expect("the key over gRPC");
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].id, key_id);

    // 3: HTTP/JSON through the edge.
    let (status, _, body) = http1(
        split.edge_addr,
        &format!("GET /v1/api-keys HTTP/1.1\r\nAuthorization: Bearer {key}"),
        b"",
    )
    .await;
    assert!(status.contains(" 200 "), "{status}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["keys"][0]["id"], key_id.as_str());

    // 4, 5: admitted; the sixth request of the minute is refused. Had the
    // api-keys process counted forwarded calls again, the refusal would
    // come sooner.
    for n in 4..=5 {
        list_keys(&edge, &key)
            .await
            .unwrap_or_else(|e| panic!("request {n}: {e:?}"));
    }
    let refused = list_keys(&edge, &key).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.metadata().get("ratelimit-limit").unwrap(),
        "5",
        "the limit travels with the refusal"
    );
    let (status, headers, _) = http1(
        split.edge_addr,
        &format!("GET /v1/api-keys HTTP/1.1\r\nAuthorization: Bearer {key}"),
        b"",
    )
    .await;
    assert!(status.contains(" 429 "), "{status}");
    assert!(twig_tests::header(&headers, "retry-after").is_some());

    // The edge kept the key's answer: five requests from two addresses
    // asked api-keys at most twice.
    let verified = verify_calls(split.api_keys_admin);
    assert!(
        (1..=2).contains(&verified),
        "VerifyApiKey called {verified} times"
    );
    // Revoked through the edge: the announcement drops the kept answer at
    // once (the edge keeps answers for 30 s here).
    ApiKeyServiceClient::new(edge.clone())
        .revoke_api_key(bearer(
            &session,
            kpb::RevokeApiKeyRequest {
                key_id: key_id.clone(),
            },
        ))
        .await
        .expect("revoke through the edge");
    let started = std::time::Instant::now();
    loop {
        match list_keys(&edge, &key).await {
            Err(e) if e.code() == Code::Unauthenticated => break,
            other => {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(2),
                    "the revoked key still passes the edge: {other:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }

    // gRPC-web: Connect's web transport through the edge, end to end.
    let web_user = email("split-web");
    twig_tests::sign_up_with(&edge, &web_user).await;
    let seen = run_grpc_web_flow(
        format!("http://{}", split.edge_addr),
        web_user,
        PASSWORD.into(),
    )
    .await;
    assert_eq!(seen["signUpAnswer"], serde_json::json!({}), "{seen}");
    assert_eq!(seen["badToken"]["code"], "Unauthenticated", "{seen}");
    assert_eq!(seen["corsAllowOrigin"], ORIGIN);
    let web_key = seen["secret"].as_str().unwrap();
    assert_eq!(
        list_keys(&edge, web_key)
            .await
            .expect("the web key works")
            .len(),
        1
    );

    // The vault in its own process: a provider key stored as the signed-in
    // admin; revealed only for the internal client holding vault.reveal,
    // whose identity the edge checked and passed on.
    let vault = VaultServiceClient::new(edge.clone());
    let value = "sk-proj-abcdefghijklmnopqrstuvwxyz0123";
    let stored = vault
        .clone()
        .add_provider_key(bearer(
            &session,
            vpb::AddProviderKeyRequest {
                provider: "openai".into(),
                name: "main".into(),
                value: value.into(),
            },
        ))
        .await
        .expect("a provider key stored through the edge")
        .into_inner()
        .key
        .unwrap();
    let reveal = |token: &str| {
        with_internal_token(
            token,
            vpb::RevealProviderKeyRequest {
                organization_id: org.id.clone(),
                id: stored.id.clone(),
            },
        )
    };
    let revealed = vault
        .clone()
        .reveal_provider_key(reveal(RUNTIME))
        .await
        .expect("revealed for the runtime")
        .into_inner();
    assert_eq!(revealed.value, value);
    let refused = vault
        .clone()
        .reveal_provider_key(reveal(INTERNAL))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("vault.reveal"), "{refused:?}");

    // Straight to the api-keys process, a caller cannot claim to be
    // someone: not with no credential, not with the plain internal one.
    let claimed = ForwardedCaller {
        principal: Some(Principal {
            user_id: user.id.parse().unwrap(),
            org_id: org.id.parse().unwrap(),
            roles: vec![Role::Owner],
            scopes: Scope::ALL.to_vec(),
            credential: Credential::Session {
                session_id: uuid::Uuid::new_v4(),
            },
            expires_at: None,
        }),
        ..ForwardedCaller::default()
    };
    for token in [None, Some(INTERNAL)] {
        let mut request = tonic::Request::new(kpb::CreateApiKeyRequest {
            service_account_id: String::new(),
            name: "forged".into(),
            scopes: vec![apb::Scope::Admin as i32],
            ..Default::default()
        });
        request.metadata_mut().insert_bin(
            twig_auth::FORWARDED_HEADER,
            MetadataValue::from_bytes(&claimed.encode()),
        );
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("x-twig-internal-token", token.parse().unwrap());
        }
        let err = ApiKeyServiceClient::new(split.api_keys.clone())
            .create_api_key(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}: {err:?}");
    }
    // The edge's credential with a header it did not write.
    let mut request = tonic::Request::new(kpb::ListApiKeysRequest::default());
    request
        .metadata_mut()
        .insert("x-twig-internal-token", EDGE.parse().unwrap());
    request.metadata_mut().insert_bin(
        twig_auth::FORWARDED_HEADER,
        MetadataValue::from_bytes(b"\x00\x01"),
    );
    let err = ApiKeyServiceClient::new(split.api_keys.clone())
        .list_api_keys(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("could not be read"), "{err:?}");
    assert_eq!(
        list_keys(&edge, &session).await.unwrap().len(),
        1,
        "no forged key was made"
    );

    // A service that is down: its calls and its credentials are
    // UNAVAILABLE naming it, never accepted.
    split.stop("sessions");
    let down = SessionServiceClient::new(edge.clone())
        .get_current_user(bearer(&session, spb::GetCurrentUserRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    assert!(down.message().contains("sessions"), "{down:?}");
    let down = SessionServiceClient::new(edge.clone())
        .login(spb::LoginRequest {
            email: "anyone@example.com".into(),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{down:?}");
    // The other services still answer.
    assert_eq!(list_keys(&edge, web_key).await.unwrap().len(), 1);
}

/// `VerifyApiKey` calls the api-keys process answered so far.
fn verify_calls(admin: SocketAddr) -> u64 {
    twig_tests::scrape_metrics(admin)
        .lines()
        .filter(|l| {
            l.starts_with("twig_rpc_requests_total") && l.contains("method=\"VerifyApiKey\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A sessions process given no api-keys or quota address says at start
/// that it goes without them (it cannot tell a deployment with no such
/// service from a missing address), naming each port; given the
/// addresses, it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_missing_a_service_address_says_so_at_start() {
    const MISSING: &str = "no service in this process or at a remote.<service> address";
    let db = TestDatabase::new(Backend::Sqlite).await;
    let logs_of = async |env: &[(&str, &str)]| {
        let mut command = process(&db.url, "sessions", env);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let (mut child, _, _) = spawn_serve_at(command, None).await;
        let _ = child.kill();
        let out = child.wait_with_output().expect("the process's output");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let alone = logs_of(&[]).await;
    for port in ["member keys", "throttles", "password rules"] {
        assert!(
            alone
                .lines()
                .any(|l| l.contains(MISSING) && l.contains(&format!("\"{port}\""))),
            "{port}: {alone}"
        );
    }
    // Addresses nobody listens on yet still count: the clients are made.
    let unused = free_addr();
    let with = logs_of(&[
        ("TWIG__REMOTE__API_KEYS", &format!("http://{unused}")),
        ("TWIG__REMOTE__QUOTA", &format!("http://{unused}")),
        ("TWIG__REMOTE__SSO_FEDERATION", &format!("http://{unused}")),
    ])
    .await;
    assert!(!with.contains(MISSING), "{with}");
}
