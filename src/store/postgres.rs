//! PostgreSQL, for clusters: several nodes share one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection, Postgres};
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

/// The URL parameters sqlx 0.9 reads (sqlx-postgres `options/parse.rs`), besides `options[...]`.
const KNOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// `url`'s connect options. sqlx logs every parameter it does not know with its value, and
/// libpq URLs carry secrets in some it does not know (`sslpassword`, `PASSWORD`): those are left
/// out before sqlx sees them, and only their names are logged.
fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return Ok(PgConnectOptions::from_str(url)?);
    };
    let (kept, unknown): (Vec<_>, Vec<_>) = parsed
        .query_pairs()
        .into_owned()
        .partition(|(key, _)| KNOWN_PARAMETERS.contains(&key.as_str()) || key.starts_with("options["));
    if !unknown.is_empty() {
        let names: Vec<&str> = unknown.iter().map(|(key, _)| key.as_str()).collect();
        tracing::warn!(parameters = ?names, "ignoring PostgreSQL URL parameters sqlx does not read");
        parsed.set_query(None);
        if !kept.is_empty() {
            parsed.query_pairs_mut().extend_pairs(&kept);
        }
    }
    Ok(PgConnectOptions::from_str(parsed.as_str())?)
}

/// How long start-up waits for PostgreSQL to take a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn open(url: &str) -> Result<SqlStore<Postgres>> {
    let options = connect_options(url)?.log_slow_statements(log::LevelFilter::Debug, super::sql::SLOW);
    let pool = match PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options.clone())
        .await
    {
        Ok(pool) => pool,
        // The pool retries a connection that is refused (or a server still starting up) until
        // its timeout, and then names only the timeout: one more attempt of its own names the
        // cause. It is bounded too: a server that takes connections and never answers has none.
        Err(sqlx::Error::PoolTimedOut) => {
            if let Ok(Err(cause)) = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
                return Err(cause.into());
            }
            return Err(sqlx::Error::PoolTimedOut.into());
        }
        Err(e) => return Err(e.into()),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_sqlx_does_not_read_are_left_out_and_the_rest_kept() {
        let url = "postgres://app@db.example.com:6432/hooks?sslpassword=s3cret&application_name=sh&PASSWORD=x&options[search_path]=a";
        let options = connect_options(url).unwrap();
        assert_eq!(options.get_host(), "db.example.com");
        assert_eq!(options.get_port(), 6432);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("hooks"));
        assert_eq!(options.get_application_name(), Some("sh"));
        assert_eq!(options.get_options(), Some("-c search_path=a"));
        assert!(!format!("{options:?}").contains("s3cret"));
        let plain = connect_options("postgres://app@db.example.com/hooks?sslpassword=s3cret").unwrap();
        assert_eq!(plain.get_database(), Some("hooks"));
        assert!(connect_options("not a url").is_err());
    }
}
