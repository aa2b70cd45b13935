//! What ships in deploy/ queries only metrics the service exports: a metric renamed or dropped
//! fails here, not on the night a panel stays empty or an alert cannot fire. (promtool checks
//! the rules themselves: scripts/test.sh.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{parse_strict, spawn_app_behind_redis_proxy, TestApp};

const DASHBOARD: &str = include_str!("../../deploy/grafana/fcfs-coupon.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yml");

/// Every `fcfs_…` name in a PromQL expression (or any text): the prefix at the start of a
/// word, then lower-case letters, digits and underscores.
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("fcfs_") {
        if text[..at].chars().next_back().is_some_and(word) {
            continue;
        }
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |n| at + n);
        if end > at + "fcfs_".len() {
            names.insert(text[at..end].to_owned());
        }
    }
    names
}

/// Every panel target's `expr` (rows' nested panels too) and every template variable's query.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn panels(list: &Value, out: &mut Vec<String>) {
        for panel in list.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap_or_else(|| {
                    panic!("panel {:?}: a target without an expr", panel["title"])
                });
                out.push(expr.to_owned());
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        // A string, or (as newer Grafana saves it) an object holding the string.
        let query = &variable["query"];
        out.extend(
            query
                .as_str()
                .or(query["query"].as_str())
                .map(str::to_owned),
        );
    }
    out
}

/// `# TYPE` lines of the Prometheus text format: family name → type.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split(' ');
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Whether a name a query uses is a series of an exported family: the family itself, a
/// counter's `_total`, or a histogram's `_bucket`, `_sum` and `_count`.
fn exported(name: &str, families: &BTreeMap<String, String>) -> bool {
    let is = |base: &str, kinds: &[&str]| {
        families
            .get(base)
            .is_some_and(|kind| kinds.contains(&kind.as_str()))
    };
    families.contains_key(name)
        || name
            .strip_suffix("_total")
            .is_some_and(|base| is(base, &["counter"]))
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| is(base, &["histogram"]))
        })
}

fn missing<'a>(names: &'a BTreeSet<String>, families: &BTreeMap<String, String>) -> Vec<&'a str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|name| !exported(name, families))
        .collect()
}

#[test]
fn names_are_found_in_expressions_and_matched_to_their_families() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(fcfs_apply_duration_seconds_bucket[1m])))
        / ignoring(x) my_fcfs_other + sum(rate(fcfs_made_up_total[5m])) + fcfs_ready{coupon=~"$coupon"}"#;
    let names = metric_names(expr);
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "fcfs_apply_duration_seconds_bucket",
            "fcfs_made_up_total",
            "fcfs_ready"
        ]
    );
    let exposition = "# HELP fcfs_apply_duration_seconds Time.\n\
        # TYPE fcfs_apply_duration_seconds histogram\n\
        # TYPE fcfs_ready gauge\n\
        # TYPE fcfs_apply counter\n";
    let families = families(exposition);
    assert_eq!(missing(&names, &families), ["fcfs_made_up_total"]);
    assert!(exported("fcfs_apply_total", &families));
    // `_total` only for counters, `_count` only for histograms.
    assert!(!exported("fcfs_ready_total", &families));
    assert!(!exported("fcfs_apply_count", &families));
}

/// Scrapes until every family in `wanted` has shown up or `within` has passed, adding each
/// scrape's families to `seen`.
async fn scrape_until(
    app: &TestApp,
    seen: &mut BTreeMap<String, String>,
    wanted: &[&str],
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let resp = app.ops_get("/metrics").await;
        assert_eq!(resp.status(), StatusCode::OK);
        seen.extend(families(&resp.text().await.unwrap()));
        if wanted.iter().all(|w| seen.contains_key(*w)) || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_query_only_metrics_the_service_exports() {
    let dashboard = parse_strict(DASHBOARD).expect("deploy/grafana/fcfs-coupon.json is JSON");
    let queries = dashboard_queries(&dashboard);
    let dashboard_names: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    // Comments aside, every name alerts.yml gives (expressions and runbooks) must exist.
    let rules: String = ALERTS
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let alert_names = metric_names(&rules);
    // Guards against an extractor that finds nothing, so checks nothing.
    assert!(
        queries.len() >= 10 && dashboard_names.len() >= 10,
        "{} queries, names {dashboard_names:?}",
        queries.len()
    );
    assert!(alert_names.len() >= 8, "names {alert_names:?}");

    // prometheus-client prints a labelled family (even its # TYPE line) only once it has a
    // series, so the service is made to create each one as production would.
    let (redis_proxy, app) = spawn_app_behind_redis_proxy(|_| {}).await;
    let mut seen = BTreeMap::new();
    // One winner through the pipeline: applications, pending and in-flight, consumer lag.
    let coupon = app.create_stock(2).await;
    assert_eq!(app.apply(coupon, 1).await.status(), StatusCode::ACCEPTED);
    app.wait_for_rows(coupon, 1).await;
    // A violation the watcher reports at its next look: the issued count off the rows.
    sqlx::query("UPDATE coupon SET issued_count = 0 WHERE id = $1")
        .bind(coupon)
        .execute(&app.db)
        .await
        .unwrap();
    // A hold: another event's state lost from Redis.
    let lost = app.create_stock(1).await;
    let keys: Vec<String> = app.keys(lost).all().into_iter().cloned().collect();
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let after_faults = [
        "fcfs_consumer_lag",
        "fcfs_invariant_violations",
        "fcfs_coupons_held",
    ];
    scrape_until(&app, &mut seen, &after_faults, Duration::from_secs(20)).await;
    // Dependency errors: Redis out of reach (last, as the watcher needs Redis for the above).
    redis_proxy.cut();
    scrape_until(
        &app,
        &mut seen,
        &["fcfs_dependency_errors"],
        Duration::from_secs(10),
    )
    .await;
    redis_proxy.restore();

    let dashboard_missing = missing(&dashboard_names, &seen);
    let alerts_missing = missing(&alert_names, &seen);
    assert!(
        dashboard_missing.is_empty() && alerts_missing.is_empty(),
        "not exported on /metrics: {dashboard_missing:?} (deploy/grafana/fcfs-coupon.json), \
         {alerts_missing:?} (deploy/prometheus/alerts.yml); exported families: {:?}",
        seen.keys().collect::<Vec<_>>()
    );
}
