//! What the failover tests share: a patient crowd arriving while Redis changes under it, and the
//! outcome every such test asserts (every ticket a client was told is exactly one row).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use reqwest::StatusCode;

use super::{assert_final, eventually, told, Outcome, TestApp};

impl TestApp {
    /// Users `1..=users` arrive evenly over `over`, 256 at most at once, each asking again
    /// through 503s until a final answer.
    pub async fn patient_crowd(&self, coupon: i64, users: i64, over: Duration) -> Vec<Outcome> {
        let started = Instant::now();
        let gap = over / u32::try_from(users).unwrap();
        stream::iter((1..=users).zip(0u32..))
            .map(|(user, i)| async move {
                tokio::time::sleep_until((started + gap * i).into()).await;
                self.apply_through_outage(coupon, user, Duration::from_secs(60))
                    .await
            })
            .buffer_unordered(256)
            .collect()
            .await
    }
}

/// Waits until the queue `queue` on one server (`master`, not the service's view) holds at
/// least `at_least` admissions; how many it holds.
pub async fn until_admitted(
    master: &redis::aio::MultiplexedConnection,
    queue: &str,
    at_least: u64,
) -> u64 {
    eventually(
        &format!("{at_least} admitted on the master"),
        Duration::from_secs(30),
        || async {
            let admitted: u64 = redis::cmd("ZCARD")
                .arg(queue)
                .query_async(&mut master.clone())
                .await
                .ok()?;
            (admitted >= at_least).then_some(admitted)
        },
    )
    .await
}

/// After a master was killed at `killed` mid-spike: every answer final, some of them met the
/// failover as 503s, admissions went on (the delay printed as a `FIGURE` for `what`), and
/// exactly `stock` users were told a place, each persisted at exactly that place.
pub async fn assert_every_ticket_kept(
    app: &TestApp,
    coupon: i64,
    outcomes: &[Outcome],
    killed: Instant,
    stock: usize,
    what: &str,
) {
    assert_final(outcomes);
    let unavailable: u32 = outcomes.iter().map(|o| o.unavailable).sum();
    assert!(unavailable > 0, "nobody met the failover");
    let first_after = outcomes
        .iter()
        .filter(|o| o.status == StatusCode::ACCEPTED && o.asked > killed)
        .map(|o| o.answered - killed)
        .min()
        .expect("admissions continue on the new master");
    eprintln!(
        "FIGURE {what}: first 202 to an application sent after the SIGKILL: {first_after:.1?} after it ({unavailable} answers were 503)"
    );
    assert_told_is_persisted(app, coupon, outcomes, stock).await;
}

/// Exactly `stock` users were told a place, and each is persisted at exactly that place.
pub async fn assert_told_is_persisted(
    app: &TestApp,
    coupon: i64,
    outcomes: &[Outcome],
    stock: usize,
) {
    let told = told(outcomes);
    assert_eq!(
        told.len(),
        stock,
        "every unit of stock went to someone told so"
    );
    let rows = eventually(
        "every winner persisted",
        Duration::from_secs(60),
        || async {
            let rows = app.issued_rows(coupon).await;
            (rows.len() >= told.len()).then_some(rows)
        },
    )
    .await;
    let persisted: BTreeMap<i64, i32> = rows.into_iter().collect();
    assert_eq!(persisted, told, "rows differ from what clients were told");
    assert_eq!(app.failed_events().await, 0);
    // Whatever the failover kept of Redis, the census' counts agree with it.
    app.assert_counted(coupon).await;
}
