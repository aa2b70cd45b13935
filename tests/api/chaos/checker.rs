//! The checker: judges the history against PostgreSQL's rows, `failed_event`, the public
//! numbers and fresh position answers, never against the service's own view alone.

use std::collections::{BTreeMap, BTreeSet};

use super::history::{Kind, Op};

/// What the world looks like once the run settled.
#[derive(Debug, Default)]
pub struct Facts {
    pub stock: i64,
    /// `coupon_issue` rows: (user, position).
    pub rows: Vec<(i64, i64)>,
    pub failed_events: i64,
    /// `admitted` and `issued` from `GET /coupons/{id}`.
    pub admitted: i64,
    pub issued: i64,
    /// The last position-endpoint status of each user told a place.
    pub finals: BTreeMap<i64, String>,
    /// `ACK_REPLICAS=0` and a fault that lost Redis' memory (kill without AOF, wipe): the one
    /// configuration where README documents that a told winner may be lost.
    pub memory_lost: bool,
    /// An instance was SIGKILLed too: the one that answered may have died with the memory.
    pub instance_killed: bool,
    /// The event's fairness log once settled; `None`: not checked (hand-written histories).
    pub log: Option<LogFacts>,
    /// How Redis' per-status counts (what the live census reads) differ from a full scan of
    /// the statuses once settled; empty when they agree.
    pub miscounted: Vec<String>,
}

/// The fairness log as anyone sees it, with what `verify` and the audit's comparison said.
#[derive(Debug, Default, Clone)]
pub struct LogFacts {
    /// The latest signed checkpoint's size.
    pub size: i64,
    /// Each leaf's kind by position.
    pub kinds: BTreeMap<i64, String>,
    /// `fcfs-coupon verify`'s failed checks and the audit's LOG_MISMATCHes.
    pub problems: Vec<String>,
}

#[derive(Debug)]
pub struct Violation {
    pub rule: &'static str,
    pub users: Vec<i64>,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub violations: Vec<Violation>,
    /// Told users who ended without a row in the documented way: (user, told, final answer).
    pub losses: Vec<(i64, i64, String)>,
}

pub fn check(history: &[Op], facts: &Facts) -> Verdict {
    let mut verdict = Verdict::default();
    let mut flag = |rule, users: Vec<i64>, detail: String| {
        verdict.violations.push(Violation {
            rule,
            users,
            detail,
        })
    };
    // Each user's positions as told by 200/202 applications, and as shown while in line.
    let mut told: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for op in history {
        if let Some(p) = op.told() {
            told.entry(op.user).or_default().insert(p);
        }
        let in_line = matches!(
            op.state.as_deref(),
            Some("ADMITTED" | "PUBLISHED" | "ISSUED")
        );
        if op.kind == Kind::Position && in_line {
            if let (Some(p), Some(t)) = (op.position, told.get(&op.user)) {
                if !t.contains(&p) {
                    flag(
                        "3 position as told",
                        vec![op.user],
                        format!("in line at {p}"),
                    );
                }
            }
        }
        if matches!(op.status, Some(404 | 500..=502 | 504..)) {
            flag("0 answers", vec![op.user], format!("answered {op}"));
        }
    }

    // 1. no place told twice; the hard cap; one row per user; row positions unique.
    let mut holders: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (user, positions) in &told {
        for p in positions.iter().filter(|p| **p <= facts.stock) {
            holders.entry(*p).or_default().push(*user);
        }
    }
    for (p, users) in holders.into_iter().filter(|(_, u)| u.len() > 1) {
        // Where README documents a loss, the place a lost winner was told can be told again
        // (the double loss: Redis' memory and the instance that told it). Each told user
        // is still judged below: one row there, or a documented final answer.
        if !facts.memory_lost || !facts.instance_killed {
            flag("1 told twice", users, format!("position {p} told to each"));
        }
    }
    if facts.rows.len() as i64 > facts.stock {
        let n = facts.rows.len();
        flag(
            "1 rows <= stock",
            vec![],
            format!("{n} rows, stock {}", facts.stock),
        );
    }
    let mut by_user: BTreeMap<i64, i64> = BTreeMap::new();
    let mut by_position: BTreeMap<i64, i64> = BTreeMap::new();
    for &(user, p) in &facts.rows {
        if by_user.insert(user, p).is_some() {
            flag("1 one row per user", vec![user], "two rows".into());
        }
        if let Some(other) = by_position.insert(p, user) {
            flag(
                "1 unique row positions",
                vec![other, user],
                format!("both at {p}"),
            );
        }
    }

    // 2 and 3. every told user has exactly the row they were told, or a documented loss.
    for (&user, positions) in &told {
        let first = *positions.first().unwrap();
        if positions.len() > 1 {
            flag(
                "3 position as told",
                vec![user],
                format!("told {positions:?}"),
            );
        }
        let last = facts.finals.get(&user).map_or("unknown", String::as_str);
        match by_user.get(&user) {
            Some(&row) if row == first => {}
            Some(&row) => flag("3 position as told", vec![user], format!("row at {row}")),
            None if documented(facts, last) => verdict.losses.push((user, first, last.into())),
            None => flag(
                "2 told is persisted",
                vec![user],
                format!("no row; now {last}"),
            ),
        }
    }
    for (&user, &p) in &by_user {
        if !told.contains_key(&user) && refused_last(history, user) {
            flag(
                "3 position as told",
                vec![user],
                format!("row at {p}, never told"),
            );
        }
    }

    // 4. real time: A's 202 came back before B's first application left => A ahead of B.
    let mut first_sent: BTreeMap<i64, std::time::Instant> = BTreeMap::new();
    let mut accepted: Vec<(&Op, i64)> = Vec::new();
    for op in history.iter().filter(|o| o.kind == Kind::Apply) {
        let sent = first_sent.entry(op.user).or_insert(op.sent);
        *sent = (*sent).min(op.sent);
        if let (Some(202), Some(p)) = (op.status, op.position) {
            accepted.push((op, p));
        }
    }
    // One violation per B, naming the A whose answer came back first.
    for (&b, &b_sent) in &first_sent {
        let Some(&pb) = told.get(&b).and_then(|t| t.first()) else {
            continue;
        };
        let ahead = accepted
            .iter()
            .filter(|(a, pa)| a.user != b && a.received < b_sent && *pa >= pb)
            // A winner lost in the documented way holds no place to be ahead of.
            .filter(|(a, _)| !verdict.losses.iter().any(|(u, ..)| *u == a.user));
        if let Some((a, pa)) = ahead.min_by_key(|(a, _)| a.received) {
            let detail = format!(
                "{} was told {pa} before {b} asked; {b} was told {pb}",
                a.user
            );
            flag("4 real-time order", vec![b, a.user], detail);
        }
    }

    // 5 and 6. the public numbers agree with the rows; nothing set aside.
    let rows = facts.rows.len() as i64;
    if facts.issued != rows || facts.admitted < rows {
        let detail = format!(
            "issued {} admitted {} rows {rows}",
            facts.issued, facts.admitted
        );
        flag("5 public numbers", vec![], detail);
    }
    if let Some(log) = &facts.log {
        check_log(log, facts, &mut flag);
    }
    if facts.failed_events > 0 {
        flag(
            "6 failed_event empty",
            vec![],
            format!("{} rows", facts.failed_events),
        );
    }
    // 8. whatever the faults did to Redis, the census' counts still equal the statuses.
    if !facts.miscounted.is_empty() {
        flag("8 counted", vec![], facts.miscounted.join("; "));
    }
    verdict
}

/// Rule 7, the fairness log: a leaf for every place handed out, each row's place marked ISSUED
/// (or FAILED, then redriven), no ISSUED leaf without its row, and nothing `verify` or the
/// audit's comparison refuses.
fn check_log(log: &LogFacts, facts: &Facts, flag: &mut impl FnMut(&'static str, Vec<i64>, String)) {
    if log.size != facts.admitted {
        flag(
            "7 the log",
            vec![],
            format!(
                "{} leaves for {} places handed out",
                log.size, facts.admitted
            ),
        );
    }
    let rows: BTreeMap<i64, i64> = facts.rows.iter().map(|&(u, p)| (p, u)).collect();
    for (&p, &user) in &rows {
        let kind = log.kinds.get(&p).map_or("none", String::as_str);
        if !matches!(kind, "ISSUED" | "FAILED") {
            flag("7 the log", vec![user], format!("row at {p}, leaf {kind}"));
        }
    }
    for (&p, kind) in &log.kinds {
        if kind == "ISSUED" && !rows.contains_key(&p) {
            flag("7 the log", vec![], format!("ISSUED leaf at {p}, no row"));
        }
    }
    for problem in &log.problems {
        flag("7 the log", vec![], problem.clone());
    }
}

/// A final answer README documents for a told winner Redis lost (`ACK_REPLICAS=0` only):
/// `LOST` (or `FAILED`); or, when the instance that told it died too and nobody can know the
/// user was told, what anyone who never applied hears.
fn documented(facts: &Facts, last: &str) -> bool {
    facts.memory_lost
        && (matches!(last, "LOST" | "FAILED")
            || (facts.instance_killed && matches!(last, "NOT_APPLIED" | "SOLD_OUT")))
}

/// True when the user's last application answer was a definite refusal (410, 409): a row for
/// them contradicts what they were told. A client that gave up on 503s was told nothing.
fn refused_last(history: &[Op], user: i64) -> bool {
    let last = history
        .iter()
        .filter(|o| o.user == user && o.kind == Kind::Apply && o.status.is_some())
        .max_by_key(|o| o.received);
    matches!(last.and_then(|o| o.status), Some(409 | 410))
}
