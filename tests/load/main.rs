//! `twig-load`: the project's load tool. It drives a running server with
//! one client and compares each RPC against a baseline that does no work
//! (the health check), in the same run, so machine noise hits both.
//!
//! Scenarios:
//! - `verify`: `VerifySession` (cache hit) vs `Health/Check` at each
//!   concurrency: throughput, p50, p99;
//! - `login`: logins per second with every core hashing, and
//!   `VerifySession` p99 while logins saturate the CPU vs idle;
//! - `--verify quota`: quota `Check` (one subject per worker) vs the
//!   baseline — run the server with a default limit high enough that every
//!   check is admitted and counted;
//! - `--verify authorize`: the edge's `Authorize` for an API key (run the
//!   server with a default limit high enough that every call is admitted)
//!   vs the baseline;
//! - `--verify me,me-web`: an authenticated call (`GetCurrentUser`) over
//!   native gRPC vs the health check, and over gRPC-web (HTTP/1.1) vs the
//!   same call over native gRPC;
//! - `--verify seal,unseal`: vault `Seal` / `Unseal` of `--payload-bytes`
//!   (1 KiB by default) vs the baseline;
//! - `--rewrap-secrets N --database-url URL`: no server; seeds N sealed
//!   secrets into the database and times the vault's re-wrap job moving
//!   them to a new master key;
//! - `--accuracy-targets a,b,c`: several servers sharing one Redis, driven
//!   together past one subject's limit; the total admitted vs the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use twig_proto::sessions::v1 as pb;
use twig_proto::sessions::v1::session_service_client::SessionServiceClient;

/// The same allocator as the server, so the client's own cost stays small.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "twig-load", about = "Load tool for twig-identity")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The server's internal service credential (for VerifySession).
    #[arg(long, env = "TWIG__AUTH__INTERNAL_TOKEN")]
    internal_token: String,
    /// The token of an internal client with `platform.operator`, which
    /// creates the load's account (`CreateAccount`).
    #[arg(long, env = "TWIG_LOAD_OPERATOR_TOKEN")]
    operator_token: String,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Skip the login scenario.
    #[arg(long)]
    no_login: bool,
    /// Which verify RPCs to compare with the baseline.
    #[arg(long, value_delimiter = ',', default_value = "session,key")]
    verify: Vec<String>,
    /// Before measuring, add this many API keys (of other organisations)
    /// straight into the database at --database-url.
    #[arg(long, default_value_t = 0)]
    seed_keys: u64,
    /// The server's database, for --seed-keys.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// A label for the API-key figures (e.g. "cache miss" when the server
    /// runs with its key cache off).
    #[arg(long, default_value = "cache hit")]
    key_label: String,
    /// Servers sharing one Redis, for the accuracy run (instead of the
    /// scenarios above).
    #[arg(long, value_delimiter = ',')]
    accuracy_targets: Vec<String>,
    /// Length of the accuracy run.
    #[arg(long, default_value_t = 60)]
    accuracy_seconds: u64,
    /// Concurrency per server in the accuracy run.
    #[arg(long, default_value_t = 16)]
    accuracy_concurrency: usize,
    /// Times the vault re-wrap of this many secrets in --database-url
    /// (instead of the scenarios above).
    #[arg(long, default_value_t = 0)]
    rewrap_secrets: u64,
    /// Plaintext size for the seal and unseal scenarios.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rpc {
    Health,
    Verify,
    VerifyKey,
    QuotaCheck,
    Seal,
    Unseal,
    Authorize,
    /// GetCurrentUser (signed in) over native gRPC.
    Me,
    /// The same over gRPC-web (HTTP/1.1).
    MeWeb,
    Login,
}

impl Rpc {
    fn label(self) -> &'static str {
        match self {
            Rpc::Health => "health (baseline)",
            Rpc::Verify => "VerifySession",
            Rpc::VerifyKey => "VerifyApiKey",
            Rpc::QuotaCheck => "Quota Check",
            Rpc::Seal => "Vault Seal",
            Rpc::Unseal => "Vault Unseal",
            Rpc::Authorize => "Authorize",
            Rpc::Me => "GetCurrentUser (gRPC)",
            Rpc::MeWeb => "GetCurrentUser (gRPC-web)",
            Rpc::Login => "Login",
        }
    }
}

/// A channel whose writes are coalesced like the server's
/// ([`twig_server::CoalescingIo`]), so many requests in flight on one
/// connection share write system calls instead of paying one each.
async fn connect(target: &str) -> anyhow::Result<Channel> {
    let connector = tower::service_fn(|uri: tonic::transport::Uri| async move {
        let authority = uri
            .authority()
            .ok_or_else(|| std::io::Error::other("the target has no host:port"))?
            .to_string();
        let tcp = tokio::net::TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
            twig_server::CoalescingIo::new(tcp),
        ))
    });
    Ok(Channel::from_shared(target.to_string())?
        .connect_with_connector(connector)
        .await?)
}

struct Outcome {
    ok: u64,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

impl Outcome {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> Duration {
        Duration::from_micros(self.hist.value_at_quantile(q))
    }
}

/// A gRPC-web client over HTTP/1.1, as a browser's transport speaks.
type WebClient = tonic_web::GrpcWebClientService<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        tonic_web::GrpcWebCall<tonic::body::Body>,
    >,
>;

struct Client {
    channels: Vec<Channel>,
    /// The same server over gRPC-web.
    web: WebClient,
    origin: tonic::transport::Uri,
    /// Parsed once: the client's own cost should not weigh on one RPC only.
    internal_token: tonic::metadata::AsciiMetadataValue,
    access_token: String,
    api_key: String,
    email: String,
    /// One quota subject per worker.
    subjects: Vec<String>,
    /// The transit context and the plaintext to seal.
    context: twig_proto::vault::v1::SealContext,
    plaintext: prost::bytes::Bytes,
    /// What Seal returned for them.
    sealed: String,
}

impl Client {
    async fn call(&self, worker: usize, rpc: Rpc) -> bool {
        let channel = self.channels[worker % self.channels.len()].clone();
        match rpc {
            Rpc::Health => HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok(),
            Rpc::Verify => {
                let mut request = tonic::Request::new(pb::VerifySessionRequest {
                    access_token: self.access_token.clone(),
                });
                request
                    .metadata_mut()
                    .insert("x-twig-internal-token", self.internal_token.clone());
                SessionServiceClient::new(channel)
                    .verify_session(request)
                    .await
                    .is_ok()
            }
            Rpc::VerifyKey => {
                let mut request =
                    tonic::Request::new(twig_proto::apikeys::v1::VerifyApiKeyRequest {
                        key: self.api_key.clone(),
                        required_scope: twig_proto::auth::v1::Scope::Read as i32,
                        client_ip: "192.0.2.10".into(),
                    });
                request
                    .metadata_mut()
                    .insert("x-twig-internal-token", self.internal_token.clone());
                twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient::new(channel)
                    .verify_api_key(request)
                    .await
                    .is_ok()
            }
            Rpc::QuotaCheck => quota_check(
                channel,
                &self.internal_token,
                &self.subjects[worker % self.subjects.len()],
            )
            .await
            .is_ok(),
            Rpc::Seal => {
                let mut request = tonic::Request::new(twig_proto::vault::v1::SealRequest {
                    context: Some(self.context.clone()),
                    plaintext: self.plaintext.clone(),
                });
                request
                    .metadata_mut()
                    .insert("x-twig-internal-token", self.internal_token.clone());
                twig_proto::vault::v1::vault_service_client::VaultServiceClient::new(channel)
                    .seal(request)
                    .await
                    .is_ok()
            }
            Rpc::Unseal => {
                let mut request = tonic::Request::new(twig_proto::vault::v1::UnsealRequest {
                    context: Some(self.context.clone()),
                    ciphertext: self.sealed.clone(),
                });
                request
                    .metadata_mut()
                    .insert("x-twig-internal-token", self.internal_token.clone());
                twig_proto::vault::v1::vault_service_client::VaultServiceClient::new(channel)
                    .unseal(request)
                    .await
                    .is_ok()
            }
            Rpc::Authorize => {
                let mut request = tonic::Request::new(twig_proto::edge::v1::AuthorizeRequest {
                    credential: self.api_key.clone(),
                    target: Some(twig_proto::edge::v1::authorize_request::Target::Method(
                        "/twig.apikeys.v1.ApiKeyService/ListApiKeys".into(),
                    )),
                    client_ip: "192.0.2.10".into(),
                    cost: 1,
                });
                request
                    .metadata_mut()
                    .insert("x-twig-internal-token", self.internal_token.clone());
                twig_proto::edge::v1::authorize_service_client::AuthorizeServiceClient::new(channel)
                    .authorize(request)
                    .await
                    .is_ok_and(|r| r.into_inner().allowed)
            }
            Rpc::Me | Rpc::MeWeb => {
                let mut request = tonic::Request::new(pb::GetCurrentUserRequest {});
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {}", self.access_token)
                        .parse()
                        .expect("ASCII token"),
                );
                if rpc == Rpc::Me {
                    SessionServiceClient::new(channel)
                        .get_current_user(request)
                        .await
                        .is_ok()
                } else {
                    SessionServiceClient::with_origin(self.web.clone(), self.origin.clone())
                        .get_current_user(request)
                        .await
                        .is_ok()
                }
            }
            Rpc::Login => SessionServiceClient::new(channel)
                .login(pb::LoginRequest {
                    email: self.email.clone(),
                    password: PASSWORD.into(),
                    organization_id: String::new(),
                })
                .await
                .is_ok(),
        }
    }
}

const PASSWORD: &str = "load test password 0123";

async fn quota_check(
    channel: Channel,
    internal_token: &tonic::metadata::AsciiMetadataValue,
    subject: &str,
) -> Result<twig_proto::quota::v1::CheckResponse, tonic::Status> {
    let mut request = tonic::Request::new(twig_proto::quota::v1::CheckRequest {
        subject: subject.to_string(),
        cost: 1,
        org_id: String::new(),
    });
    request
        .metadata_mut()
        .insert("x-twig-internal-token", internal_token.clone());
    twig_proto::quota::v1::quota_service_client::QuotaServiceClient::new(channel)
        .check(request)
        .await
        .map(|r| r.into_inner())
}

/// Drives every target at once on one subject for `length`; prints the
/// total admitted against the limit the servers report.
async fn accuracy(
    targets: &[String],
    internal_token: &str,
    concurrency: usize,
    length: Duration,
) -> anyhow::Result<()> {
    let token: tonic::metadata::AsciiMetadataValue = internal_token
        .parse()
        .context("internal token is not ASCII")?;
    let subject = format!("custom:accuracy-{}", uuid::Uuid::new_v4().simple());
    let mut channels = Vec::new();
    for t in targets {
        channels.push(
            connect(t)
                .await
                .with_context(|| format!("connect to {t}"))?,
        );
    }
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = Vec::new();
    for (server, channel) in channels.iter().enumerate() {
        for _ in 0..concurrency {
            let (channel, token, subject) = (channel.clone(), token.clone(), subject.clone());
            tasks.push(tokio::spawn(async move {
                let (mut admitted, mut refused, mut errors, mut limit) = (0u64, 0u64, 0u64, 0);
                while Instant::now() < deadline {
                    match quota_check(channel.clone(), &token, &subject).await {
                        Ok(d) if d.fail_open => errors += 1,
                        Ok(d) => {
                            limit = d.limit;
                            if d.allowed {
                                admitted += 1;
                            } else {
                                refused += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (server, admitted, refused, errors, limit)
            }));
        }
    }
    let mut per_server = vec![(0u64, 0u64, 0u64); targets.len()];
    let mut limit = 0;
    for task in tasks {
        let (server, a, r, e, l) = task.await?;
        per_server[server].0 += a;
        per_server[server].1 += r;
        per_server[server].2 += e;
        limit = limit.max(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "## Accuracy: {} servers on one Redis, {concurrency} workers each, one subject, {:.1} s\n",
        targets.len(),
        elapsed
    );
    println!("| server | admitted | refused | errors or fail-open |");
    println!("|---|---|---|---|");
    for (i, (a, r, e)) in per_server.iter().enumerate() {
        println!("| {} | {a} | {r} | {e} |", targets[i]);
    }
    let admitted: u64 = per_server.iter().map(|s| s.0).sum();
    let checks: u64 = per_server.iter().map(|s| s.0 + s.1 + s.2).sum();
    println!(
        "\nlimit {limit} per period; admitted in total {admitted} ({:+.3}% vs the limit); \
         {checks} checks, {:.0}/s",
        100.0 * (admitted as f64 - limit as f64) / limit.max(1) as f64,
        checks as f64 / elapsed
    );
    Ok(())
}

async fn run(
    client: Arc<Client>,
    rpc: Rpc,
    concurrency: usize,
    length: Duration,
    stop: Option<Arc<AtomicBool>>,
) -> Outcome {
    let start = Instant::now();
    let deadline = start + length;
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let client = client.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ok, mut errors) = (0u64, 0u64);
            loop {
                let now = Instant::now();
                let stopped = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
                if now >= deadline || stopped {
                    break;
                }
                let t = Instant::now();
                if client.call(worker, rpc).await {
                    ok += 1;
                    let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                } else {
                    errors += 1;
                }
            }
            (ok, errors, hist)
        }));
    }
    let mut total = Outcome {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    };
    for task in tasks {
        let (ok, errors, hist) = task.await.expect("worker");
        total.ok += ok;
        total.errors += errors;
        total.hist.add(hist).expect("same bounds");
    }
    total.elapsed = start.elapsed();
    total
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.hist.add(other.hist).expect("same bounds");
    }
}

/// Measures `rpc` against `baseline` in alternating one-second slices
/// (ABBA order) adding up to `length` each, so drift in machine load
/// falls on both alike.
async fn compare(
    client: &Arc<Client>,
    baseline: Rpc,
    rpc: Rpc,
    concurrency: usize,
    length: Duration,
) -> (Outcome, Outcome) {
    let slices = length.as_secs().max(2);
    let slice = Duration::from_secs(1);
    let mut a = run(client.clone(), baseline, concurrency, slice, None).await;
    let mut b = run(client.clone(), rpc, concurrency, slice, None).await;
    for i in 1..slices {
        let order = if i % 2 == 1 {
            [rpc, baseline]
        } else {
            [baseline, rpc]
        };
        for which in order {
            let o = run(client.clone(), which, concurrency, slice, None).await;
            if which == baseline {
                a.merge(o)
            } else {
                b.merge(o)
            }
        }
    }
    (a, b)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rewrap_secrets > 0 {
        let url = args
            .database_url
            .as_deref()
            .context("--rewrap-secrets needs --database-url")?;
        return rewrap_bench(url, args.rewrap_secrets).await;
    }
    if !args.accuracy_targets.is_empty() {
        return accuracy(
            &args.accuracy_targets,
            &args.internal_token,
            args.accuracy_concurrency,
            Duration::from_secs(args.accuracy_seconds),
        )
        .await;
    }
    if args.seed_keys > 0 {
        let url = args
            .database_url
            .as_deref()
            .context("--seed-keys needs --database-url")?;
        let started = Instant::now();
        seed_keys(url, args.seed_keys).await?;
        println!(
            "seeded {} API keys in {:.1} s\n",
            args.seed_keys,
            started.elapsed().as_secs_f64()
        );
    }
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            connect(&args.target)
                .await
                .with_context(|| format!("connect to {}", args.target))?,
        );
    }
    let email = format!("load-{}@example.com", uuid::Uuid::new_v4().simple());
    let mut sessions = SessionServiceClient::new(channels[0].clone());
    let mut create = tonic::Request::new(pb::CreateAccountRequest {
        email: email.clone(),
        password: PASSWORD.into(),
        display_name: String::new(),
        organization_name: String::new(),
    });
    create
        .metadata_mut()
        .insert("x-twig-internal-token", args.operator_token.parse()?);
    sessions
        .create_account(create)
        .await
        .context("create the load user's account (the operator's CreateAccount)")?;
    let access_token = sessions
        .login(pb::LoginRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .context("log the load user in")?
        .into_inner()
        .tokens
        .context("tokens")?
        .access_token;
    let api_key = twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient::new(
        channels[0].clone(),
    )
    .create_api_key({
        let mut r = tonic::Request::new(twig_proto::apikeys::v1::CreateApiKeyRequest {
            service_account_id: String::new(),
            name: "load".into(),
            scopes: vec![twig_proto::auth::v1::Scope::Read as i32],
            expires_at: None,
        });
        r.metadata_mut()
            .insert("authorization", format!("Bearer {access_token}").parse()?);
        r
    })
    .await
    .context("create the load key")?
    .into_inner()
    .secret;
    let context = twig_proto::vault::v1::SealContext {
        organization_id: uuid::Uuid::now_v7().to_string(),
        purpose: "load".into(),
        record_id: "r1".into(),
    };
    let plaintext: prost::bytes::Bytes = (0..args.payload_bytes).map(|i| (i % 251) as u8).collect();
    let sealed = {
        let mut request = tonic::Request::new(twig_proto::vault::v1::SealRequest {
            context: Some(context.clone()),
            plaintext: plaintext.clone(),
        });
        request
            .metadata_mut()
            .insert("x-twig-internal-token", args.internal_token.parse()?);
        twig_proto::vault::v1::vault_service_client::VaultServiceClient::new(channels[0].clone())
            .seal(request)
            .await
            .map(|r| r.into_inner().ciphertext)
            .unwrap_or_default()
    };
    let web = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        );
    let client = Arc::new(Client {
        web,
        origin: args.target.parse().context("--target is not a URI")?,
        channels,
        internal_token: args
            .internal_token
            .parse()
            .context("internal token is not ASCII")?,
        access_token,
        api_key,
        email,
        subjects: (0..64)
            .map(|i| format!("custom:load-{}-{i}", uuid::Uuid::new_v4().simple()))
            .collect(),
        context: context.clone(),
        plaintext: plaintext.clone(),
        sealed: sealed.clone(),
    });
    anyhow::ensure!(
        client.call(0, Rpc::Verify).await,
        "VerifySession fails: check --internal-token"
    );

    let length = Duration::from_secs(args.seconds);
    // Warm-up.
    run(client.clone(), Rpc::Health, 8, Duration::from_secs(1), None).await;
    run(client.clone(), Rpc::Verify, 8, Duration::from_secs(1), None).await;

    for which in &args.verify {
        let mut baseline = Rpc::Health;
        let (rpc, title) = match which.as_str() {
            "session" => (Rpc::Verify, "VerifySession (cache hit)".to_string()),
            "key" => (Rpc::VerifyKey, format!("VerifyApiKey ({})", args.key_label)),
            "quota" => (Rpc::QuotaCheck, "Quota Check".to_string()),
            "seal" => (
                Rpc::Seal,
                format!("Vault Seal ({} bytes)", args.payload_bytes),
            ),
            "unseal" => (
                Rpc::Unseal,
                format!("Vault Unseal ({} bytes)", args.payload_bytes),
            ),
            "authorize" => (
                Rpc::Authorize,
                format!("Authorize (API key, {})", args.key_label),
            ),
            "me" => (Rpc::Me, "GetCurrentUser over native gRPC".to_string()),
            "me-web" => {
                baseline = Rpc::Me;
                (
                    Rpc::MeWeb,
                    "GetCurrentUser over gRPC-web (HTTP/1.1)".to_string(),
                )
            }
            other => {
                anyhow::bail!(
                    "--verify takes session, key, quota, seal, unseal, authorize, me and me-web, not {other}"
                )
            }
        };
        anyhow::ensure!(client.call(0, rpc).await, "{} fails", rpc.label());
        run(client.clone(), rpc, 8, Duration::from_secs(1), None).await;
        println!(
            "## {title} vs baseline ({}), {}s each in alternating 1 s slices\n",
            baseline.label(),
            args.seconds
        );
        println!(
            "| concurrency | rpc | req/s | p50 ms | p99 ms | errors | vs baseline: throughput | p99 ratio |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &c in &args.concurrency {
            let (base, measured) = compare(&client, baseline, rpc, c, length).await;
            for (r, o) in [(baseline, &base), (rpc, &measured)] {
                let (tp, p99) = if r == baseline {
                    ("—".to_string(), "—".to_string())
                } else {
                    (
                        format!("{:.1}%", 100.0 * o.rps() / base.rps()),
                        format!(
                            "{:.2}×",
                            o.p(0.99).as_secs_f64() / base.p(0.99).as_secs_f64()
                        ),
                    )
                };
                println!(
                    "| {c} | {} | {:.0} | {} | {} | {} | {tp} | {p99} |",
                    r.label(),
                    o.rps(),
                    ms(o.p(0.5)),
                    ms(o.p(0.99)),
                    o.errors
                );
            }
        }
        println!();
    }

    if !args.no_login {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        println!(
            "\n## Login under CPU saturation ({cores} cores), {}s each\n",
            args.seconds
        );
        let idle = run(client.clone(), Rpc::Verify, 1, length, None).await;
        let stop = Arc::new(AtomicBool::new(false));
        let logins = {
            let client = client.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                run(
                    client,
                    Rpc::Login,
                    cores * 4,
                    length + Duration::from_secs(1),
                    Some(stop),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let busy = run(client.clone(), Rpc::Verify, 1, length, None).await;
        stop.store(true, Ordering::Relaxed);
        let logins = logins.await?;
        println!("| measurement | value |");
        println!("|---|---|");
        println!(
            "| logins/s (concurrency {}) | {:.1} (errors {}) |",
            cores * 4,
            logins.rps(),
            logins.errors
        );
        println!(
            "| login p50 / p99 ms | {} / {} |",
            ms(logins.p(0.5)),
            ms(logins.p(0.99))
        );
        println!("| VerifySession p99 idle ms | {} |", ms(idle.p(0.99)));
        println!(
            "| VerifySession p99 during logins ms | {} |",
            ms(busy.p(0.99))
        );
        println!(
            "| ratio busy/idle p99 | {:.2}× |",
            busy.p(0.99).as_secs_f64() / idle.p(0.99).as_secs_f64()
        );
    }
    Ok(())
}

/// Inserts `count` keys with one secret each, in batches, as the
/// api-keys service stores them (random secrets: nobody can use them).
async fn seed_keys(url: &str, count: u64) -> anyhow::Result<()> {
    use sea_orm::{EntityTrait, Set};
    use twig_api_keys::entity::{api_key, api_key_secret};
    use twig_crypto::{Token, TokenKind};

    let db = sea_orm::Database::connect(url).await?;
    let now = twig_clock::Clock::now(&twig_clock::SystemClock);
    let org = uuid::Uuid::now_v7();
    let mut done = 0;
    while done < count {
        let n = (count - done).min(1000);
        let mut keys = Vec::with_capacity(n as usize);
        let mut secrets = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let id = uuid::Uuid::now_v7();
            let secret = Token::generate(TokenKind::ApiKey);
            let prefix = Token::public_prefix(secret.expose());
            keys.push(api_key::ActiveModel {
                id: Set(id),
                org_id: Set(org),
                name: Set("seeded".into()),
                scopes: Set("read".into()),
                prefix: Set(prefix.clone()),
                created_by: Set(org),
                created_at: Set(now),
                expires_at: Set(None),
                revoked_at: Set(None),
                last_used_at: Set(None),
                stopped_at: Set(None),
                service_account_id: Set(None),
                allowed_cidrs: Set(String::new()),
            });
            secrets.push(api_key_secret::ActiveModel {
                secret_hash: Set(secret.hash().as_bytes().to_vec()),
                key_id: Set(id),
                prefix: Set(prefix),
                created_at: Set(now),
                expires_at: Set(None),
            });
        }
        let txn = twig_db::begin_write(&db).await?;
        api_key::Entity::insert_many(keys)
            .exec_without_returning(&txn)
            .await?;
        api_key_secret::Entity::insert_many(secrets)
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        done += n;
    }
    Ok(())
}

/// Seeds `count` secrets sealed with master key 1, then times the vault's
/// re-wrap job moving them to master key 2 (the job's own code, batches of
/// the default size).
async fn rewrap_bench(url: &str, count: u64) -> anyhow::Result<()> {
    use sea_orm::{EntityTrait, Set};
    use twig_secrets_vault::entity::secret;
    use twig_secrets_vault::envelope::{self, Binding};
    use twig_secrets_vault::keys::{Keyring, MasterKey};

    let db = twig_db::connect(url, 8).await?;
    twig_identity::migrate(&db, &[&twig_secrets_vault::MODULE]).await?;
    let v1 = MasterKey::generate(1);
    let v1_text = v1.to_base64();
    let clock: Arc<dyn twig_clock::Clock> = Arc::new(twig_clock::SystemClock);
    let first = Arc::new(Keyring::new([v1])?);
    twig_secrets_vault::Vault::open(db.clone(), first.clone(), clock.clone(), 500).await?;
    let started = Instant::now();
    let org = uuid::Uuid::now_v7();
    let now = twig_clock::Clock::now(&twig_clock::SystemClock);
    let mut done = 0;
    while done < count {
        let n = (count - done).min(1000);
        let rows: Vec<secret::ActiveModel> = (0..n)
            .map(|i| {
                let id = uuid::Uuid::now_v7();
                let binding = Binding {
                    org,
                    purpose: "provider-key".into(),
                    record: id.to_string(),
                    field: "value".into(),
                };
                let sealed = envelope::seal(&first, &binding, b"sk-seeded-provider-key-0123456789");
                secret::ActiveModel {
                    id: Set(id),
                    org_id: Set(org),
                    provider: Set("custom:seeded".into()),
                    name: Set(format!("k{}", done + i)),
                    masked: Set("…6789".into()),
                    sealed: Set(sealed.to_text()),
                    key_version: Set(1),
                    created_by: Set("seed".into()),
                    created_at: Set(now),
                    updated_at: Set(now),
                    last_used_at: Set(None),
                }
            })
            .collect();
        secret::Entity::insert_many(rows)
            .exec_without_returning(&db)
            .await?;
        done += n;
    }
    println!(
        "seeded {count} secrets in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let both = Arc::new(Keyring::new([
        MasterKey::from_base64(1, &v1_text)?,
        MasterKey::generate(2),
    ])?);
    let vault = Arc::new(twig_secrets_vault::Vault::open(db, both, clock, 500).await?);
    let started = Instant::now();
    vault.start_rewrap().await?;
    loop {
        let (_, job) = vault.master_keys().await?;
        let job = job.context("no job")?;
        if job.job.finished_at.is_some() {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "re-wrapped {} data keys in {secs:.2} s: {:.0} per second (batches of 500)",
                job.job.rewrapped,
                job.job.rewrapped as f64 / secs
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
