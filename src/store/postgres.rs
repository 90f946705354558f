//! PostgreSQL, for clusters: several nodes share one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::mpsc;

use super::sql::{Dialect, SqlStore};
use super::{HookChange, Result};

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const MIGRATIONS: &'static [(&'static str, &'static str)] = &[
        ("init", include_str!("migrations/0001_init.sql")),
        ("deliveries", include_str!("migrations/0002_deliveries.sql")),
        ("lz4 payloads", include_str!("migrations/postgres_0003_lz4.sql")),
        ("lean payloads", include_str!("migrations/postgres_0004_lean_payloads.sql")),
        ("compressed bodies", include_str!("migrations/postgres_0005_compressed_bodies.sql")),
    ];
    // SKIP LOCKED: nodes sharing the database lease disjoint rows without waiting on each other.
    const WRITERS: usize = 4;
    // PostgreSQL compresses `body` itself (lz4, postgres_0003); the service doing it instead
    // measured 8 % fewer webhooks/s (BENCHMARKS.md, change 22).
    const COMPRESS_BODIES: bool = false;
    const LEASE_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    const NOTIFY_HOOK: Option<&'static str> = Some("SELECT pg_notify('switchhook_hooks', $1)");

    fn hook_changes(pool: &sqlx::Pool<Self>) -> Option<mpsc::Receiver<HookChange>> {
        let (changes, rx) = mpsc::channel(1024);
        tokio::spawn(listen(pool.clone(), changes));
        Some(rx)
    }
}

pub async fn open(url: &str) -> Result<SqlStore<Postgres>> {
    let options = PgConnectOptions::from_str(url)?;
    let pool =
        PgPoolOptions::new().max_connections(10).acquire_timeout(Duration::from_secs(5)).connect_with(options).await?;
    let store = SqlStore { pool };
    store.migrate().await?;
    Ok(store)
}

/// Forwards `switchhook_hooks` notifications until the receiver goes away. After the listening
/// connection was lost (and sqlx reconnected it), asks for a full resync: notifications sent
/// meanwhile are gone.
async fn listen(pool: sqlx::Pool<Postgres>, changes: mpsc::Sender<HookChange>) {
    let mut wait = Duration::from_secs(1);
    while !changes.is_closed() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for hook changes; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if let Err(e) = listener.listen("switchhook_hooks").await {
            tracing::warn!(error = %e, "cannot listen for hook changes; retrying");
            tokio::time::sleep(wait).await;
            continue;
        }
        wait = Duration::from_secs(1);
        // Whatever changed before this connection listened.
        if changes.send(HookChange::Resync).await.is_err() {
            return;
        }
        loop {
            // Stop with the service: its end drops the receiving side.
            let next = tokio::select! {
                next = listener.try_recv() => next,
                () = changes.closed() => return,
            };
            match next {
                Ok(Some(n)) => {
                    if changes.send(HookChange::Hook(n.payload().to_owned())).await.is_err() {
                        return;
                    }
                }
                // The connection was lost; sqlx reconnects on the next call.
                Ok(None) => {
                    if changes.send(HookChange::Resync).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lost the hook-change listener");
                    break;
                }
            }
        }
    }
}
