//! Readiness: whether the dependencies a process uses answer, each within two seconds. The
//! public `/health/ready` checks all three; the ops port checks only what the process's roles
//! use.

use std::time::Duration;

use sqlx::PgPool;

use crate::gate::Gate;
use crate::kafka::BrokerProbe;

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The dependencies to check; `None` is not used by this process.
#[derive(Clone, Default)]
pub struct Dependencies {
    pub redis: Option<Gate>,
    pub postgres: Option<PgPool>,
    pub kafka: Option<BrokerProbe>,
}

/// Each checked dependency: up (`true`) or down; `None` when not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub redis: Option<bool>,
    pub postgres: Option<bool>,
    pub kafka: Option<bool>,
}

impl Checked {
    pub fn ready(&self) -> bool {
        [self.redis, self.postgres, self.kafka] != [None; 3]
            && ![self.redis, self.postgres, self.kafka].contains(&Some(false))
    }
}

impl Dependencies {
    /// Checks them all at once.
    pub async fn check(&self) -> Checked {
        let redis = async {
            match &self.redis {
                Some(gate) => Some(gate.ping().await.is_ok()),
                None => None,
            }
        };
        let postgres = async {
            let db = self.postgres.as_ref()?;
            let query = sqlx::query("SELECT 1").execute(db);
            Some(matches!(
                tokio::time::timeout(CHECK_TIMEOUT, query).await,
                Ok(Ok(_))
            ))
        };
        let kafka = async {
            let broker = self.kafka.as_ref()?;
            Some(broker.ping(CHECK_TIMEOUT).await.is_ok())
        };
        let (redis, postgres, kafka) = tokio::join!(redis, postgres, kafka);
        Checked {
            redis,
            postgres,
            kafka,
        }
    }
}
