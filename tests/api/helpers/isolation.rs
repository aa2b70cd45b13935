//! What one test made for itself (its database, its Redis keys) and takes away when it ends.
//! Every `TestApp` of a test (instances started on the same settings) holds the same
//! [`Isolation`]; the last one dropped removes them.
//!
//! Its topics stay: after Tansu 0.6.0 deletes a topic, its metadata answers crash every
//! librdkafka 2.12.1 client on the broker (seen under gdb: `rd_kafka_metadata_cache_find` with
//! a NULL topic name, in `rdk:main`). They are empty or small and gone with the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fcfs_coupon::configuration::Settings;
use sqlx::{Connection, PgConnection};

/// Live isolations by key prefix, so instances of one test share one.
static LIVE: Mutex<Option<HashMap<String, Weak<Isolation>>>> = Mutex::new(None);

pub struct Isolation {
    settings: Settings,
}

impl Isolation {
    /// The isolation of the test whose settings these are.
    pub fn of(settings: &Settings) -> Arc<Self> {
        let mut live = LIVE.lock().unwrap();
        let live = live.get_or_insert_with(HashMap::new);
        let key = settings.redis.key_prefix.clone();
        if let Some(existing) = live.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let isolation = Arc::new(Self {
            settings: settings.clone(),
        });
        live.insert(key, Arc::downgrade(&isolation));
        isolation
    }
}

impl Drop for Isolation {
    /// Runs on a thread of its own: the test's runtime may be a single thread, busy dropping.
    fn drop(&mut self) {
        let settings = self.settings.clone();
        // Debug builds of these futures are deep; a default 2 MiB thread stack overflows.
        let cleaned = std::thread::Builder::new()
            .stack_size(32 * 1024 * 1024)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(clean(&settings));
            })
            .map(|t| t.join());
        if !matches!(cleaned, Ok(Ok(()))) {
            eprintln!("test cleanup panicked; scripts/test.sh removes leftovers on its next run");
        }
    }
}

/// Best effort: what cannot be removed now is left for `scripts/test.sh` to remove on its next
/// run.
async fn clean(settings: &Settings) {
    const BOUND: Duration = Duration::from_secs(5);
    tokio::time::timeout(BOUND, drop_database(settings))
        .await
        .ok();
    tokio::time::timeout(BOUND, delete_keys(settings))
        .await
        .ok();
}

async fn drop_database(settings: &Settings) {
    let Ok(options) = settings.database.connect_options() else {
        return;
    };
    let name = options.get_database().unwrap_or_default().to_owned();
    if !name.starts_with("fcfs_test_") {
        return;
    }
    if let Ok(mut conn) = PgConnection::connect_with(&options.database("postgres")).await {
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .ok();
        conn.close().await.ok();
    }
}

async fn delete_keys(settings: &Settings) {
    let Ok(mut conn) = settings.redis.connect().await else {
        return;
    };
    let pattern = format!("{}:*", settings.redis.key_prefix);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await
            .ok();
    }
}
