//! The crowd: N distinct users, each with its own token, over C keep-alive connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::future::join_all;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

/// One application as the client saw it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Whose request it was (an index into the tokens).
    pub user: u32,
    /// When the answer arrived, µs after the crowd started.
    pub done_us: u64,
    pub latency_us: u64,
    pub status: u16,
    /// The position, for admissions.
    pub position: Option<u32>,
}

/// Where a crowd stands, for those who watch it: how many tokens it has taken (requests sent),
/// and a way to stop it before the tokens run out.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    next: Arc<AtomicUsize>,
    pub stop: CancellationToken,
}

impl Progress {
    /// Tokens taken so far, the last few of them still in flight (past the last token once
    /// the crowd has run out).
    pub fn sent(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }
}

/// Sends one request per token (token i to `urls[i mod K]`), `concurrency` at a time, and
/// returns what came back. `POST` applies; `GET` reads another route the same way.
pub async fn run(
    client: &reqwest::Client,
    method: reqwest::Method,
    urls: Arc<Vec<String>>,
    tokens: Arc<Vec<String>>,
    concurrency: usize,
    started: Instant,
) -> Vec<Sample> {
    let progress = Progress::default();
    run_until(
        client,
        method,
        urls,
        tokens,
        concurrency,
        started,
        &progress,
    )
    .await
}

/// [`run`], reporting its progress, and ending early (requests in flight are answered) once
/// `progress.stop` is cancelled.
pub async fn run_until(
    client: &reqwest::Client,
    method: reqwest::Method,
    urls: Arc<Vec<String>>,
    tokens: Arc<Vec<String>>,
    concurrency: usize,
    started: Instant,
    progress: &Progress,
) -> Vec<Sample> {
    let workers = (0..concurrency).map(|_| {
        let (client, tokens) = (client.clone(), tokens.clone());
        let (next, stop) = (progress.next.clone(), progress.stop.clone());
        let (urls, method) = (urls.clone(), method.clone());
        async move {
            let mut samples = Vec::with_capacity(tokens.len() / concurrency + 1);
            while !stop.is_cancelled() {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { break };
                let url = &urls[i % urls.len()];
                let sent = Instant::now();
                let (status, position) = match client
                    .request(method.clone(), url)
                    .bearer_auth(token)
                    .send()
                    .await
                {
                    Ok(resp) => {
                        let status = resp.status();
                        let position = if status == StatusCode::ACCEPTED {
                            resp.json::<serde_json::Value>()
                                .await
                                .ok()
                                .and_then(|b| b["position"].as_u64())
                        } else {
                            let _ = resp.bytes().await; // drain, so the connection is reused
                            None
                        };
                        (status.as_u16(), position.map(|p| p as u32))
                    }
                    Err(_) => (0, None),
                };
                let done = Instant::now();
                samples.push(Sample {
                    user: i as u32,
                    done_us: (done - started).as_micros() as u64,
                    latency_us: (done - sent).as_micros() as u64,
                    status,
                    position,
                });
            }
            samples
        }
    });
    let per_worker = join_all(workers.map(tokio::spawn)).await;
    per_worker
        .into_iter()
        .flat_map(|r| r.unwrap_or_default())
        .collect()
}
