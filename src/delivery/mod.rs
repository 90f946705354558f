//! Delivery: workers that lease due deliveries, send them, and record every attempt; plus the
//! background upkeep of the queue (retention, queue depth).

pub mod client;
pub mod destination;
pub mod retry;
pub mod sign;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::now_ms;
use crate::store::Store;
use crate::telemetry;

/// How often finished deliveries past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// How long event identities are kept for deduplication: two nodes read one event within
/// milliseconds of each other.
const SEEN_EVENTS_KEPT: Duration = Duration::from_secs(3600);
/// How often the queue-depth gauge is refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Prunes delivered and failed deliveries older than `retention` and keeps the queue-depth
/// gauge fresh, until `shutdown`.
pub async fn maintain(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    let mut gauge = tokio::time::interval(GAUGE_EVERY);
    let mut prune = tokio::time::interval(PRUNE_EVERY);
    loop {
        tokio::select! {
            _ = gauge.tick() => match store.pending_count().await {
                Ok(n) => telemetry::queue_depth(n),
                Err(e) => tracing::debug!(error = %e, "cannot count pending deliveries"),
            },
            _ = prune.tick() => {
                let before = now_ms() - retention.as_millis() as i64;
                match store.prune(before, now_ms() - SEEN_EVENTS_KEPT.as_millis() as i64).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deliveries = n, "pruned finished deliveries past retention"),
                    Err(e) => tracing::warn!(error = %e, "cannot prune finished deliveries"),
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}
