//! `twig-timing`: does the answer time of a public or tenant RPC tell
//! whether an email has an account? For `SignUp`, `RequestPasswordReset`
//! and `CreateInvitation` it times, one request at a time, three arms
//! interleaved in a random order in every round (so drift in machine load
//! falls on all of them alike):
//!
//! - E: an email that has an account;
//! - U: a fresh email that has none;
//! - U2: another fresh email that has none — an A/A control measured in
//!   the same run, whose difference from U is the noise floor.
//!
//! Per RPC it reports the median and p90 of each arm and the differences
//! E − U and U2 − U with 95% bootstrap intervals, and a verdict. Then a
//! burst probe sends many `SignUp` / `RequestPasswordReset` requests at
//! once, for distinct emails with accounts and then for distinct emails
//! without, and counts how each was answered.
//!
//! It is a measurement, not a test: after a completed run it exits 0
//! whatever the verdicts; it fails only when it cannot measure (a refused
//! call, a server that is not there). Run it through `scripts/bench-timing`,
//! which starts a server with the brakes on public requests lifted.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use twig_proto::sessions::v1 as pb;
use twig_proto::sessions::v1::session_service_client::SessionServiceClient;

/// The same allocator as the server and `twig-load`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "twig-timing",
    about = "Whether answer times tell which emails have accounts (SignUp, RequestPasswordReset, CreateInvitation)"
)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The token of an internal client with `platform.operator`, which
    /// creates the accounts (`CreateAccount`).
    #[arg(long, env = "TWIG_LOAD_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: String,
    /// Timed rounds; each times every arm of every chosen RPC once.
    #[arg(long, default_value_t = 600)]
    rounds: usize,
    /// Untimed rounds first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Which RPCs: signup, reset, invite.
    #[arg(long, value_delimiter = ',', default_value = "signup,reset,invite")]
    rpcs: Vec<String>,
    /// Seed of the order of the arms and of the bootstrap (default: random;
    /// printed, so a run's order can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Accounts made for arm E (used in turn).
    #[arg(long, default_value_t = 200)]
    pool: usize,
    /// Bootstrap resamples per interval.
    #[arg(long, default_value_t = 2000)]
    resamples: usize,
    /// Requests sent at once in the burst probe (0: no probe).
    #[arg(long, default_value_t = 150)]
    burst: usize,
    /// Before each burst the tool waits until the background work the
    /// earlier requests queued on the server (a password hash per sign-up)
    /// has drained (at most --settle-secs), then this many milliseconds
    /// more, so it falls on neither burst.
    #[arg(long, default_value_t = 1000)]
    burst_pause_ms: u64,
    /// The longest wait for the server's background work to drain.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
}

/// The password of every account and sign-up of the run.
const PASSWORD: &str = "timing test password 0123";
/// An access token is refreshed (by logging in again) when it is older
/// than this; the server's default lifetime is 15 minutes.
const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(10 * 60);
/// The first number of an unknown email; pool emails are numbered below
/// it, and every email has the same length.
const FIRST_UNKNOWN: u64 = 1_000_000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Rpc {
    SignUp,
    Reset,
    Invite,
}

impl Rpc {
    fn parse(name: &str) -> anyhow::Result<Self> {
        Ok(match name.trim() {
            "signup" => Rpc::SignUp,
            "reset" => Rpc::Reset,
            "invite" => Rpc::Invite,
            other => anyhow::bail!("--rpcs takes signup, reset and invite, not {other:?}"),
        })
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rpc::SignUp => "SignUp",
            Rpc::Reset => "RequestPasswordReset",
            Rpc::Invite => "CreateInvitation",
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arm {
    /// An email with an account.
    E,
    /// A fresh email without one.
    U,
    /// Another fresh email without one: the A/A control.
    U2,
}

const ARMS: [Arm; 3] = [Arm::E, Arm::U, Arm::U2];

impl Arm {
    fn index(self) -> usize {
        self as usize
    }

    fn label(self) -> &'static str {
        match self {
            Arm::E => "E (has an account)",
            Arm::U => "U (no account)",
            Arm::U2 => "U2 (no account, A/A control)",
        }
    }
}

/// SplitMix64: small, seeded, good enough for shuffling and resampling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias of the modulo is negligible here).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

fn bearer(token: &str) -> anyhow::Result<AsciiMetadataValue> {
    format!("Bearer {token}")
        .parse()
        .context("the access token is not ASCII")
}

/// Why a call failed, with what to do about it.
fn refused(what: &str, email: &str, status: &tonic::Status) -> anyhow::Error {
    let hint = match status.code() {
        Code::ResourceExhausted => {
            " — the server's brakes on public requests ([sessions.brakes]) or its \
             request caps refused it: run twig-timing through scripts/bench-timing, \
             which starts a server with every brake lifted"
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            " — check TWIG_LOAD_OPERATOR_TOKEN (an internal client with platform.operator)"
        }
        Code::Unavailable => " — is the server running at --target?",
        _ => "",
    };
    anyhow::anyhow!(
        "{what} for {email} failed: {:?} {:?}{hint}",
        status.code(),
        status.message()
    )
}

/// The names of an answer's headers, sorted (`date` left out): an arm
/// answered with other headers than another would tell them apart.
fn header_names(metadata: &tonic::metadata::MetadataMap) -> Vec<String> {
    let mut names: Vec<String> = metadata
        .keys()
        .map(|k| match k {
            tonic::metadata::KeyRef::Ascii(k) => k.as_str().to_string(),
            tonic::metadata::KeyRef::Binary(k) => k.as_str().to_string(),
        })
        .filter(|k| k != "date")
        .collect();
    names.sort();
    names
}

struct Bench {
    client: SessionServiceClient<Channel>,
    operator_token: AsciiMetadataValue,
    run: String,
    /// Emails with an account (not members of the owner's organisation).
    pool: Vec<String>,
    /// Where each RPC's arm E is in the pool.
    cursor: [usize; 3],
    next_unknown: u64,
    owner_email: String,
    org_id: String,
    access: AsciiMetadataValue,
    access_at: Instant,
    /// How long the owner's login takes with the server's password-hash
    /// threads idle (measured at set-up).
    idle_login: Duration,
    /// The header names of each RPC's first answer.
    headers: [Option<Vec<String>>; 3],
}

impl Bench {
    fn email(&self, n: u64) -> String {
        format!("timing-{}-{n:07}@example.com", self.run)
    }

    fn unknown(&mut self) -> String {
        let email = self.email(self.next_unknown);
        self.next_unknown += 1;
        email
    }

    fn existing(&mut self, rpc: Rpc) -> String {
        let at = &mut self.cursor[rpc.index()];
        let email = self.pool[*at % self.pool.len()].clone();
        *at += 1;
        email
    }

    fn as_owner<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.access.clone());
        request
    }

    async fn create_account(
        mut client: SessionServiceClient<Channel>,
        token: AsciiMetadataValue,
        email: String,
    ) -> anyhow::Result<pb::CreateAccountResponse> {
        let mut request = tonic::Request::new(pb::CreateAccountRequest {
            email: email.clone(),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        });
        request
            .metadata_mut()
            .insert("x-twig-internal-token", token);
        client
            .create_account(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| refused("CreateAccount (the operator's)", &email, &s))
    }

    /// The accounts of arm E, and the owner whose organisation invites.
    async fn set_up(&mut self, pool: usize) -> anyhow::Result<()> {
        let started = Instant::now();
        let emails: Vec<String> = (0..pool as u64).map(|i| self.email(i)).collect();
        // The server hashes each password: a few at once keep its hash
        // threads busy without queueing much.
        let mut made = futures::stream::iter(emails.clone())
            .map(|email| {
                Self::create_account(self.client.clone(), self.operator_token.clone(), email)
            })
            .buffer_unordered(4);
        while let Some(result) = made.next().await {
            result?;
        }
        drop(made);
        self.pool = emails;
        let owner = Self::create_account(
            self.client.clone(),
            self.operator_token.clone(),
            self.owner_email.clone(),
        )
        .await?;
        self.org_id = owner
            .organization
            .context("CreateAccount answered no organisation")?
            .id;
        // Nothing queued on the hash threads now: the quickest of a few
        // logins is what one takes when they are idle.
        let mut idle = Duration::MAX;
        for _ in 0..3 {
            let started = Instant::now();
            self.log_in().await?;
            idle = idle.min(started.elapsed());
        }
        self.idle_login = idle;
        println!(
            "set up {pool} accounts and the inviting owner in {:.1} s\n",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn log_in(&mut self) -> anyhow::Result<()> {
        let tokens = self
            .client
            .login(pb::LoginRequest {
                email: self.owner_email.clone(),
                password: PASSWORD.into(),
                organization_id: self.org_id.clone(),
            })
            .await
            .map_err(|s| refused("Login (the owner's)", &self.owner_email, &s))?
            .into_inner()
            .tokens
            .context("Login answered no tokens")?;
        self.access = bearer(&tokens.access_token)?;
        self.access_at = Instant::now();
        Ok(())
    }

    /// Waits until the background work queued on the server's password
    /// hash threads (a hash per sign-up) has drained: a login hashes on the
    /// same threads, behind whatever waits there, so it is quick again
    /// only then. Gives up after `limit`. Answers how long it waited.
    async fn settle(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            let login = Instant::now();
            self.log_in().await?;
            if login.elapsed() <= self.idle_login * 3 || started.elapsed() >= limit {
                return Ok(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One call of `rpc` for `arm`, timed from the request's start to its
    /// whole answer; any failure, or an answer unlike the others, ends the
    /// run.
    async fn call(&mut self, rpc: Rpc, arm: Arm) -> anyhow::Result<Duration> {
        let email = match arm {
            Arm::E => self.existing(rpc),
            Arm::U | Arm::U2 => self.unknown(),
        };
        if rpc == Rpc::Invite && self.access_at.elapsed() > TOKEN_REFRESH_AFTER {
            self.log_in().await?;
        }
        let what = format!("{rpc} (arm {arm:?})");
        let mut client = self.client.clone();
        let (elapsed, headers) = match rpc {
            Rpc::SignUp => {
                let request = pb::SignUpRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    display_name: String::new(),
                    organization_name: String::new(),
                };
                let started = Instant::now();
                let answer = client.sign_up(request).await;
                let elapsed = started.elapsed();
                let answer = answer.map_err(|s| refused(&what, &email, &s))?;
                anyhow::ensure!(
                    *answer.get_ref() == pb::SignUpResponse {},
                    "{what} for {email}: the answer is not {{}}: {:?}",
                    answer.get_ref()
                );
                (elapsed, header_names(answer.metadata()))
            }
            Rpc::Reset => {
                let request = pb::RequestPasswordResetRequest {
                    email: email.clone(),
                };
                let started = Instant::now();
                let answer = client.request_password_reset(request).await;
                let elapsed = started.elapsed();
                let answer = answer.map_err(|s| refused(&what, &email, &s))?;
                anyhow::ensure!(
                    *answer.get_ref() == pb::RequestPasswordResetResponse {},
                    "{what} for {email}: the answer is not {{}}: {:?}",
                    answer.get_ref()
                );
                (elapsed, header_names(answer.metadata()))
            }
            Rpc::Invite => {
                let request = self.as_owner(pb::CreateInvitationRequest {
                    organization_id: self.org_id.clone(),
                    email: email.clone(),
                    role: pb::Role::Member as i32,
                });
                let started = Instant::now();
                let answer = client.create_invitation(request).await;
                let elapsed = started.elapsed();
                let answer = answer.map_err(|s| refused(&what, &email, &s))?;
                let headers = header_names(answer.metadata());
                let invitation = answer
                    .into_inner()
                    .invitation
                    .with_context(|| format!("{what} for {email}: no invitation in the answer"))?;
                anyhow::ensure!(
                    invitation.email == email
                        && invitation.organization_id == self.org_id
                        && invitation.role == pb::Role::Member as i32
                        && invitation.state == pb::InvitationState::Pending as i32,
                    "{what} for {email}: an unexpected invitation: {invitation:?}"
                );
                // Untimed: revoked at once, so pending invitations never
                // pile up and the email may be invited again later.
                client
                    .revoke_invitation(self.as_owner(pb::RevokeInvitationRequest {
                        organization_id: self.org_id.clone(),
                        invitation_id: invitation.id.clone(),
                    }))
                    .await
                    .map_err(|s| refused("RevokeInvitation", &email, &s))?;
                (elapsed, headers)
            }
        };
        match &self.headers[rpc.index()] {
            None => self.headers[rpc.index()] = Some(headers),
            Some(first) => anyhow::ensure!(
                *first == headers,
                "{what} for {email}: answered with headers {headers:?}, another call with {first:?}"
            ),
        }
        Ok(elapsed)
    }
}

/// The `q` quantile of sorted values, interpolated between neighbours.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = q * (sorted.len() - 1) as f64;
    let (low, high) = (at.floor() as usize, at.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (at - low as f64)
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// A difference and its 95% bootstrap interval.
#[derive(Clone, Copy)]
struct Interval {
    point: f64,
    low: f64,
    high: f64,
}

impl Interval {
    fn contains_zero(&self) -> bool {
        self.low <= 0.0 && 0.0 <= self.high
    }

    fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:+.3} [{:+.3}, {:+.3}]",
            self.point, self.low, self.high
        )
    }
}

/// The differences E − U and U2 − U of the medians and of the p90s, with
/// intervals from resampling each arm with replacement.
struct Differences {
    e_median: Interval,
    e_p90: Interval,
    aa_median: Interval,
    aa_p90: Interval,
}

fn bootstrap(e: &[f64], u: &[f64], u2: &[f64], resamples: usize, rng: &mut Rng) -> Differences {
    let stats = |v: &[f64]| {
        let s = sorted(v);
        (quantile(&s, 0.5), quantile(&s, 0.9))
    };
    let (pe, pu, pu2) = (stats(e), stats(u), stats(u2));
    let mut draws: [Vec<f64>; 4] = Default::default();
    let mut buffer = Vec::new();
    let mut resample = |values: &[f64], rng: &mut Rng| {
        buffer.clear();
        buffer.extend((0..values.len()).map(|_| values[rng.below(values.len())]));
        buffer.sort_by(f64::total_cmp);
        (quantile(&buffer, 0.5), quantile(&buffer, 0.9))
    };
    for _ in 0..resamples {
        let (re, ru, ru2) = (resample(e, rng), resample(u, rng), resample(u2, rng));
        draws[0].push(re.0 - ru.0);
        draws[1].push(re.1 - ru.1);
        draws[2].push(ru2.0 - ru.0);
        draws[3].push(ru2.1 - ru.1);
    }
    let interval = |point: f64, draws: &[f64]| {
        let s = sorted(draws);
        Interval {
            point,
            low: quantile(&s, 0.025),
            high: quantile(&s, 0.975),
        }
    };
    Differences {
        e_median: interval(pe.0 - pu.0, &draws[0]),
        e_p90: interval(pe.1 - pu.1, &draws[1]),
        aa_median: interval(pu2.0 - pu.0, &draws[2]),
        aa_p90: interval(pu2.1 - pu.1, &draws[3]),
    }
}

/// "same within noise" or "DIFFERS", with why.
fn verdict(d: &Differences) -> String {
    let floor = d.aa_median.point.abs() + d.aa_median.half_width();
    if d.e_median.contains_zero() {
        format!(
            "same within noise (the E−U median interval [{:+.3}, {:+.3}] ms contains 0)",
            d.e_median.low, d.e_median.high
        )
    } else if d.e_median.point.abs() <= floor {
        format!(
            "same within noise (|E−U median| {:.3} ms ≤ the A/A floor {floor:.3} ms: \
             |U2−U median| + its interval's half-width)",
            d.e_median.point.abs()
        )
    } else {
        format!(
            "DIFFERS (E−U median {} ms; the A/A floor is {floor:.3} ms)",
            d.e_median
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn report(rpc: Rpc, samples: &[Vec<f64>; 3], resamples: usize, rng: &mut Rng) {
    let n = samples[0].len();
    println!("## {rpc} (n = {n} per arm)\n");
    println!("| arm | median ms | p90 ms |");
    println!("|---|---|---|");
    for arm in ARMS {
        let s = sorted(&samples[arm.index()]);
        println!(
            "| {} | {:.3} | {:.3} |",
            arm.label(),
            quantile(&s, 0.5),
            quantile(&s, 0.9)
        );
    }
    let d = bootstrap(&samples[0], &samples[1], &samples[2], resamples, rng);
    println!("\n| difference | median ms [95% CI] | p90 ms [95% CI] |");
    println!("|---|---|---|");
    println!("| E − U | {} | {} |", d.e_median, d.e_p90);
    println!("| U2 − U (A/A) | {} | {} |", d.aa_median, d.aa_p90);
    println!("\nverdict {rpc}: {}\n", verdict(&d));
}

/// How a burst was answered.
struct Burst {
    ok: usize,
    errors: BTreeMap<String, usize>,
    times: Vec<f64>,
    wall: Duration,
}

/// Error codes and how often each came, or "none".
fn codes(errors: &BTreeMap<String, usize>) -> String {
    if errors.is_empty() {
        return "none".into();
    }
    errors
        .iter()
        .map(|(code, n)| format!("{code} × {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends one request of `rpc` per email, all at once on one channel.
async fn burst(channel: &Channel, rpc: Rpc, emails: Vec<String>) -> anyhow::Result<Burst> {
    let gate = Arc::new(tokio::sync::Barrier::new(emails.len() + 1));
    let mut tasks = Vec::with_capacity(emails.len());
    for email in emails {
        let mut client = SessionServiceClient::new(channel.clone());
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let started = Instant::now();
            let answer = match rpc {
                Rpc::SignUp => client
                    .sign_up(pb::SignUpRequest {
                        email,
                        password: PASSWORD.into(),
                        display_name: String::new(),
                        organization_name: String::new(),
                    })
                    .await
                    .map(|_| ()),
                Rpc::Reset => client
                    .request_password_reset(pb::RequestPasswordResetRequest { email })
                    .await
                    .map(|_| ()),
                Rpc::Invite => unreachable!("the burst probe is for public RPCs"),
            };
            (started.elapsed(), answer.map_err(|s| s.code()))
        }));
    }
    gate.wait().await;
    let started = Instant::now();
    let mut outcome = Burst {
        ok: 0,
        errors: BTreeMap::new(),
        times: Vec::new(),
        wall: Duration::ZERO,
    };
    for task in tasks {
        let (elapsed, answer) = task.await.context("a burst request's task")?;
        outcome.times.push(ms(elapsed));
        match answer {
            Ok(()) => outcome.ok += 1,
            Err(code) => *outcome.errors.entry(format!("{code:?}")).or_default() += 1,
        }
    }
    outcome.wall = started.elapsed();
    Ok(outcome)
}

/// The burst probe: for each public RPC, bursts of emails with accounts
/// and of emails without, in the order E U U E (so whatever the earlier
/// bursts leave behind on the server falls on both alike).
async fn burst_probe(bench: &mut Bench, channel: &Channel, args: &Args, rpcs: &[Rpc]) {
    let size = args.burst;
    println!(
        "## Burst: {size} requests at once on one connection, distinct emails, \
         bursts in the order E U U E, each once the server's background work has \
         drained (an owner's login as quick as when idle, at most {} s) and {} ms more\n",
        args.settle_secs, args.burst_pause_ms
    );
    println!(
        "| rpc | burst | emails | settled after s | answered OK | errors | median ms | max ms | wall ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut lines = Vec::new();
    for &rpc in rpcs.iter().filter(|r| **r != Rpc::Invite) {
        // Per arm (E, U): answered OK, errors by code, every request's time.
        let mut totals: [(usize, BTreeMap<String, usize>, Vec<f64>); 2] = Default::default();
        for (i, arm) in [Arm::E, Arm::U, Arm::U, Arm::E].into_iter().enumerate() {
            let emails: Vec<String> = match arm {
                Arm::E => bench.pool[..size].to_vec(),
                _ => (0..size).map(|_| bench.unknown()).collect(),
            };
            let label = if arm == Arm::E {
                "with an account"
            } else {
                "without"
            };
            let settled = match bench.settle(Duration::from_secs(args.settle_secs)).await {
                Ok(waited) => waited,
                Err(e) => {
                    lines.push(format!("burst {rpc} #{}: {e:#}", i + 1));
                    continue;
                }
            };
            tokio::time::sleep(Duration::from_millis(args.burst_pause_ms)).await;
            let outcome = match burst(channel, rpc, emails).await {
                Ok(o) => o,
                Err(e) => {
                    lines.push(format!("burst {rpc} #{}: the probe failed: {e:#}", i + 1));
                    continue;
                }
            };
            let times = sorted(&outcome.times);
            println!(
                "| {rpc} | {} | {label} | {:.1} | {} / {size} | {} | {:.3} | {:.3} | {:.1} |",
                i + 1,
                settled.as_secs_f64(),
                outcome.ok,
                codes(&outcome.errors),
                quantile(&times, 0.5),
                times.last().copied().unwrap_or_default(),
                ms(outcome.wall)
            );
            let total = &mut totals[arm.index()];
            total.0 += outcome.ok;
            for (code, n) in &outcome.errors {
                *total.1.entry(code.clone()).or_default() += n;
            }
            total.2.extend(outcome.times);
        }
        let median = |times: &[f64]| {
            if times.is_empty() {
                f64::NAN
            } else {
                quantile(&sorted(times), 0.5)
            }
        };
        let [(e_ok, e_errors, e_times), (u_ok, u_errors, u_times)] = &totals;
        let times = format!(
            "median request time with an account {:.3} ms, without {:.3} ms",
            median(e_times),
            median(u_times)
        );
        lines.push(if e_ok == u_ok && e_errors == u_errors {
            format!(
                "burst {rpc}: answered alike ({e_ok} OK of {} each way; errors: {}); {times}",
                2 * size,
                codes(e_errors)
            )
        } else {
            format!(
                "burst {rpc}: MISMATCH — with an account {e_ok} OK of {n}, errors {}; \
                 without {u_ok} OK of {n}, errors {}; {times}",
                codes(e_errors),
                codes(u_errors),
                n = 2 * size
            )
        });
    }
    println!();
    for line in lines {
        println!("{line}");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rpcs = Vec::new();
    for name in &args.rpcs {
        let rpc = Rpc::parse(name)?;
        if !rpcs.contains(&rpc) {
            rpcs.push(rpc);
        }
    }
    anyhow::ensure!(!rpcs.is_empty(), "--rpcs names no RPC");
    anyhow::ensure!(args.rounds >= 2, "--rounds must be at least 2");
    let seed = args
        .seed
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let mut rng = Rng(seed);
    let channel = Endpoint::from_shared(args.target.clone())
        .context("--target is not a URI")?
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("connect to {}", args.target))?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let mut bench = Bench {
        client: SessionServiceClient::new(channel.clone()),
        operator_token: args
            .operator_token
            .parse()
            .context("the operator token is not ASCII")?,
        owner_email: format!("timing-{run}-owner@example.com"),
        run: run.clone(),
        pool: Vec::new(),
        cursor: [0; 3],
        next_unknown: FIRST_UNKNOWN,
        org_id: String::new(),
        access: bearer("none")?,
        access_at: Instant::now(),
        idle_login: Duration::ZERO,
        headers: [None, None, None],
    };
    println!("# twig-timing: answer time for an email with an account (E) vs without (U, U2)\n");
    println!(
        "target {}, run {run}, seed {seed}, rpcs {}, {} timed rounds after {} warm-up rounds, \
         arms of every RPC in a random order per round, one request at a time, \
         {} bootstrap resamples\n",
        args.target,
        rpcs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        args.rounds,
        args.warmup,
        args.resamples
    );
    bench
        .set_up(args.pool.max(args.burst).max(1))
        .await
        .context("set-up")?;

    let mut order: Vec<(Rpc, Arm)> = rpcs
        .iter()
        .flat_map(|&rpc| ARMS.map(|arm| (rpc, arm)))
        .collect();
    let mut samples: [[Vec<f64>; 3]; 3] = Default::default();
    let started = Instant::now();
    for round in 0..args.warmup + args.rounds {
        rng.shuffle(&mut order);
        for &(rpc, arm) in &order {
            let elapsed = bench
                .call(rpc, arm)
                .await
                .with_context(|| format!("round {round}"))?;
            if round >= args.warmup {
                samples[rpc.index()][arm.index()].push(ms(elapsed));
            }
        }
    }
    println!(
        "measured {} calls in {:.1} s\n",
        (args.warmup + args.rounds) * order.len(),
        started.elapsed().as_secs_f64()
    );
    for &rpc in &rpcs {
        report(rpc, &samples[rpc.index()], args.resamples, &mut rng);
    }
    if args.burst > 0 && rpcs.iter().any(|r| *r != Rpc::Invite) {
        burst_probe(&mut bench, &channel, &args, &rpcs).await;
    }
    Ok(())
}
