//! Metrics, named once here, and their Prometheus rendering. No metric carries a domain, so
//! `/metrics` reveals nothing about tenants.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const ATTEMPT_SECONDS: &str = "switchhook_attempt_duration_seconds";

/// The process-wide Prometheus recorder (metrics are process-wide by nature; installed once).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(ATTEMPT_SECONDS.into()), &buckets)
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}

/// Installs the recorder and registers every metric README names at zero, so `/metrics` shows
/// them from the start (a counter is otherwise absent until it first counts, and dashboards
/// and alerts on it see no series). Call before the first metric is recorded.
pub fn init() {
    handle();
    events_accepted(0, 0, 0);
    for outcome in ["delivered", "retry", "failed"] {
        deliveries(outcome).increment(0);
    }
    let _ = histogram!(ATTEMPT_SECONDS);
    queue_depth(0);
    unsendable_deliveries().increment(0);
    events_lost("esl", 0);
    for source in ["esl", "amqp"] {
        rejected(source).increment(0);
    }
}

/// The Prometheus text exposition.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

/// Whether a source, named as in `/health` (`esl 10.0.0.5:8021`, `amqp`), is connected: 1, or 0
/// from start-up until it first connects and whenever it is not.
pub fn source_connected(source: &str, connected: bool) {
    gauge!("switchhook_source_connected", "source" => source.to_owned()).set(f64::from(u8::from(connected)));
}

/// Events a source handed over and the store took: all of them, those that matched a hook,
/// and those that can match none (no domain or event name, or unreadable).
pub fn events_accepted(received: usize, matched: usize, dropped: usize) {
    counter!("switchhook_events_received_total").increment(received as u64);
    counter!("switchhook_events_matched_total").increment(matched as u64);
    counter!("switchhook_events_dropped_total").increment(dropped as u64);
}

/// One delivery attempt and where it left the delivery: `delivered`, `retry` or `failed`.
pub fn attempt(outcome: &'static str, duration: Duration) {
    deliveries(outcome).increment(1);
    histogram!(ATTEMPT_SECONDS).record(duration.as_secs_f64());
}

pub fn queue_depth(pending: u64) {
    gauge!("switchhook_queue_depth").set(pending as f64);
}

/// A delivery not queued because its hook's templates would render too much for the event.
pub fn unsendable() {
    unsendable_deliveries().increment(1);
}

/// Events a source read but could not commit before shutting down, so they are lost (only an
/// event socket, which cannot resend, ever gives events up).
pub fn events_lost(source: &'static str, events: usize) {
    counter!("switchhook_events_lost_total", "source" => source).increment(events as u64);
}

/// A message a source could not use (not an event), rejected without retry.
pub fn source_rejected(source: &'static str) {
    rejected(source).increment(1);
}

fn deliveries(outcome: &'static str) -> Counter {
    counter!("switchhook_deliveries_total", "outcome" => outcome)
}

fn unsendable_deliveries() -> Counter {
    counter!("switchhook_deliveries_unsendable_total")
}

fn rejected(source: &'static str) -> Counter {
    counter!("switchhook_source_rejected_total", "source" => source)
}
