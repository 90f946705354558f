//! The store failing under the service: PostgreSQL unreachable mid-load (its connections cut
//! by a proxy, as a restart does) or its writes stalled on a lock, and SQLite on a disk that
//! fills up or turns read-only.

mod common;

use common::web;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::events::channel;
use common::receiver::Receiver;
use common::{Backend, PgDatabase, TestServer, commits_waiting, config_for};
use serde_json::{Value, json};

/// A TCP proxy whose connections can be cut and whose door can be shut.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, up, conns }
    }

    /// Cuts every connection and refuses new ones, as a database restart looks to clients.
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_answers_503_and_loses_nothing_answered_200() {
    let Some(common::Backend::Postgres(admin)) = common::Backend::postgres() else { return };
    switchhook::app::install_crypto_provider();
    let db = PgDatabase::create(&admin).await;
    let real: url::Url = db.url.parse().unwrap();
    let target = format!("{}:{}", real.host_str().unwrap(), real.port().unwrap_or(5432));
    let proxy = Proxy::start(tokio::net::lookup_host(&target).await.unwrap().next().unwrap()).await;
    let mut via = real.clone();
    via.set_host(Some("127.0.0.1")).unwrap();
    via.set_port(Some(proxy.port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(config_for(dir.path(), Some(via.to_string())), dir, Some(db)).await;
    let r = Receiver::start().await;
    let domain = "outage.example.com";
    s.create_hook(domain, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "retries": 30, "delay": 1}))
        .await;

    let answers: Arc<Mutex<Vec<(String, u16, Value)>>> = Arc::default();
    let pusher = {
        let (http, url, token, answers) = (s.http.clone(), s.url("/api/v2/events"), s.root.clone(), answers.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut i = 0;
            while started.elapsed() < Duration::from_secs(9) {
                let id = format!("o{i}");
                i += 1;
                let event = channel("CHANNEL_ANSWER", domain, &id);
                let r = http.post(&url).header("X-Access-Token", &token).json(&event).send().await.unwrap();
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                answers.lock().unwrap().push((id, status, body));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore();
    pusher.await.unwrap();

    let answers = answers.lock().unwrap().clone();
    let ok: Vec<&String> = answers.iter().filter(|a| a.1 == 200).map(|a| &a.0).collect();
    let refused: Vec<&(String, u16, Value)> = answers.iter().filter(|a| a.1 != 200).collect();
    assert!(!refused.is_empty(), "the outage was not noticed");
    for (_, status, body) in &refused {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["status"], "error");
        assert!(body["info"].as_str().unwrap().starts_with("Store unavailable"), "{body}");
    }
    // Everything answered 200 arrives, outage or not.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: std::collections::HashSet<String> =
            r.at("/h").iter().map(|q| q.json()["data"]["Unique-ID"].as_str().unwrap().to_owned()).collect();
        let missing = ok.iter().filter(|id| !got.contains(id.as_str())).count();
        if missing == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{missing} of {} accepted events never arrived", ok.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("postgres outage: {} answered 200 (all delivered), {} answered 503", ok.len(), refused.len());
}

/// A small tmpfs of our own, or `None` (with a line saying why) where mounting is not allowed.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

async fn sqlite_server(fs: &Tmpfs) -> TestServer {
    switchhook::app::install_crypto_provider();
    let data = tempfile::tempdir_in(fs.0.path()).unwrap();
    TestServer::start_with(config_for(data.path(), None), data, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_answers_503_and_recovers() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let s = sqlite_server(&fs).await;
    // Receiver down: every request stays in the store until the disk is full.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let domain = "full.example.com";
    s.create_hook(domain, json!({"event": "CHANNEL_ANSWER", "action": web(&format!("http://127.0.0.1:{port}/")), "retries": 5, "delay": 3600}))
        .await;
    // Every refusal is a 503 in the envelope; one of them says the disk is full.
    let mut full = false;
    for batch in 0..200 {
        let events: Vec<Value> = (0..50).map(|i| channel("CHANNEL_ANSWER", domain, &format!("f{batch}-{i}"))).collect();
        let (status, body) = s.call("POST", "/api/v2/events", Some(&s.root), Some(Value::Array(events))).await;
        if status != 200 {
            assert_eq!((status, &body["status"]), (503, &json!("error")), "{body}");
            if body["info"] == "Store unavailable: the disk is full, try again" {
                full = true;
                break;
            }
        }
    }
    assert!(full, "the 4 MB disk never filled");
    // Still up, still reading.
    let (status, v) = s.call("GET", &format!("/api/v2/hooks?domain={domain}"), Some(&s.root), None).await;
    assert_eq!((status, v["data"].as_array().map(Vec::len)), (200, Some(1)));
    let (status, _) = s.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    drop(s);
}

/// Makes files immutable (`chattr +i`): even root cannot write them, as on a read-only disk.
fn immutable(files: &[std::path::PathBuf], on: bool) -> bool {
    std::process::Command::new("chattr")
        .arg(if on { "+i" } else { "-i" })
        .args(files)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_read_only_sqlite_store_stops_start_up_with_a_clear_error() {
    let bin = env!("CARGO_BIN_EXE_switchhook");
    let data = tempfile::tempdir().unwrap();
    let run =
        |args: &[&str]| std::process::Command::new(bin).args(args).arg("--data-dir").arg(data.path()).output().unwrap();
    assert!(run(&["migrate"]).status.success());
    let db = data.path().join("switchhook.db");
    if !immutable(std::slice::from_ref(&db), true) {
        println!("skipped: chattr +i is not allowed here (needs root on a filesystem that supports it)");
        return;
    }
    let out = run(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(immutable(&[db], false));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("readonly database") && !err.contains("panicked"), "{err}");
}

/// Ingest requests commit as many at a time as the store takes writers, and one more: the
/// rest wait for a turn without taking a connection or building their deliveries. With the
/// store's writes stalled (another session locks a table every commit writes to), 12
/// concurrent POSTs put 5 commits (PostgreSQL's 4 writers + 1) on the lock, and leave the
/// pool's other connections to the rest of the service; once the lock goes, all 12 are
/// answered 200 and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingests_commit_as_many_at_a_time_as_the_store_has_writers_and_one_more() {
    use sqlx::Connection as _;
    const POSTS: usize = 12;
    let Some(backend) = common::Backend::postgres() else { return };
    let s = TestServer::start(backend).await;
    let r = Receiver::start().await;
    let domain = "stalled.example.com";
    s.create_hook(domain, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    let mut lock = sqlx::PgConnection::connect(&s.config.database_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE delivery_payloads IN EXCLUSIVE MODE").execute(&mut lock).await.unwrap();
    let mut watch = sqlx::PgConnection::connect(&s.config.database_url).await.unwrap();

    let posts: Vec<_> = (0..POSTS)
        .map(|i| {
            let (http, url, token) = (s.http.clone(), s.url("/api/v2/events"), s.root.clone());
            let event = channel("CHANNEL_ANSWER", domain, &format!("s{i}"));
            tokio::spawn(async move {
                let r = http.post(&url).header("X-Access-Token", &token).json(&event).send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while commits_waiting(&mut watch).await < 5 {
        assert!(Instant::now() < deadline, "the ingests never reached the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The store still answers the rest of the service at once (not after the pool's 5 s wait
    // for a connection), and no more commits join the 5 while the others wait their turn.
    let asked = Instant::now();
    let (status, body) = s.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(asked.elapsed() < Duration::from_secs(3), "health took {:?}", asked.elapsed());
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(500) {
        assert_eq!(commits_waiting(&mut watch).await, 5, "ingest commits in flight at once");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(posts.iter().all(|p| !p.is_finished()), "an ingest was answered while the store was stalled");

    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    for post in posts {
        let (status, body) = post.await.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    r.wait_for("/h", POSTS, Duration::from_secs(20)).await;
}

/// `serve` waiting on the store at start-up (a table locked by another session, a migration
/// lock another node holds) stops at SIGTERM: it went on waiting, as long as the lock was held,
/// and only a kill stopped it. Nothing has started yet, so there is nothing to finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_start_up_waiting_on_the_store() {
    use sqlx::Connection;
    let Some(admin) = std::env::var("SWITCHHOOK_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty()) else {
        println!("skipped: SWITCHHOOK_TEST_POSTGRES_URL is not set");
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let bin = env!("CARGO_BIN_EXE_switchhook");
    let data = tempfile::tempdir().unwrap();
    let migrate = std::process::Command::new(bin)
        .args(["migrate", "--database-url", &db.url, "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(migrate.status.success());
    let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE tokens IN ACCESS EXCLUSIVE MODE").execute(&mut locker).await.unwrap();

    let mut serve = common::KillOnDrop(
        std::process::Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url, "--data-dir"])
            .arg(data.path())
            .env("SWITCHHOOK_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    // Until it waits on the lock (seen from another session: one in a transaction keeps its
    // first view of pg_stat_activity).
    let mut watcher = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock'";
    let deadline = Instant::now() + Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>(waiting).fetch_one(&mut watcher).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "serve never waited on the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::process::Command::new("kill").args(["-TERM", &serve.0.id().to_string()]).status().unwrap();
    let status =
        serve.exited_within(Duration::from_secs(5)).await.expect("serve stops waiting on the store at SIGTERM");
    assert!(status.success(), "{status}");
    sqlx::raw_sql("ROLLBACK").execute(&mut locker).await.unwrap();
    let _ = locker.close().await;
    let _ = watcher.close().await;
    assert!(!data.path().join("root.token").exists(), "no root token is issued once stopped");
}

/// A store slowed down (here SQLite's write lock, held by another connection for 1.5 s) is
/// logged in one short line naming the operation. sqlx's own warning, logged before, held the
/// whole statement: for the multi-row insert of new deliveries, KBs of placeholders in a line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_is_logged_in_one_short_line() {
    use sqlx::Connection as _;
    let log = common::log::warnings();
    let s = TestServer::start(Backend::Sqlite).await;
    let domain = "slow-store.example.com";
    s.create_hook(domain, json!({"event": "CHANNEL_ANSWER", "action": web("http://127.0.0.1:9/h")})).await;
    let mut lock = sqlx::SqliteConnection::connect(&s.config.database_url).await.unwrap();
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut lock).await.unwrap();
    // A batch size no other test here posts: the tests of this binary share the log.
    let events: Vec<Value> = (0..37).map(|i| channel("CHANNEL_ANSWER", domain, &format!("slow-{i}"))).collect();
    let (http, url, token) = (s.http.clone(), s.url("/api/v2/events"), s.root.clone());
    let post = tokio::spawn(async move {
        let r = http.post(&url).header("X-Access-Token", &token).json(&events).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
    let (status, body) = post.await.unwrap();
    assert_eq!(status, 200, "{body}");

    let slow = log.lines_with(&["a store operation was slow", "store new deliveries", "rows=37 "]);
    assert_eq!(slow.len(), 1, "{}", log.text());
    let took: u64 = slow[0].split("took_ms=").nth(1).and_then(|t| t.split(' ').next()?.parse().ok()).unwrap();
    assert!(took >= 1000 && slow[0].len() < 300, "{}", slow[0]);
    let statements = log.lines_with(&["INSERT INTO"]);
    assert!(statements.is_empty(), "a statement was logged: {:.500}", statements[0]);
}
