//! One schedule from start to verdict: the system started, the crowd and the nemesis run side
//! by side, everything healed, the pipeline waited for, the checker asked.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fcfs_coupon::auth::TokenKeys;
use fcfs_coupon::configuration::Settings;
use fcfs_coupon::domain::CouponId;
use fcfs_coupon::fairness::{self, verify, Leaf};
use futures::future::join_all;
use futures::FutureExt;
use serde_json::Value;

use super::checker::{self, Facts, LogFacts, Verdict};
use super::generator::Crowd;
use super::history::{History, Kind, Op};
use super::nemesis;
use super::schedule::Schedule;
use super::system::System;
use crate::helpers::{committed_total, counts_unlike_statuses, topic_messages, TestApp};

/// How long the fairness log may take, once settled, to hold every place handed out.
const LOG_WAIT: Duration = Duration::from_secs(20);
/// How long the pipeline may take to settle once everything is healed.
const SETTLE: Duration = Duration::from_secs(30);
/// Nothing in progress and nothing changed for this long: what is left will not change.
const QUIET: Duration = Duration::from_secs(5);

pub struct Report {
    pub schedule: Schedule,
    pub verdict: Verdict,
    pub history: Vec<Op>,
    pub evidence: Vec<String>,
    pub settled: bool,
    /// Messages on the issue topic and what the consumer group committed of them: when users
    /// wait PUBLISHED forever, whether the consumer group stopped consuming.
    pub consumed: (i64, i64),
    /// Partitions no live consumer held at the end (see `System::unassigned_partitions`).
    pub unassigned: Vec<i32>,
    pub took: Duration,
    pub logs: Vec<PathBuf>,
}

pub async fn run(seed: u64) -> Report {
    let schedule = Schedule::from_seed(seed);
    eprintln!("chaos: {schedule}");
    let started = Instant::now();
    let mut system = System::start(schedule.aof).await;
    let app = system.observer(0).await;
    let coupon = app.create_stock(schedule.stock).await;
    let (secret, addresses) = (system.settings.auth.secret(), system.addresses.clone());
    let crowd = |origin: Instant, give_up: Instant| Crowd {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(256)
            .build()
            .unwrap(),
        tokens: TokenKeys::new(&secret),
        addresses: addresses.clone(),
        history: History::new(origin),
        coupon,
        give_up,
    };
    let origin = Instant::now();
    let applicants = crowd(origin, origin + schedule.window + SETTLE);
    let (_, evidence) = tokio::join!(
        applicants.run(&schedule.users),
        nemesis::run(&schedule.faults, &mut system, origin),
    );
    system.heal_all().await;

    // Fresh answers while waiting are not part of the history; the last round is.
    let told: BTreeSet<i64> = applicants
        .history
        .ops()
        .iter()
        .filter(|o| o.told().is_some())
        .map(|o| o.user)
        .collect();
    let poller = crowd(origin, Instant::now() + SETTLE);
    let settled = settle(&poller, &app, &schedule, &told).await;
    let mut facts = facts(&applicants, &app, &schedule, &told).await;
    facts.log = Some(log_facts(&poller, &app, facts.admitted).await);
    facts.memory_lost = schedule.loses_memory();
    facts.instance_killed = schedule.kills_an_instance();
    facts.miscounted = counts_unlike_statuses(&app.redis, &app.keys(coupon)).await;
    let history = applicants.history.ops();
    let consumed = consumed(&system.settings).await;
    Report {
        consumed,
        unassigned: system.unassigned_partitions(),
        verdict: checker::check(&history, &facts),
        schedule,
        history,
        evidence,
        settled,
        took: started.elapsed(),
        logs: system.logs.clone(),
    }
}

/// Messages on the issue topic and the group's commits; (-1, -1) when the broker cannot say
/// (the helpers panic on a broker error): evidence for the report, not part of the verdict.
async fn consumed(settings: &Settings) -> (i64, i64) {
    let ask = async {
        let messages = topic_messages(settings, &settings.kafka.topic).await;
        (
            messages,
            committed_total(settings, &settings.kafka.group_id).await,
        )
    };
    AssertUnwindSafe(ask)
        .catch_unwind()
        .await
        .unwrap_or((-1, -1))
}

/// Polls until every told user has a row or a final answer (ISSUED, FAILED, LOST) and the
/// public `issued` equals the rows; or until nothing is in progress (no ADMITTED, PUBLISHED or
/// 503) and nothing changed for `QUIET`. False when `SETTLE` ran out first.
async fn settle(poller: &Crowd, app: &TestApp, schedule: &Schedule, told: &BTreeSet<i64>) -> bool {
    let deadline = Instant::now() + SETTLE;
    let (mut last, mut since) = (None, Instant::now());
    loop {
        let facts = facts(poller, app, schedule, told).await;
        let rowed: BTreeSet<i64> = facts.rows.iter().map(|(u, _)| *u).collect();
        let open = told
            .iter()
            .filter(|u| !rowed.contains(u))
            .filter(|u| !matches!(facts.finals[u].as_str(), "ISSUED" | "FAILED" | "LOST"));
        let counted = facts.issued == facts.rows.len() as i64;
        if open.count() == 0 && counted {
            return true;
        }
        let moving = !counted
            || (facts.finals.values())
                .any(|s| matches!(s.as_str(), "ADMITTED" | "PUBLISHED" | "503" | "no answer"));
        let now = (facts.rows, facts.finals, facts.issued, facts.admitted);
        if last.as_ref() != Some(&now) {
            (last, since) = (Some(now), Instant::now());
        } else if !moving && since.elapsed() >= QUIET {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        // The polling period; the condition above is what is waited for.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Rows, `failed_event`, the public numbers, and a fresh position answer for each told user.
async fn facts(crowd: &Crowd, app: &TestApp, schedule: &Schedule, told: &BTreeSet<i64>) -> Facts {
    let coupon = crowd.coupon;
    let rows = app.issued_rows(coupon).await;
    let answers = join_all(
        told.iter()
            .map(|&u| crowd.call(u, (u % 2) as usize, Kind::Position)),
    )
    .await;
    let finals: BTreeMap<i64, String> = (answers.iter())
        .map(|op| {
            let said = match (op.status, &op.state) {
                (Some(200), Some(state)) => state.clone(),
                (Some(s), _) => s.to_string(),
                (None, _) => "no answer".into(),
            };
            (op.user, said)
        })
        .collect();
    let public = public_numbers(crowd).await;
    Facts {
        stock: i64::from(schedule.stock),
        rows: rows.into_iter().map(|(u, p)| (u, i64::from(p))).collect(),
        failed_events: app.failed_events().await,
        admitted: public["admitted"].as_i64().unwrap_or(-1),
        issued: public["issued"].as_i64().unwrap_or(-1),
        finals,
        ..Facts::default()
    }
}

/// The log once it has a leaf for every place handed out (or `LOG_WAIT` ran out), what `verify`
/// says of it over HTTP, and the audit's comparison of its leaves with the rows.
async fn log_facts(crowd: &Crowd, app: &TestApp, admitted: i64) -> LogFacts {
    let id = CouponId::new(crowd.coupon).unwrap();
    let deadline = Instant::now() + LOG_WAIT;
    let size = loop {
        let head = fairness::store::head(&app.db, id).await.ok().flatten();
        let size = head.map_or(0, |h| h.size as i64);
        if size >= admitted || Instant::now() > deadline {
            break size;
        }
        // The builder appends once a second; this is what is waited for.
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let leaves = fairness::store::leaves(&app.db, id, 1, u32::MAX)
        .await
        .unwrap();
    let kinds = (leaves.iter())
        .map(|l| {
            let kind = Leaf::from_bytes(&l.leaf).map_or("malformed", |l| l.kind.name());
            (i64::from(l.position), kind.to_owned())
        })
        .collect();
    let (winners, _) = fcfs_coupon::store::persisted_winners(&app.db, id)
        .await
        .unwrap();
    let mut problems: Vec<String> = fairness::audit::mismatches(&leaves, &winners)
        .into_iter()
        .map(|m| format!("LOG_MISMATCH at {}: {}", m.position, m.detail))
        .collect();
    let base = crowd
        .addresses
        .read()
        .unwrap()
        .iter()
        .flatten()
        .next()
        .cloned();
    let checks = verify::verify(verify::Request {
        url: base,
        coupon: Some(id),
        receipt: None,
        saved_checkpoint: None,
        key: None,
    })
    .await;
    match checks {
        Ok(checks) => problems.extend(checks.iter().filter(|c| !c.passed).map(|c| c.to_string())),
        Err(e) => problems.push(format!("verify could not run: {e:#}")),
    }
    LogFacts {
        size,
        kinds,
        problems,
    }
}

/// `GET /coupons/{id}` from whichever instance answers, read after this call began: an
/// instance serves a copy up to a second old, dated by `asOf`.
async fn public_numbers(crowd: &Crowd) -> Value {
    let asked = chrono::Utc::now();
    let deadline = Instant::now() + Duration::from_secs(5);
    let addresses: Vec<String> = crowd
        .addresses
        .read()
        .unwrap()
        .iter()
        .flatten()
        .cloned()
        .collect();
    while Instant::now() < deadline {
        for base in &addresses {
            let url = format!("{base}/coupons/{}", crowd.coupon);
            let Ok(resp) = crowd.http.get(url).send().await else {
                continue;
            };
            if !resp.status().is_success() {
                continue;
            }
            let view: Value = resp.json().await.unwrap_or_default();
            let as_of = view["asOf"]
                .as_str()
                .map(chrono::DateTime::parse_from_rfc3339);
            if as_of.is_some_and(|t| t.is_ok_and(|t| t >= asked)) {
                return view;
            }
        }
        // The copy turns within a second; what is waited for is the date above.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Value::Null
}
