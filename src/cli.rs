//! The command line: `serve`, `migrate`, `reconcile`, `audit`, `redrive`, `token`, `openapi`,
//! `check-config`, `verify`, `fairness-key`. The benchmark is a crate of its own (`bench/`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::auth::TokenKeys;
use crate::configuration::Settings;
use crate::domain::{CouponId, UserId};
use crate::fairness::{verify, LogKey};
use crate::ops::{self, Reconciler};
use crate::startup::{Application, Role};
use crate::{api, store, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "fcfs-coupon",
    version,
    about = "First-come, first-served coupon issuing"
)]
pub struct Cli {
    /// A TOML configuration file, read before the APP_… environment variables.
    #[arg(long, global = true, env = "APP_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service until SIGINT or SIGTERM.
    Serve {
        /// Which parts to run; repeat to run several. Default: all three.
        #[arg(long = "role", value_enum)]
        roles: Vec<Role>,
    },
    /// Create the database if missing, apply migrations, and exit.
    Migrate,
    /// Print a signed token for development and tests.
    Token {
        /// The user id (`sub` claim), a positive integer.
        #[arg(long)]
        user: i64,
        /// Add `"role": "admin"`.
        #[arg(long, conflicts_with = "rehearsal")]
        admin: bool,
        /// A rehearsal user's token, signed with `APP_AUTH__REHEARSAL_SECRET`: good for
        /// rehearsal events only.
        #[arg(long)]
        rehearsal: bool,
        /// Hours until the token expires.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
    /// Rebuild the Redis state of coupons Redis lost from PostgreSQL, then exit. Waits for the
    /// consumer to persist what is already on Kafka first, so it must be running somewhere.
    Reconcile {
        /// Give up (exit 1) when the consumer has not caught up after this many seconds.
        #[arg(long, default_value_t = 60)]
        drain_timeout_secs: u64,
    },
    /// Compare one coupon's Redis winners and claims with PostgreSQL's rows; print the report
    /// as JSON; exit 1 when there is any discrepancy.
    Audit {
        /// The coupon event's id.
        #[arg(long)]
        coupon: i64,
    },
    /// Publish a coupon's FAILED winners again, once the cause of their failure (see
    /// `failed_event`) is fixed; print how many as JSON. Running it twice is harmless.
    Redrive {
        /// The coupon event's id.
        #[arg(long)]
        coupon: i64,
    },
    /// Print the OpenAPI document (what `openapi/openapi.json` must contain).
    Openapi,
    /// Print the effective settings (secrets redacted), how each connection is protected, the
    /// warnings production deserves, and every refusal `serve` would meet; exit 1 on a refusal.
    CheckConfig,
    /// Check an event's fairness log over HTTP only, as any customer can: the checkpoint's
    /// signature, a receipt, consistency with a checkpoint saved earlier, and the whole log.
    /// One line per check; exit 1 when any fails. With `--receipt` and `--key` and no `--url`,
    /// checks the receipt offline.
    Verify {
        /// The service's public address, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// The coupon event's id (default: the receipt's).
        #[arg(long)]
        coupon: Option<i64>,
        /// A receipt saved from the position answer (the answer, or its `receipt`).
        #[arg(long)]
        receipt: Option<PathBuf>,
        /// A checkpoint saved earlier (`GET /coupons/{id}/log/checkpoint`).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The verifier key to trust (default: what `GET /fairness/key` serves).
        #[arg(long)]
        key: Option<String>,
    },
    /// Print a new checkpoint signing key (for APP_FAIRNESS__SIGNING_KEY_FILE) on stdout and
    /// its verifier key on stderr.
    FairnessKey {
        /// The key's name, usually the shop's host (it starts every log's origin line).
        #[arg(long)]
        name: String,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Neither talks to a dependency: they need no settings.
    match cli.command {
        Command::Verify {
            url,
            coupon,
            receipt,
            checkpoint,
            key,
        } => return verify(url, coupon, receipt, checkpoint, key).await,
        Command::FairnessKey { name } => {
            let (private, verifier) = LogKey::generate(&name)?;
            println!("{private}");
            eprintln!("verifier key: {verifier}");
            return Ok(());
        }
        _ => {}
    }
    let settings = Settings::load(cli.config.as_deref())?;
    if matches!(
        cli.command,
        Command::Migrate
            | Command::Reconcile { .. }
            | Command::Redrive { .. }
            | Command::Audit { .. }
    ) {
        settings.database.transport(settings.env)?;
    }
    match cli.command {
        Command::Serve { roles } => serve(settings, roles).await,
        Command::Migrate => {
            telemetry::init(&settings.log);
            settings.database.create_if_missing().await?;
            store::migrate(&settings.database.pool().await?).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Token {
            user,
            admin,
            rehearsal: true,
            ttl_hours,
        } => {
            debug_assert!(!admin);
            let secret = settings
                .auth
                .checked_rehearsal_secret(settings.env)?
                .ok_or_else(|| anyhow::anyhow!("APP_AUTH__REHEARSAL_SECRET is not set"))?;
            let ttl = Duration::from_secs(ttl_hours.saturating_mul(3600));
            println!(
                "{}",
                TokenKeys::rehearsal(&secret).mint(UserId::new(user)?, false, ttl)?
            );
            Ok(())
        }
        Command::Token {
            user,
            admin,
            rehearsal: false,
            ttl_hours,
        } => {
            let secret = settings.auth.checked_secret(settings.env)?.ok_or_else(|| {
                anyhow::anyhow!(
                    "the service's own tokens are off (APP_AUTH__LOCAL_TOKENS, off by default in \
                     production with an identity provider): get a token from the provider"
                )
            })?;
            let keys = TokenKeys::new(&secret);
            let ttl = Duration::from_secs(ttl_hours.saturating_mul(3600));
            println!("{}", keys.mint(UserId::new(user)?, admin, ttl)?);
            Ok(())
        }
        Command::Reconcile { drain_timeout_secs } => {
            telemetry::init(&settings.log);
            let reconciler = Reconciler::new(
                settings.redis.gate()?,
                settings.database.pool().await?,
                &settings,
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(drain_timeout_secs);
            let restored = reconciler.run(Some(deadline)).await?;
            println!("{}", serde_json::json!({ "restored": restored }));
            Ok(())
        }
        Command::Redrive { coupon } => {
            let coupon = CouponId::new(coupon)?;
            let redriven = settings.redis.gate()?.redrive(coupon).await?;
            println!(
                "{}",
                serde_json::json!({ "couponId": coupon.get(), "redriven": redriven })
            );
            Ok(())
        }
        Command::Audit { coupon } => {
            let coupon = CouponId::new(coupon)?;
            let db = settings.database.pool().await?;
            let report = ops::audit(&settings.redis.gate()?, &db, coupon)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no coupon {coupon}"))?;
            let (consistent, count) = (report.consistent, report.discrepancy_count);
            println!(
                "{}",
                serde_json::to_string_pretty(&api::audit_report_json(report))?
            );
            if !consistent {
                anyhow::bail!("{count} discrepancies");
            }
            Ok(())
        }
        Command::CheckConfig => {
            let found = ops::check_config::check(&settings);
            print!("{}", ops::check_config::report(&settings, &found));
            if found.refusals.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} refusal(s): see above", found.refusals.len())
            }
        }
        Command::Openapi => {
            println!("{}", api::spec_json());
            Ok(())
        }
        Command::Verify { .. } | Command::FairnessKey { .. } => unreachable!("handled above"),
    }
}

async fn verify(
    url: Option<String>,
    coupon: Option<i64>,
    receipt: Option<PathBuf>,
    checkpoint: Option<PathBuf>,
    key: Option<String>,
) -> anyhow::Result<()> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let request = verify::Request {
        url,
        coupon: coupon.map(CouponId::new).transpose()?,
        receipt: receipt
            .map(read)
            .transpose()?
            .map(|r| verify::Receipt::parse(&r))
            .transpose()?,
        saved_checkpoint: checkpoint.map(read).transpose()?,
        key,
    };
    let checks = verify::verify(request).await?;
    for check in &checks {
        println!("{check}");
    }
    let failed = checks.iter().filter(|c| !c.passed).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", checks.len());
    }
    Ok(())
}

async fn serve(settings: Settings, mut roles: Vec<Role>) -> anyhow::Result<()> {
    telemetry::init(&settings.log);
    if roles.is_empty() {
        roles = vec![Role::Api, Role::Issuer, Role::Consumer];
    }
    let app = Application::build(&settings, &roles).await?;
    tracing::info!(?roles, "starting");
    if let Some(port) = app.port() {
        tracing::info!(
            port,
            "listening; Swagger UI at http://127.0.0.1:{port}/docs"
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
