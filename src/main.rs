//! `twig-identity`: serve, migrate, bootstrap, and the operator's `user`
//! and `org` commands.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use twig_config::Config;
use twig_identity::{Deps, build, load_config, migrate, open_database, parse_services, run};

/// Requests allocate many small, short-lived buffers; mimalloc serves
/// them with less contention and less fragmentation than the system
/// allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The identity and access back end of the twig platform.
#[derive(Parser)]
#[command(name = "twig-identity", version)]
struct Cli {
    /// A TOML configuration file (optional; TWIG__… variables override it).
    #[arg(long, short, env = "TWIG_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the services on one port (all of them unless --services).
    Serve {
        /// Comma-separated subset, e.g. `sessions`.
        #[arg(long, env = "TWIG_SERVICES")]
        services: Option<String>,
    },
    /// Applies database migrations and exits.
    Migrate {
        /// Comma-separated subset; default all.
        #[arg(long)]
        services: Option<String>,
    },
    /// Creates the first organisation and its owner; prints the owner's
    /// password once. Refuses to run when an organisation exists.
    Bootstrap {
        /// Name of the first organisation.
        #[arg(long, default_value = "Default organisation")]
        org_name: String,
        /// Email of the first owner.
        #[arg(long)]
        email: String,
    },
    /// The platform operator's acts on accounts (the same code as the
    /// internal `SetUserDisabled` RPC with `platform.operator`).
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// The platform operator's acts on organisations' plans and limits
    /// (the same code as the internal `SetOrganizationPlan` and
    /// `SetOrganizationLimit` RPCs with `platform.operator`).
    Org {
        #[command(subcommand)]
        action: OrgCommand,
    },
}

#[derive(Subcommand)]
enum OrgCommand {
    /// Moves an organisation to a plan of `[plans]`.
    Plan {
        /// The organisation's id.
        #[arg(long)]
        org: uuid::Uuid,
        /// The plan's name.
        #[arg(long)]
        plan: String,
    },
    /// Gives an organisation a limit of its own, above its plan too.
    Limit {
        /// The organisation's id.
        #[arg(long)]
        org: uuid::Uuid,
        /// Requests (cost units) per period.
        #[arg(long)]
        requests: u64,
        /// The period, in seconds.
        #[arg(long, default_value_t = 60)]
        period_seconds: u64,
    },
    /// Prints an organisation's plan and limits.
    Show {
        /// The organisation's id.
        #[arg(long)]
        org: uuid::Uuid,
    },
    /// Lists organisations, oldest first: id, members, plan, name.
    List {
        /// At most this many (1 to 10000).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Disables an account everywhere and ends every session of it.
    Disable {
        /// The account's email.
        #[arg(long)]
        email: String,
    },
    /// Enables a disabled account again.
    Enable {
        /// The account's email.
        #[arg(long)]
        email: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Configuration is read and validated before anything else starts.
    let config = match load_config(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("twig-identity: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("twig-identity: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main_async(cli.command, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twig-identity: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn main_async(command: Command, config: Config) -> anyhow::Result<()> {
    let telemetry = twig_telemetry::init(&config.telemetry)?;
    let result = match command {
        Command::Serve { services } => {
            let services = parse_services(services.as_deref()).map_err(anyhow::Error::msg)?;
            let db = open_database(&config).await?;
            migrate(&db, &services).await?;
            if config.auth.internal_token.is_none() {
                tracing::warn!(
                    "auth.internal_token is not set: internal RPCs such as VerifySession are refused"
                );
            }
            // Before the services, so the counters they register record.
            let metrics = twig_server::install_recorder()?;
            let suite = build(&config, db, &services, Deps::default()).await?;
            let admin = tokio::net::TcpListener::bind(config.server.admin_listen)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} (server.admin_listen)",
                        config.server.admin_listen
                    )
                })?;
            let listener = tokio::net::TcpListener::bind(config.server.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.listen))?;
            tokio::spawn(async move {
                if let Err(e) = twig_server::serve_admin(admin, metrics).await {
                    let e = anyhow::Error::from(e);
                    tracing::error!(error = %format!("{e:#}"), "admin port stopped");
                }
            });
            run(
                listener,
                suite,
                config.server.drain_timeout,
                twig_server::shutdown_signal(),
            )
            .await
        }
        Command::Migrate { services } => {
            let services = parse_services(services.as_deref()).map_err(anyhow::Error::msg)?;
            let db = open_database(&config).await?;
            migrate(&db, &services).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Bootstrap { org_name, email } => {
            let db = open_database(&config).await?;
            migrate(&db, twig_identity::MODULES).await?;
            let sessions_only = parse_services(Some("sessions")).map_err(anyhow::Error::msg)?;
            let suite = build(&config, db, &sessions_only, Deps::default()).await?;
            let sessions = suite
                .handle::<std::sync::Arc<twig_sessions::Sessions>>()
                .context("the sessions service did not build")?;
            let (user, org, password) = sessions
                .bootstrap(&org_name, &email)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("organisation: {} ({})", org.name, org.id);
            println!("owner:        {} ({})", user.email, user.id);
            println!("password:     {password}");
            println!("This password is shown once. Sign in and change it.");
            Ok(())
        }
        Command::User { action } => user_command(&config, action).await,
        Command::Org { action } => org_command(&config, action).await,
    };
    telemetry.shutdown().await;
    result
}

/// Runs an operator's `user` command against the database (and, with
/// Redis configured, tells running replicas to drop the account's cached
/// tokens).
async fn user_command(config: &Config, action: UserCommand) -> anyhow::Result<()> {
    let (email, disabled) = match &action {
        UserCommand::Disable { email } => (email, true),
        UserCommand::Enable { email } => (email, false),
    };
    let db = open_database(config).await?;
    migrate(&db, twig_identity::MODULES).await?;
    // Every service, so that the account's API keys stop or resume too.
    let suite = build(config, db, twig_identity::MODULES, Deps::default()).await?;
    let sessions = suite
        .handle::<std::sync::Arc<twig_sessions::Sessions>>()
        .context("the sessions service did not build")?;
    let email = twig_sessions::Email::parse(email).map_err(|e| anyhow::anyhow!("email {e}"))?;
    let user = sessions
        .identity()
        .user_by_email(&email)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no account has the email {email}"))?;
    let ended = sessions
        .set_user_disabled("cli", user.id, disabled)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if disabled {
        println!(
            "disabled {} ({}); {ended} sessions ended",
            user.email, user.id
        );
    } else {
        println!("enabled {} ({})", user.email, user.id);
    }
    Ok(())
}

/// Runs an operator's `org` command against the database (and, with Redis
/// configured, tells running replicas to forget the organisation's cached
/// plan or limit).
async fn org_command(config: &Config, action: OrgCommand) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    migrate(&db, twig_identity::MODULES).await?;
    // Sessions knows the organisations; quota keeps plans and limits.
    let services = parse_services(Some("sessions,quota")).map_err(anyhow::Error::msg)?;
    let suite = build(config, db.clone(), &services, Deps::default()).await?;
    let sessions = suite
        .handle::<std::sync::Arc<twig_sessions::Sessions>>()
        .context("the sessions service did not build")?;
    let quota = suite
        .handle::<std::sync::Arc<twig_quota::Quota>>()
        .context("the quota service did not build")?;
    let org = match &action {
        OrgCommand::Plan { org, .. } | OrgCommand::Limit { org, .. } | OrgCommand::Show { org } => {
            *org
        }
        OrgCommand::List { limit } => {
            if !(1..=10_000).contains(limit) {
                anyhow::bail!("--limit must be 1 to 10000");
            }
            let orgs = sessions
                .identity()
                .organizations(*limit)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{:<36}  {:>7}  {:<12}  name", "id", "members", "plan");
            for (org, members) in orgs {
                let plan = quota
                    .organization_plan(None, &org.id.to_string())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!(
                    "{:<36}  {members:>7}  {:<12}  {}",
                    org.id, plan.plan.name, org.name
                );
            }
            return Ok(());
        }
    };
    sessions
        .identity()
        .organization_in(&db, org)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("no organisation has the id {org}"))?;
    match action {
        OrgCommand::Plan { plan, .. } => {
            let assignment = quota
                .set_organization_plan("cli", org, &plan)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{org} is on the plan {}", assignment.plan.name);
        }
        OrgCommand::Limit {
            requests,
            period_seconds,
            ..
        } => {
            let period = std::time::Duration::from_secs(period_seconds);
            let buckets = u32::try_from(period_seconds.clamp(1, 600)).unwrap_or(600);
            let limit = twig_quota::Limit::new(requests, period, buckets)
                .map_err(|e| anyhow::anyhow!("--requests, --period-seconds: {e}"))?;
            let rule = twig_quota::Rule {
                limit,
                shadow: false,
            };
            quota
                .set_limit_as_operator("cli", org, &format!("org:{org}"), rule)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("org:{org} has its own limit: {requests} requests per {period_seconds} s");
        }
        OrgCommand::Show { .. } => {
            let assignment = quota
                .organization_plan(None, &org.to_string())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let plan = &assignment.plan;
            let since = match &assignment.stored {
                Some(m) => format!("since {} by {}", m.updated_at.to_rfc3339(), m.updated_by),
                None => "the default plan".to_string(),
            };
            println!("organisation:  {org}");
            println!("plan:          {} ({since})", plan.name);
            println!("default limit: {} per key", plan.config.default_limit);
            match plan.custom_limit_max() {
                Some(max) => println!("custom limits: up to {max}"),
                None => println!("custom limits: off"),
            }
            let features: Vec<&str> = plan.config.features.iter().map(|f| f.as_str()).collect();
            println!("features:      {}", features.join(", "));
            let limits = quota
                .limits()
                .list(org)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if limits.is_empty() {
                println!("limits:        none of its own");
            }
            for m in limits {
                println!(
                    "limit:         {} {} requests per {} s{} (set {} by {})",
                    m.subject,
                    m.limit,
                    m.period_ms as f64 / 1000.0,
                    if m.shadow { ", shadow" } else { "" },
                    m.updated_at.to_rfc3339(),
                    m.updated_by
                );
            }
        }
        OrgCommand::List { .. } => unreachable!("listed above"),
    }
    Ok(())
}
