//! `fcfs-coupon check-config`: what a deployment's settings add up to, before the drop. Every
//! refusal `serve` would meet at start is listed at once (not the first only), with the
//! warnings production deserves; secrets never print.

use std::fmt::Write as _;

use crate::configuration::{Environment, Settings};

#[derive(Debug, Default)]
pub struct Findings {
    /// What stops `serve` from starting.
    pub refusals: Vec<String>,
    /// What starts, but is weaker than it may look.
    pub warnings: Vec<String>,
    /// How the connections are protected.
    pub notes: Vec<String>,
}

pub fn check(settings: &Settings) -> Findings {
    let mut found = Findings::default();
    let env = settings.env;
    let mut refuse = |result: anyhow::Result<()>| {
        if let Err(e) = result {
            found.refusals.push(format!("{e:#}"));
        }
    };
    refuse(settings.auth.checked_secret(env).map(drop));
    refuse(settings.auth.checked_rehearsal_secret(env).map(drop));
    refuse(settings.kafka.check_properties());
    match settings.fairness.key(env) {
        Ok(Some(key)) => found.notes.push(format!(
            "Fairness log: checkpoints signed, verifier key {}",
            key.verifier_key()
        )),
        Ok(None) => found.notes.push("Fairness log: off".into()),
        Err(e) => found.refusals.push(format!("{e:#}")),
    }
    match settings.database.transport(env) {
        Ok(transport) => found.notes.push(format!("PostgreSQL: {transport}")),
        Err(e) => found.refusals.push(format!("{e:#}")),
    }
    let redis_tls = settings.redis.tls();
    found.notes.push(format!(
        "Redis ({:?}): {}",
        settings.redis.mode,
        if redis_tls { "TLS" } else { "plaintext" }
    ));
    let kafka = (settings.kafka.properties.iter())
        .find(|(name, _)| name.replace('_', ".") == "security.protocol")
        .map_or("PLAINTEXT", |(_, value)| value.as_str());
    found.notes.push(format!("Kafka: {kafka}"));
    if env == Environment::Development {
        found
            .warnings
            .push("APP_ENV=development: production's refusals are off".into());
        return found;
    }
    let mut warn = |s: String| found.warnings.push(s);
    if settings.redis.ack_replicas == 0 {
        warn(
            "APP_REDIS__ACK_REPLICAS=0: a 202 lives in the Redis master's memory (and the \
              answering instance's) until its winner is published; a restart without AOF or a \
              failover can lose it (README, \"What a 202 promises\")"
                .into(),
        );
    }
    if !redis_tls {
        warn("Redis without TLS: APP_REDIS__URL=rediss://… with APP_REDIS__CA_FILE".into());
    }
    if kafka.eq_ignore_ascii_case("PLAINTEXT") || kafka.eq_ignore_ascii_case("SASL_PLAINTEXT") {
        warn(format!(
            "Kafka over {kafka}: APP_KAFKA__PROPERTIES__SECURITY_PROTOCOL=SSL or SASL_SSL"
        ));
    }
    if settings.database.allow_plaintext {
        warn("APP_DATABASE__ALLOW_PLAINTEXT=true: PostgreSQL may be reached without TLS".into());
    }
    if settings.auth.has_provider() && settings.auth.local_tokens(env) {
        warn(
            "APP_AUTH__LOCAL_TOKENS is on beside an identity provider: whoever holds \
              APP_AUTH__JWT_SECRET can act as any user, admin included"
                .into(),
        );
    }
    found
}

/// The report `check-config` prints: the effective settings (redacted), then the findings.
pub fn report(settings: &Settings, found: &Findings) -> String {
    let mut out = format!("effective settings (secrets redacted):\n{settings:#?}\n\n");
    for (title, lines) in [
        ("connections", &found.notes),
        ("warnings", &found.warnings),
        ("refusals (serve would not start)", &found.refusals),
    ] {
        let _ = writeln!(
            out,
            "{title}:{}",
            if lines.is_empty() { " none" } else { "" }
        );
        for line in lines {
            let _ = writeln!(out, "  - {line}");
        }
    }
    out
}
