//! What a run says: the seed and schedule first, and on failure each violation with the full
//! history of every user it names; for a search, one line per schedule and a table.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::nemesis::FaultKind;
use super::run::Report;

/// Violations of one rule printed with their users' histories.
const SHOWN: usize = 3;

/// What a search keeps of each run.
pub struct Summary {
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    pub clean: bool,
    /// Not clean, and the development broker's consumer group had stalled (see `spoiled`).
    pub spoiled: bool,
    pub rules: Vec<&'static str>,
    pub took: Duration,
    /// The run's line and its first violations: what a failed CI run's last lines must show,
    /// since the full report above them may be cut from a long log.
    pub gist: String,
}

impl Report {
    pub fn clean(&self) -> bool {
        self.verdict.violations.is_empty()
    }

    /// Failed while messages waited on a partition no live consumer held: Tansu 0.6.0's
    /// consumer-group defect, not the service's (its logs show each assignment). Counted apart
    /// in a search; CI's fixed seeds must be clean regardless.
    pub fn spoiled(&self) -> bool {
        let (messages, committed) = self.consumed;
        !self.clean() && !self.unassigned.is_empty() && committed < messages
    }

    /// One line: the seed, its faults, what clients met, the verdict, the time it took.
    pub fn line(&self) -> String {
        let kinds: Vec<String> = self
            .schedule
            .kinds()
            .iter()
            .map(|k| k.to_string())
            .collect();
        let mut rules: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.verdict.violations {
            *rules.entry(v.rule).or_default() += 1;
        }
        let verdict = if self.clean() {
            format!("clean ({} documented losses)", self.verdict.losses.len())
        } else if self.spoiled() {
            let unassigned = &self.unassigned;
            format!("SPOILED by the broker (partitions {unassigned:?} held by no live consumer) {rules:?}")
        } else {
            format!("FAILED {rules:?}")
        };
        let told = self.history.iter().filter_map(|o| o.told().map(|_| o.user));
        let told = told.collect::<BTreeSet<_>>().len();
        let count = |status| self.history.iter().filter(|o| o.status == status).count();
        let (busy, dead) = (count(Some(503)), count(None));
        format!(
            "chaos seed {:>10} {:<48} told {told:>2}, {busy:>3} x 503, {dead:>3} unanswered: \
             {verdict} in {:.0?}{}",
            self.schedule.seed,
            kinds.join(","),
            self.took,
            if self.settled { "" } else { ", never settled" }
        )
    }

    pub fn summary(&self) -> Summary {
        Summary {
            seed: self.schedule.seed,
            kinds: self.schedule.kinds(),
            clean: self.clean(),
            spoiled: self.spoiled(),
            rules: self.verdict.violations.iter().map(|v| v.rule).collect(),
            took: self.took,
            gist: std::iter::once(self.line())
                .chain(
                    self.verdict.violations.iter().take(SHOWN).map(|v| {
                        format!("  VIOLATION [{}] users {:?}: {}", v.rule, v.users, v.detail)
                    }),
                )
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The schedule, the evidence that each fault ran, the documented losses; on failure each
    /// violation (the first few of each rule with their users' whole histories) and where the
    /// instances logged.
    pub fn print(&self) {
        eprintln!("chaos: {}", self.schedule);
        for line in &self.evidence {
            eprintln!("  fault {line}");
        }
        for (user, told, now) in &self.verdict.losses {
            eprintln!("  documented loss: user {user} told {told}, now {now}");
        }
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for v in &self.verdict.violations {
            let n = shown.entry(v.rule).or_default();
            *n += 1;
            eprintln!("  VIOLATION [{}] users {:?}: {}", v.rule, v.users, v.detail);
            for user in v.users.iter().filter(|_| *n <= SHOWN) {
                for op in self.history.iter().filter(|o| o.user == *user) {
                    eprintln!("      {op}");
                }
            }
        }
        let (messages, committed) = self.consumed;
        eprintln!("  issue topic: {messages} messages, {committed} committed by the group");
        if !self.unassigned.is_empty() {
            let unassigned = &self.unassigned;
            eprintln!("  partitions held by no live consumer: {unassigned:?}");
        }
        if !self.clean() {
            eprintln!("  instance logs: {:?}", self.logs);
            let seed = self.schedule.seed;
            eprintln!("  replay: FCFS_CHAOS_SEED={seed} cargo test --test api chaos::replay -- --ignored --nocapture");
        }
        eprintln!("{}", self.line());
    }
}

/// Schedules run clean and failed, in all and per fault kind, and which rules broke.
pub fn table(summaries: &[Summary]) {
    let row = |name: &str, of: Vec<&Summary>| {
        let clean = of.iter().filter(|s| s.clean).count();
        let spoiled = of.iter().filter(|s| s.spoiled).count();
        let mut rules: BTreeMap<&str, usize> = BTreeMap::new();
        for rule in of
            .iter()
            .flat_map(|s| s.rules.iter().collect::<BTreeSet<_>>())
        {
            *rules.entry(rule).or_default() += 1;
        }
        eprintln!(
            "{name:<18} {:>9} {clean:>6} {spoiled:>7} {:>7}  {rules:?}",
            of.len(),
            of.len() - clean - spoiled
        );
    };
    eprintln!(
        "{:<18} {:>9} {:>6} {:>7} {:>7}  schedules failing each rule",
        "fault kind", "schedules", "clean", "spoiled", "failed"
    );
    row("all", summaries.iter().collect());
    for kind in FaultKind::ALL {
        row(
            &kind.to_string(),
            summaries
                .iter()
                .filter(|s| s.kinds.contains(&kind))
                .collect(),
        );
    }
    let failed: Vec<u64> = summaries
        .iter()
        .filter(|s| !s.clean && !s.spoiled)
        .map(|s| s.seed)
        .collect();
    let total: Duration = summaries.iter().map(|s| s.took).sum();
    eprintln!(
        "failed seeds: {failed:?}; {} schedules in {total:.0?}",
        summaries.len()
    );
}
