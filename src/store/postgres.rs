//! PostgreSQL, for clusters: several nodes share one database.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::Result;
use super::sql::{Dialect, SqlStore};

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const MIGRATIONS: &'static [(&'static str, &'static str)] = &[
        ("init", include_str!("migrations/0001_init.sql")),
        ("deliveries", include_str!("migrations/0002_deliveries.sql")),
        ("lz4 payloads", include_str!("migrations/postgres_0003_lz4.sql")),
    ];
    // SKIP LOCKED: nodes sharing the database lease disjoint rows without waiting on each other.
    const WRITERS: usize = 4;
    const LEASE_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
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
