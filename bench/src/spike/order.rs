//! How far the crowd's admissions are from the order their requests were sent in, as the
//! clients saw it: batching may reorder applications that arrived within one window of each
//! other, and nothing else (README's Guarantees). Only admissions carry a position.

use serde::Serialize;

use super::crowd::Sample;

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Admissions that got a later position than one whose request was sent after theirs.
    pub overtaken: u64,
    /// The most by which such a later request was sent after the one it overtook, ms: the
    /// reordering bound as measured (client-side jitter included).
    pub max_overtaking_ms: f64,
    /// Admissions answered before another request was sent that got the smaller position.
    /// Must be 0 whatever the batching: it would be a decision made before its application.
    pub real_time_violations: u64,
}

/// Over `events` events, applicant i applying to event i mod `events`.
pub fn measure(samples: &[Sample], events: u32) -> Order {
    let mut order = Order::default();
    for event in 0..events.max(1) {
        let of_event = samples.iter().filter(|s| s.user % events.max(1) == event);
        measure_event(of_event, &mut order);
    }
    order
}

fn measure_event<'a>(samples: impl Iterator<Item = &'a Sample>, order: &mut Order) {
    let mut admitted: Vec<&Sample> = samples.filter(|s| s.position.is_some()).collect();
    admitted.sort_by_key(|s| s.position);
    // The latest send among the smaller positions seen so far.
    let mut latest_sent_ahead: Option<u64> = None;
    for sample in admitted {
        let sent = sample.done_us - sample.latency_us;
        if let Some(ahead) = latest_sent_ahead {
            if ahead > sent {
                order.overtaken += 1;
                order.max_overtaking_ms = order.max_overtaking_ms.max((ahead - sent) as f64 / 1e3);
            }
            if sample.done_us < ahead {
                order.real_time_violations += 1;
            }
        }
        latest_sent_ahead = latest_sent_ahead.max(Some(sent));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(position: u32, sent_us: u64, done_us: u64) -> Sample {
        Sample {
            user: position,
            done_us,
            latency_us: done_us - sent_us,
            status: 202,
            position: Some(position),
        }
    }

    #[test]
    fn an_application_sent_later_but_placed_first_is_an_overtaking() {
        let order = measure(
            &[
                sample(1, 300, 900),
                sample(2, 100, 1000),
                sample(3, 400, 950),
            ],
            1,
        );
        assert_eq!(order.overtaken, 1);
        assert_eq!(order.max_overtaking_ms, 0.2);
        assert_eq!(order.real_time_violations, 0);
    }

    #[test]
    fn an_answer_before_the_smaller_position_was_asked_is_a_violation() {
        let order = measure(&[sample(1, 500, 600), sample(2, 100, 200)], 1);
        assert_eq!(order.real_time_violations, 1);
    }
}
