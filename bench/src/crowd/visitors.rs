//! The rest of the crowd at the door, each on a keep-alive connection of its own, looping until
//! stopped: readers refreshing the event page (`GET /coupons/{id}`, no token, as anyone may)
//! and pollers asking for the position (`GET /coupons/{id}/position`) with the tokens of users
//! who have applied.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fcfs_coupon::domain::CouponId;
use futures::future::join_all;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::spike::crowd::Progress;
use crate::spike::report::new_histogram;

/// How pollers behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PollMode {
    /// Ask again as soon as the answer arrives, for the next user who applied (a refresh
    /// button held down, or wrk).
    Hammer,
    /// Each user asks again only once their last answer's `retryAfterMs` has passed, and stops
    /// at an answer without one (final). A connection with nobody due waits.
    Honour,
}

/// After an error answer, an honouring user waits this long.
const BACKOFF_MS: u64 = 1_000;
/// The longest an honouring poller with nobody due sleeps before looking again.
const IDLE_NAP: Duration = Duration::from_millis(10);

/// What one route's visitors saw.
pub struct Tally {
    pub latency: Histogram<u64>,
    /// Answers the route gives when it works (200).
    pub served: u64,
    /// Everything else: other statuses and transport errors.
    pub other: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: new_histogram(),
            served: 0,
            other: 0,
        }
    }

    fn record(&mut self, ok: bool, sent: Instant) {
        self.latency
            .saturating_record(sent.elapsed().as_micros() as u64);
        if ok {
            self.served += 1;
        } else {
            self.other += 1;
        }
    }

    fn merged(tallies: Vec<Tally>) -> Tally {
        tallies.into_iter().fold(Tally::new(), |mut all, t| {
            all.latency.add(&t.latency).expect("same histogram bounds");
            all.served += t.served;
            all.other += t.other;
            all
        })
    }
}

/// `n` connections refreshing the events' pages (connection i reads event i mod K).
pub fn readers(
    client: &reqwest::Client,
    base: &str,
    coupons: &[CouponId],
    n: usize,
    stop: &CancellationToken,
) -> JoinHandle<Tally> {
    let loops: Vec<_> = (0..n)
        .map(|i| {
            let url = format!("{base}/coupons/{}", coupons[i % coupons.len()]);
            let (client, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tally = Tally::new();
                while !stop.is_cancelled() {
                    let sent = Instant::now();
                    let ok = match client.get(&url).send().await {
                        Ok(resp) => resp.status().as_u16() == 200 && resp.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    tally.record(ok, sent);
                }
                tally
            })
        })
        .collect();
    tokio::spawn(
        async move { Tally::merged(join_all(loops).await.into_iter().flatten().collect()) },
    )
}

/// Whose position may be asked: users 0..count, user i of event i mod K.
#[derive(Clone)]
pub struct Applicants {
    pub urls: Arc<Vec<String>>,
    pub tokens: Arc<Vec<String>>,
    pub count: Count,
}

#[derive(Clone)]
pub enum Count {
    /// The appliers are running: those they took before the last `in_flight` tokens, whose
    /// applications have (almost surely) been answered.
    Running {
        progress: Progress,
        in_flight: usize,
    },
    /// The first n users applied.
    Applied(usize),
}

impl Applicants {
    fn count(&self) -> usize {
        match &self.count {
            Count::Running {
                progress,
                in_flight,
            } => progress
                .sent()
                .min(self.tokens.len())
                .saturating_sub(*in_flight),
            Count::Applied(n) => (*n).min(self.tokens.len()),
        }
    }
}

/// `n` connections polling positions.
pub fn pollers(
    client: &reqwest::Client,
    applicants: Applicants,
    n: usize,
    mode: PollMode,
    stop: &CancellationToken,
) -> JoinHandle<Tally> {
    let shared = Arc::new(Shared {
        applicants,
        cursor: AtomicUsize::new(0),
        queue: Mutex::new(Queue::default()),
        mode,
        started: Instant::now(),
    });
    let loops: Vec<_> = (0..n)
        .map(|_| tokio::spawn(poll(client.clone(), shared.clone(), stop.clone())))
        .collect();
    tokio::spawn(
        async move { Tally::merged(join_all(loops).await.into_iter().flatten().collect()) },
    )
}

struct Shared {
    applicants: Applicants,
    /// Hammer: the next user, round robin over those who applied.
    cursor: AtomicUsize,
    /// Honour: users by when they may ask again.
    queue: Mutex<Queue>,
    mode: PollMode,
    started: Instant,
}

#[derive(Default)]
struct Queue {
    /// (due, user), due in ms since the pollers started.
    due: BinaryHeap<Reverse<(u64, usize)>>,
    /// Users 0..joined are in the queue or have had a final answer.
    joined: usize,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The next user to ask for, or how long to wait for one.
    fn next(&self) -> Result<usize, Duration> {
        let applied = self.applicants.count();
        if applied == 0 {
            return Err(Duration::from_millis(1));
        }
        if self.mode == PollMode::Hammer {
            return Ok(self.cursor.fetch_add(1, Ordering::Relaxed) % applied);
        }
        let now = self.now_ms();
        let mut queue = self.queue.lock().expect("poll queue");
        for user in queue.joined..applied {
            queue.due.push(Reverse((now, user)));
        }
        queue.joined = queue.joined.max(applied);
        match queue.due.peek() {
            Some(Reverse((due, _))) if *due > now => {
                Err(Duration::from_millis(due - now).min(IDLE_NAP))
            }
            Some(_) => Ok(queue.due.pop().expect("peeked").0 .1),
            None => Err(IDLE_NAP),
        }
    }

    fn again_in(&self, user: usize, ms: u64) {
        let due = self.now_ms() + ms;
        self.queue
            .lock()
            .expect("poll queue")
            .due
            .push(Reverse((due, user)));
    }
}

async fn poll(client: reqwest::Client, shared: Arc<Shared>, stop: CancellationToken) -> Tally {
    let mut tally = Tally::new();
    let honour = shared.mode == PollMode::Honour;
    let applicants = &shared.applicants;
    while !stop.is_cancelled() {
        let user = match shared.next() {
            Ok(user) => user,
            Err(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
        };
        let url = &applicants.urls[user % applicants.urls.len()];
        let sent = Instant::now();
        let answer = client
            .get(url)
            .bearer_auth(&applicants.tokens[user])
            .send()
            .await;
        let (ok, retry_after_ms) = match answer {
            Ok(resp) if resp.status().as_u16() == 200 => {
                if honour {
                    match resp.json::<serde_json::Value>().await {
                        Ok(body) => (true, body["retryAfterMs"].as_u64()),
                        Err(_) => (false, Some(BACKOFF_MS)),
                    }
                } else {
                    (resp.bytes().await.is_ok(), None)
                }
            }
            Ok(resp) => {
                let _ = resp.bytes().await; // drain, so the connection is reused
                (false, Some(BACKOFF_MS))
            }
            Err(_) => (false, Some(BACKOFF_MS)),
        };
        tally.record(ok, sent);
        if honour {
            if let Some(ms) = retry_after_ms {
                shared.again_in(user, ms);
            }
        }
    }
    tally
}
