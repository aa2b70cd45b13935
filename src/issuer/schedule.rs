use std::time::Duration;

use anyhow::Context;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use super::Issuer;

const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

impl Issuer {
    /// Runs a tick on the configured cron schedule until `shutdown`, then lets the running tick
    /// finish and flushes the producer. Fails (stopping the process, see `startup`) when the
    /// producer failed for good: a new process gets a new producer.
    pub async fn run_scheduled(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut scheduler = JobScheduler::new()
            .await
            .context("starting the scheduler")?;
        let issuer = self.clone();
        let dead = CancellationToken::new();
        let dead_producer = dead.clone();
        let job = Job::new_async(self.settings.schedule.as_str(), move |_, _| {
            let (issuer, dead) = (issuer.clone(), dead_producer.clone());
            Box::pin(async move {
                // A tick still draining a spike makes the next one unnecessary, not queued.
                let Ok(_running) = issuer.tick.try_lock() else {
                    return;
                };
                if let Err(e) = issuer.tick_locked().await {
                    tracing::warn!(error = ?e, "issuer tick failed");
                }
                if issuer.check_producer().is_err() {
                    dead.cancel();
                }
            })
        })
        .context("invalid issuer schedule")?;
        scheduler.add(job).await.context("scheduling the issuer")?;
        scheduler.start().await.context("starting the scheduler")?;
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = dead.cancelled() => {}
        }
        scheduler
            .shutdown()
            .await
            .context("stopping the scheduler")?;
        self.check_producer()?;
        self.finish(FLUSH_TIMEOUT).await;
        tracing::info!("issuer stopped");
        Ok(())
    }
}
