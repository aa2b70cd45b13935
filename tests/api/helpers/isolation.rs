//! What one test made for itself (its database, its topics, its Redis keys) and takes away
//! when it ends. Every `TestApp` of a test (instances started on the same settings) holds the
//! same [`Isolation`]; the last one dropped removes everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fcfs_coupon::configuration::Settings;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use secrecy::ExposeSecret;
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
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(clean(&settings));
        })
        .join();
        if cleaned.is_err() {
            eprintln!("test cleanup panicked; scripts/test.sh removes leftovers on its next run");
        }
    }
}

/// Best effort: a dependency the test took away (a killed broker) only leaves a leftover,
/// which `scripts/test.sh` removes on its next run.
async fn clean(settings: &Settings) {
    const BOUND: Duration = Duration::from_secs(5);
    tokio::time::timeout(BOUND, drop_database(settings))
        .await
        .ok();
    tokio::time::timeout(BOUND, delete_topics(settings))
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

async fn delete_topics(settings: &Settings) {
    let kafka = &settings.kafka;
    let admin: AdminClient<DefaultClientContext> = match kafka.client_config().create() {
        Ok(admin) => admin,
        Err(_) => return,
    };
    let topics = [kafka.topic.clone(), kafka.dead_letter_topic()];
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(3)));
    admin.delete_topics(&topics, &options).await.ok();
}

async fn delete_keys(settings: &Settings) {
    let Ok(client) = redis::Client::open(settings.redis.url.expose_secret()) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
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
