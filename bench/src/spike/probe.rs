//! The collateral damage: a database-backed page (`GET /me/coupons`) asked at a low fixed rate,
//! so its latency shows whether the spike reaches the rest of the shop.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio_util::sync::CancellationToken;

use super::report::new_histogram;

/// Starts a probe on a thread and runtime of its own: on the bench's runtime its requests would
/// queue behind the crowd's, and the figure would measure the load generator, not the service.
pub fn spawn(
    url: String,
    tokens: Vec<String>,
    rate: u32,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<Histogram<u64>> {
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a probe runtime");
        runtime.block_on(run(reqwest::Client::new(), url, tokens, rate, stop))
    })
}

/// Asks `url` `rate` times a second until `stop`, each time as the next of `tokens`' users (a
/// user's own database reads are limited per user, as one shopper would not ask 200 times a
/// second); every latency, in µs. Missed ticks are not made up, so a slow answer does not turn
/// into a burst.
async fn run(
    client: reqwest::Client,
    url: String,
    tokens: Vec<String>,
    rate: u32,
    stop: CancellationToken,
) -> Histogram<u64> {
    let mut latencies = new_histogram();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut asked = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let sent = std::time::Instant::now();
        let token = &tokens[asked % tokens.len()];
        asked += 1;
        let ok = match client.get(&url).bearer_auth(token).send().await {
            Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            latencies.saturating_record(sent.elapsed().as_micros() as u64);
        }
    }
    latencies
}
