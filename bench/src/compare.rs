//! `fcfs-bench compare`: spike reports side by side, grouped by the run they belong to (the
//! report's folder name up to `-round-`), with each group's median and the ratios of every
//! group to the first (`scripts/bench.sh batching`: window 0 first, then the batched one).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

/// The figures compared, as (label, JSON pointer into report.json).
const FIGURES: [(&str, &str); 7] = [
    ("apply req/s", "/applyThroughput"),
    ("apply p50 ms", "/applyLatency/p50Ms"),
    ("apply p99 ms", "/applyLatency/p99Ms"),
    ("x HTTP floor", "/applyFloorRatio"),
    ("apps/call", "/gateCost/applicationsPerCall"),
    ("Redis µs/app", "/gateCost/redisUsecPerApplication"),
    ("overtaken max ms", "/order/maxOvertakingMs"),
];

pub fn run(reports: &[PathBuf]) -> anyhow::Result<()> {
    let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
    for path in reports {
        let report: Value = serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let run = path.parent().and_then(|p| p.file_name()).map_or_else(
            || path.display().to_string(),
            |name| {
                name.to_string_lossy()
                    .split("-round-")
                    .next()
                    .unwrap_or("")
                    .to_owned()
            },
        );
        match groups.iter_mut().find(|(name, _)| *name == run) {
            Some((_, group)) => group.push(report),
            None => groups.push((run, vec![report])),
        }
    }
    print!("{:<24}", "run (median of rounds)");
    for (label, _) in FIGURES {
        print!("{label:>18}");
    }
    println!("{:>18}", "order violations");
    let mut medians: BTreeMap<usize, Vec<Option<f64>>> = BTreeMap::new();
    for (i, (run, group)) in groups.iter().enumerate() {
        let row: Vec<Option<f64>> = FIGURES
            .iter()
            .map(|(_, pointer)| median(group.iter().filter_map(|r| r.pointer(pointer)?.as_f64())))
            .collect();
        let violations: u64 = (group.iter())
            .filter_map(|r| r.pointer("/order/realTimeViolations")?.as_u64())
            .sum();
        print!("{run:<24}");
        for value in &row {
            print!("{:>18}", value.map_or("n/a".into(), |v| format!("{v:.2}")));
        }
        println!("{violations:>18}");
        medians.insert(i, row);
    }
    if let (Some(first), true) = (medians.get(&0), groups.len() > 1) {
        for (i, (run, _)) in groups.iter().enumerate().skip(1) {
            print!("{:<24}", format!("{run} / {}", groups[0].0));
            for (value, base) in medians[&i].iter().zip(first) {
                let ratio = value.zip(*base).map(|(v, b)| v / b);
                print!(
                    "{:>18}",
                    ratio.map_or("n/a".into(), |r| format!("{r:.2} x"))
                );
            }
            println!();
        }
    }
    Ok(())
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (n > 0).then(|| (values[(n - 1) / 2] + values[n / 2]) / 2.0)
}
