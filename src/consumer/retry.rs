use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub enum Gave {
    /// Retrying cannot help; the caller decides what to do with the input.
    Up(anyhow::Error),
    /// Shutdown came first; nothing was decided.
    Stopped,
}

/// Runs `attempt` until it succeeds, `permanent` says an error cannot be cured by retrying, or
/// shutdown is requested. Transient errors are retried with exponential backoff, forever: the
/// consumer never skips a message because a dependency is down.
pub async fn retrying<T, E, F, Fut>(
    what: &str,
    on_failure: impl Fn(),
    shutdown: &CancellationToken,
    permanent: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, Gave>
where
    E: Into<anyhow::Error>,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        let outcome = attempt().await;
        if outcome.is_err() {
            on_failure();
        }
        match outcome {
            Ok(value) => return Ok(value),
            Err(e) if permanent(&e) => return Err(Gave::Up(e.into())),
            Err(e) => {
                let e = e.into();
                tracing::warn!(error = ?e, retry_in_ms = delay.as_millis() as u64, "{what} failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return Err(Gave::Stopped),
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(MAX_DELAY);
            }
        }
    }
}

pub fn never<E>(_: &E) -> bool {
    false
}
