//! Test harness: a real server on 127.0.0.1:0 over a fresh store (SQLite in a temp folder,
//! or a database of its own on the PostgreSQL that `SWITCHHOOK_TEST_POSTGRES_URL` names).
#![allow(dead_code)]

pub mod events;
pub mod log;
pub mod receiver;

use std::time::Duration;

use serde_json::Value;
use switchhook::app::Services;
use switchhook::auth::Role;
use switchhook::config::{Config, FileConfig, Overrides};
use tokio_util::sync::CancellationToken;

pub const TOKEN_SECRET: &str = "switchhook-test-secret-0123456789abcdef";

/// Which store a test runs on.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend, or `None` (and one line saying so) when the variable is unset.
    pub fn postgres() -> Option<Backend> {
        match std::env::var("SWITCHHOOK_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                println!("skipped: SWITCHHOOK_TEST_POSTGRES_URL is not set");
                None
            }
        }
    }
}

/// Runs each named `async fn(Backend)` as a test on SQLite and on PostgreSQL.
/// Runs `$body` with `$conn` connected straight to the store's database at `$url`, whichever
/// backend it is.
#[macro_export]
macro_rules! on_store_db {
    ($url:expr, |$conn:ident| $body:expr) => {{
        let url: &str = $url;
        if url.starts_with("postgres") {
            let mut $conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await.expect("connect");
            $body
        } else {
            let mut $conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url).await.expect("connect");
            $body
        }
    }};
}

#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(b) = $crate::common::Backend::postgres() { super::$name(b).await }
            })*
        }
    };
}

/// Commits of new deliveries waiting for the lock on `delivery_payloads`, as PostgreSQL sees
/// them: tests that stall the store's writes (another session locks the table) count them.
pub async fn commits_waiting(conn: &mut sqlx::PgConnection) -> i64 {
    let sql = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO delivery_payloads%'";
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// A database of its own on the test PostgreSQL, dropped when the test ends.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn create(admin_url: &str) -> PgDatabase {
        use sqlx::Connection;
        let name = format!("switchhook_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .expect("SWITCHHOOK_TEST_POSTGRES_URL is set but PostgreSQL cannot be reached");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let mut url = url::Url::parse(admin_url).expect("SWITCHHOOK_TEST_POSTGRES_URL is a URL");
        url.set_path(&format!("/{name}"));
        PgDatabase { admin_url: admin_url.to_owned(), name, url: url.to_string() }
    }

    /// Drops the database now, even with the server still connected.
    pub async fn drop_now(admin_url: &str, name: &str) {
        use sqlx::Connection;
        if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(PgDatabase::drop_now(&admin, &name));
        })
        .join();
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestServer {
    pub base: String,
    pub http: reqwest::Client,
    pub config: Config,
    pub services: Services,
    /// The root token the server wrote on first start.
    pub root: String,
    shutdown: CancellationToken,
    /// Stops the server when a test ends early.
    _stop_on_drop: tokio_util::sync::DropGuard,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub pg: Option<PgDatabase>,
    pub dir: tempfile::TempDir,
}

pub fn config_for(dir: &std::path::Path, database_url: Option<String>) -> Config {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir.to_path_buf()),
        database_url,
        ..Default::default()
    };
    Config::build(FileConfig::default(), &overrides, |k| match k {
        "SWITCHHOOK_TOKEN_SECRET" => Some(TOKEN_SECRET.into()),
        "SWITCHHOOK_LOG" => Some("warn".into()),
        _ => None,
    })
    .expect("test config is valid")
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_configured(backend, |_| {}).await
    }

    /// Starts a server on a fresh store, with `configure` applied to its configuration.
    pub async fn start_configured(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestServer {
        switchhook::app::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = match &backend {
            Backend::Sqlite => None,
            Backend::Postgres(admin) => Some(PgDatabase::create(admin).await),
        };
        let mut config = config_for(dir.path(), pg.as_ref().map(|p| p.url.clone()));
        configure(&mut config);
        Self::start_with(config, dir, pg).await
    }

    /// Starts a server on an existing folder and store (a restart).
    pub async fn start_with(config: Config, dir: tempfile::TempDir, pg: Option<PgDatabase>) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(switchhook::app::serve(config.clone(), listener, shutdown.clone()));
        let http = reqwest::Client::new();
        wait_healthy(&http, &base).await;
        let root = std::fs::read_to_string(dir.path().join("root.token")).unwrap().trim().to_owned();
        let services = Services::open(&config).await.expect("open services");
        let _stop_on_drop = shutdown.clone().drop_guard();
        TestServer { base, http, config, services, root, shutdown, _stop_on_drop, task: Some(task), pg, dir }
    }

    /// Stops the server and hands back its folder and database for a restart.
    pub async fn stop(mut self) -> (Config, tempfile::TempDir, Option<PgDatabase>) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran cleanly");
        }
        (self.config.clone(), self.dir, self.pg.take())
    }

    /// Rows in one of the store's tables, read straight from the database.
    pub async fn count_rows(&self, table: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"));
        on_store_db!(&self.config.database_url, |conn| sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .expect("count rows"))
    }

    pub async fn token(&self, role: Role, domain: &str) -> String {
        self.services.issue_token(role, Some(domain.into()), Duration::from_secs(3600)).await.unwrap().1
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with a token (if any) and an optional JSON body; returns status and body.
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.header("X-Access-Token", t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, value)
    }

    /// Creates a hook in `domain` as root; returns its id.
    pub async fn create_hook(&self, domain: &str, body: Value) -> String {
        let (status, v) =
            self.call("POST", &format!("/api/v2/hooks?domain={domain}"), Some(&self.root), Some(body)).await;
        assert_eq!(status, 200, "create hook: {v}");
        v["data"]["insertedIds"][0].as_str().unwrap().to_owned()
    }

    /// Ingests events as root; returns the answer's data.
    pub async fn ingest(&self, events: Value) -> Value {
        let (status, v) = self.call("POST", "/api/v2/events", Some(&self.root), Some(events)).await;
        assert_eq!(status, 200, "ingest: {v}");
        v["data"].clone()
    }

    /// The delivery log of a hook.
    pub async fn deliveries(&self, domain: &str, hook_id: &str, query: &str) -> Vec<Value> {
        let path = format!("/api/v2/hooks/{hook_id}/deliveries?domain={domain}&{query}");
        let (status, v) = self.call("GET", &path, Some(&self.root), None).await;
        assert_eq!(status, 200, "deliveries: {v}");
        v["data"].as_array().unwrap().clone()
    }

    /// Waits until every delivery of the hook has left `pending`; returns the log.
    pub async fn settled(&self, domain: &str, hook_id: &str, n: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.deliveries(domain, hook_id, "").await;
            if log.len() >= n && log.iter().all(|d| d["status"] != "pending") {
                return log;
            }
            assert!(std::time::Instant::now() < deadline, "deliveries never settled: {log:#?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the server the hard way: every task it runs is dropped mid-flight, as in a crash.
    /// Returns what a restart needs.
    pub async fn crash(mut self) -> (Config, tempfile::TempDir, Option<PgDatabase>) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        (self.config.clone(), self.dir, self.pg.take())
    }

    /// Stops and starts the server on the same folder and store.
    pub async fn restart(self) -> TestServer {
        let (config, dir, pg) = self.stop().await;
        TestServer::start_with(config, dir, pg).await
    }

    /// Sends raw bytes as the body.
    pub async fn call_raw(&self, method: &str, path: &str, token: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .header("X-Access-Token", token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}")))
    }
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("server at {base} never became healthy");
}

/// The seed document's create body, verbatim.
pub fn seed_hook() -> Value {
    serde_json::json!({
        "event": "CUSTOM->engine::dialer_member_end",
        "enable": true,
        "description": "Dialer’s member was complited",
        "action": {"type": "web", "method": "POST", "url": "https://requestb.in/yoe4hwyo"},
        "customBody": true,
        "rawBody": "{ \"dlr_id\": \"${dialerId}\", \"member_id\": \"${id}\", \"end_cause\": \"${endCause}\" }",
        "auth": {"headers": {}, "map": {}, "enabled": false},
        "map": {},
        "filter": {},
        "fields": [],
        "headers": {"Content-Type": "application/json"}
    })
}

/// A hook's `action`: POST to `url`.
pub fn web(url: &str) -> Value {
    serde_json::json!({"type": "web", "method": "POST", "url": url})
}

/// A minimal valid hook for `event` posting to `url`.
pub fn hook(event: &str, url: &str) -> Value {
    serde_json::json!({"event": event, "action": {"type": "web", "method": "POST", "url": url}})
}

/// A child process, killed when dropped: a test that fails leaves none running behind it.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// How the process ended, once it has, or `None` if it is still running after `timeout`.
    pub async fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
