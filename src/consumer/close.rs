//! Leaving the consumer group, with a bound.
//!
//! Dropping a librdkafka consumer leaves its group: it closes and serves the rebalance events
//! that arrive meanwhile. librdkafka 2.12.1 can hang forever there: when an assignment arrives
//! during the close, `rd_kafka_assign` waits for a group thread that no longer answers
//! (confluentinc/librdkafka#4884, seen here under gdb when a test stopped an instance right as
//! it joined). So the consumer is dropped on a thread of its own, and the owner waits for it
//! for a few seconds only: a clean close still hands the partitions over at once, a hung one
//! no longer holds up the process's exit (the group then reassigns after the session timeout,
//! as after a crash).

use std::ops::Deref;
use std::time::Duration;

/// How long a drop waits for the group to be left.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

pub struct Closing<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> Closing<T> {
    pub fn new(inner: T) -> Self {
        Self(Some(inner))
    }
}

impl<T: Send + 'static> Deref for Closing<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for Closing<T> {
    fn drop(&mut self) {
        let Some(inner) = self.0.take() else { return };
        let (closed, done) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-close".into())
            .spawn(move || {
                drop(inner);
                let _ = closed.send(());
            });
        if spawned.is_ok() && done.recv_timeout(CLOSE_WITHIN).is_err() {
            tracing::warn!(
                "leaving the consumer group did not finish within {CLOSE_WITHIN:?} \
                 (librdkafka#4884); the group reassigns its partitions after the session timeout"
            );
        }
    }
}
