//! The checker on histories written by hand: it must go red on each kind of broken promise,
//! and accept exactly the losses README documents.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::checker::{check, Facts, LogFacts, Verdict};
use super::history::{Kind, Op};

/// An application by `user`, sent at `sent` ms and answered `took` ms later.
fn apply(user: i64, sent: u64, status: u16, position: Option<i64>) -> Op {
    let origin = Instant::now();
    Op {
        user,
        instance: 0,
        kind: Kind::Apply,
        sent: origin + Duration::from_millis(sent),
        received: origin + Duration::from_millis(sent + 10),
        status: Some(status),
        code: None,
        position,
        state: position.map(|_| "ADMITTED".into()),
        origin,
    }
}

/// Stock 2, both persisted as told, numbers agreeing.
fn settled(rows: &[(i64, i64)]) -> Facts {
    Facts {
        stock: 2,
        rows: rows.to_vec(),
        admitted: rows.len() as i64,
        issued: rows.len() as i64,
        finals: rows.iter().map(|(u, _)| (*u, "ISSUED".into())).collect(),
        ..Facts::default()
    }
}

fn rules(verdict: &Verdict) -> Vec<&'static str> {
    verdict.violations.iter().map(|v| v.rule).collect()
}

#[test]
fn a_history_kept_as_told_is_clean() {
    let history = [
        apply(1, 0, 202, Some(1)),
        apply(2, 5, 202, Some(2)),
        apply(1, 50, 200, Some(1)),
    ];
    assert!(rules(&check(&history, &settled(&[(1, 1), (2, 2)]))).is_empty());
}

#[test]
fn each_broken_promise_is_named() {
    let history = [apply(1, 0, 202, Some(1)), apply(2, 50, 202, Some(1))];
    // The same place told twice; one of them never persisted; real time reversed.
    let verdict = check(&history, &settled(&[(1, 1)]));
    assert_eq!(
        rules(&verdict),
        ["1 told twice", "2 told is persisted", "4 real-time order"]
    );

    let history = [apply(1, 0, 202, Some(1)), apply(2, 50, 202, Some(2))];
    let mut facts = settled(&[(1, 2), (2, 1)]);
    facts.failed_events = 1;
    facts.issued = 1;
    facts.miscounted = vec!["ISSUED: counted 1, scanned 2".into()];
    let verdict = check(&history, &facts);
    let expected = [
        "3 position as told",
        "3 position as told",
        "5 public numbers",
        "6 failed_event empty",
        "8 counted",
    ];
    assert_eq!(rules(&verdict), expected);
}

#[test]
fn only_a_documented_loss_excuses_a_missing_row() {
    let history = [apply(1, 0, 202, Some(1)), apply(2, 50, 202, Some(2))];
    let mut facts = settled(&[(1, 1)]);
    facts.finals = BTreeMap::from([(1, "ISSUED".into()), (2, "LOST".into())]);
    assert_eq!(rules(&check(&history, &facts)), ["2 told is persisted"]);
    facts.memory_lost = true;
    let verdict = check(&history, &facts);
    assert!(verdict.violations.is_empty());
    assert_eq!(verdict.losses, [(2, 2, "LOST".to_owned())]);
    // NOT_APPLIED only when the instance that answered may have died with the memory.
    facts.finals.insert(2, "NOT_APPLIED".into());
    assert_eq!(rules(&check(&history, &facts)), ["2 told is persisted"]);
    facts.instance_killed = true;
    assert!(check(&history, &facts).violations.is_empty());
    facts.finals.insert(2, "SOLD_OUT".into());
    assert!(check(&history, &facts).violations.is_empty());
    // Never for a user still waiting.
    facts.finals.insert(2, "ADMITTED".into());
    assert_eq!(rules(&check(&history, &facts)), ["2 told is persisted"]);
}

#[test]
fn a_place_told_twice_is_excused_only_by_the_double_loss() {
    // User 1 was told place 1, lost with Redis' memory and the instance that told it; user 2
    // was told place 1 again and holds its row.
    let history = [apply(1, 0, 202, Some(1)), apply(2, 50, 202, Some(1))];
    let mut facts = settled(&[(2, 1)]);
    facts.finals = BTreeMap::from([(1, "SOLD_OUT".into()), (2, "ISSUED".into())]);
    facts.memory_lost = true;
    assert_eq!(
        rules(&check(&history, &facts)),
        ["1 told twice", "2 told is persisted", "4 real-time order"]
    );
    facts.instance_killed = true;
    assert!(check(&history, &facts).violations.is_empty());
}

#[test]
fn a_log_that_disagrees_with_the_rows_is_named() {
    let history = [apply(1, 0, 202, Some(1)), apply(2, 5, 202, Some(2))];
    let log = |kinds: &[(i64, &str)], problems: &[&str]| LogFacts {
        size: kinds.len() as i64,
        kinds: kinds.iter().map(|(p, k)| (*p, k.to_string())).collect(),
        problems: problems.iter().map(|p| p.to_string()).collect(),
    };
    let with = |log| Facts {
        log: Some(log),
        ..settled(&[(1, 1), (2, 2)])
    };
    let clean = with(log(&[(1, "ISSUED"), (2, "ISSUED")], &[]));
    assert!(rules(&check(&history, &clean)).is_empty());
    // A place without its leaf; a row whose leaf says LOST; what verify refused.
    for broken in [
        log(&[(1, "ISSUED")], &[]),
        log(&[(1, "ISSUED"), (2, "LOST")], &[]),
        log(&[(1, "ISSUED"), (2, "ISSUED")], &["FAIL whole log: …"]),
    ] {
        let named = rules(&check(&history, &with(broken)));
        assert!(
            !named.is_empty() && named.iter().all(|r| *r == "7 the log"),
            "{named:?}"
        );
    }
}
