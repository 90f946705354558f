//! Exact metric counts. The recorder is global to a process, so this file holds one test: no
//! other test's events can add to its counts.

mod common;

use common::events::channel;
use common::receiver::Receiver;
use common::{Backend, TestServer, web};
use serde_json::json;

const D: &str = "demo.example.com";

fn value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// An ingest the store refused (503) is not counted; the same batch sent again and committed
/// is counted once: 3 received, 1 matched, 1 dropped (no domain), 1 wanted by no hook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_counted_once_the_store_takes_them() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = Receiver::start().await;
    let id = s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    let batch = json!([
        channel("CHANNEL_ANSWER", D, "u-1"),
        {"Event-Name": "CHANNEL_ANSWER"},
        channel("CHANNEL_HANGUP", D, "u-1"),
    ]);

    // Another writer holds SQLite's write lock past the busy timeout: the ingest fails.
    let mut holder = <sqlx::SqliteConnection as sqlx::Connection>::connect(&s.config.database_url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    let (status, body) = s.call("POST", "/api/v2/events", Some(&s.root), Some(batch.clone())).await;
    assert_eq!(status, 503, "{body}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();

    s.ingest(batch).await;
    s.settled(D, &id, 1).await;
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let counts = ["received", "matched", "dropped"].map(|c| value(&metrics, &format!("switchhook_events_{c}_total")));
    assert_eq!(counts, [Some(3.0), Some(1.0), Some(1.0)], "{metrics}");
}
