//! The `switchhook` binary: serve's first start, token commands, configuration errors.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchhook");

fn switchhook(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("SWITCHHOOK_DATA_DIR", dir)
        .env_remove("SWITCHHOOK_TOKEN_SECRET")
        .env_remove("SWITCHHOOK_DATABASE_URL")
        .env_remove("SWITCHHOOK_CONFIG")
        .env_remove("SWITCHHOOK_LISTEN");
    cmd
}

fn run(dir: &Path, args: &[&str]) -> Output {
    switchhook(dir, args).output().expect("run switchhook")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap().trim().to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Serve {
    child: Child,
    base: String,
}

impl Serve {
    fn start(dir: &Path) -> Serve {
        Serve::start_with(dir, &[])
    }

    /// `serve` with these variables set too.
    fn start_with(dir: &Path, env: &[(&str, &str)]) -> Serve {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut command = switchhook(dir, &["serve", "--listen", &addr]);
        command.envs(env.iter().copied());
        let mut child = command.stderr(Stdio::piped()).spawn().expect("spawn serve");
        let base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if get(&base, "/health", None).0 == 200 {
                return Serve { child, base };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("serve did not come up");
    }

    /// Sends SIGTERM and returns the exit status and everything serve logged.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        let mut log = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (status, log)
    }
}

/// A test that fails does not leave `serve` running (holding the test's output open).
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking HTTP GET; returns status and body.
fn get(base: &str, path: &str, token: Option<&str>) -> (u16, String) {
    request(base, "GET", path, token, "")
}

/// A tiny blocking HTTP request; returns status and body.
fn request(base: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::Write;
    let addr = base.trim_start_matches("http://");
    let Ok(mut conn) = std::net::TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let auth = token.map(|t| format!("X-Access-Token: {t}\r\n")).unwrap_or_default();
    let length = body.len();
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: {length}\r\nConnection: close\r\n\r\n{body}"
    )
    .unwrap();
    let mut resp = String::new();
    conn.read_to_string(&mut resp).unwrap();
    let status = resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[test]
fn first_start_writes_a_private_root_token_and_tokens_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let root_path = dir.path().join("root.token");
    let root = std::fs::read_to_string(&root_path).unwrap().trim().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&root_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (status, _) = get(&serve.base, "/api/v2/hooks?domain=a.com", Some(&root));
    assert_eq!(status, 200);

    // A token made by the CLI, with the secret the store generated, works against serve.
    let admin = stdout(&run(dir.path(), &["token", "create", "--domain", "a.com", "--role", "admin", "--ttl", "1h"]));
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&admin)).0, 200);
    let user = stdout(&run(dir.path(), &["token", "create", "--domain", "a.com", "--role", "user"]));
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&user)).0, 403);

    let list = stdout(&run(dir.path(), &["token", "list"]));
    let admin_line = list.lines().find(|l| l.contains("admin")).expect("admin token listed");
    assert!(admin_line.contains("a.com") && admin_line.ends_with("active"), "{list}");
    assert!(list.lines().any(|l| l.contains(" root ") && l.ends_with("active")), "{list}");
    let id = admin_line.split_whitespace().next().unwrap();

    let out = run(dir.path(), &["token", "revoke", id]);
    assert!(out.status.success());
    let (status, body) = get(&serve.base, "/api/v2/hooks", Some(&admin));
    assert_eq!((status, body.as_str()), (401, r#"{"status":"error","info":"Invalid token","code":401}"#));
    assert!(stdout(&run(dir.path(), &["token", "list"])).lines().any(|l| l.starts_with(id) && l.ends_with("revoked")));
    assert!(!run(dir.path(), &["token", "revoke", "no-such-id"]).status.success());

    let (status, log) = serve.terminate();
    assert!(status.success(), "serve exited with {status}: {log}");
    assert!(log.contains("root.token"), "{log}");
    assert!(!log.contains(&root), "the log must not contain the token");

    // A second start keeps the same root token.
    let serve = Serve::start(dir.path());
    assert_eq!(std::fs::read_to_string(&root_path).unwrap().trim(), root);
    assert_eq!(get(&serve.base, "/api/v2/hooks?domain=a.com", Some(&root)).0, 200);
    serve.terminate();
}

#[test]
fn root_tokens_from_the_cli_need_a_domain_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let root = stdout(&run(dir.path(), &["token", "create", "--root"]));
    let serve = Serve::start(dir.path());
    assert_eq!(get(&serve.base, "/api/v2/hooks?domain=x", Some(&root)).0, 200);
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&root)).0, 400);
    serve.terminate();
}

#[test]
fn bad_settings_stop_start_up_naming_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["serve", "--listen", "nowhere", "--database-url", "mysql://x"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen: \"nowhere\" is not an address"), "{err}");
    assert!(err.contains("database_url:"), "{err}");

    let config = dir.path().join("switchhook.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nlisen = 1\n").unwrap();
    let out = run(dir.path(), &["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field `lisen`"), "{err}");

    let out = switchhook(dir.path(), &["serve"]).env("SWITCHHOOK_MAX_RETRIES", "lots").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_retries:"));
}

#[test]
fn migrate_creates_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("switchhook.db").exists());
    // Twice is fine.
    assert!(run(dir.path(), &["migrate"]).status.success());
}

#[test]
fn bench_runs_end_to_end_and_writes_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    for source in ["http", "esl"] {
        let out = run(dir.path(), &["bench", "--events", "300", "--source", source, "--json", json.to_str().unwrap()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{source}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("delivered") && text.contains("baseline"), "{text}");
        let figures: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        for key in [
            "events",
            "deliveries",
            "events_per_s",
            "webhooks_per_s",
            "baseline_per_s",
            "ratio_to_baseline",
            "peak_rss_mb",
            "service_cpu_us_per_event",
            "source",
            "store",
        ] {
            assert!(!figures[key].is_null(), "{key} missing: {figures}");
        }
        for key in ["p50", "p90", "p99", "max"] {
            assert!(figures["latency_ms"][key].is_number(), "{figures}");
        }
        assert_eq!((figures["events"].as_u64(), figures["deliveries"].as_u64()), (Some(300), Some(300)), "{figures}");
        assert_eq!(figures["source"], source);
        assert!(figures["webhooks_per_s"].as_f64().unwrap() > 0.0 && figures["peak_rss_mb"].as_f64().unwrap() > 1.0);
        // The service parsed, stored and delivered 300 events: that took some CPU.
        assert!(figures["service_cpu_us_per_event"].as_f64().unwrap() > 0.0, "{figures}");
    }
}

/// The data folder holds root.token and, by default, the store with the token secret: a folder
/// the service creates is its owner's only, and so is the database (the security audit read the
/// secret from a world-readable file and signed a root token with it).
#[test]
fn a_new_data_folder_and_its_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("new/data");
    let out = run(&data, &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    let db =
        std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "db"));
    let db = db.expect("a database file in the data folder");
    assert_eq!(mode(&db), 0o600, "{}", db.display());
}

/// A URL the URL parser refuses (a port past 65535, a bad host) still has its password kept out
/// of what start-up prints: the database URL when the store cannot be opened, and the RabbitMQ
/// URL in the configuration error.
#[test]
fn passwords_in_unparsable_urls_stay_out_of_start_up_errors() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Pg5ecretPW";
    for url in [
        format!("postgres://switchhook:{secret}@127.0.0.1:99999/db"),
        format!("postgres://switchhook:{secret}@[::1/db"),
        // A password with a `/` not percent-encoded: the parser takes the host for ending at it.
        format!("postgresql://switchhook:{secret}/x@127.0.0.1:5432/db?sslpassword={secret}"),
    ] {
        let out = run(dir.path(), &["serve", "--listen", "127.0.0.1:0", "--database-url", &url]);
        assert!(!out.status.success(), "{url}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains(secret), "the database password is shown: {err}");
        assert!(err.contains("switchhook:***@"), "the URL is still named, password hidden: {err}");
    }
    let out = switchhook(dir.path(), &["serve", "--listen", "127.0.0.1:0"])
        .env("SWITCHHOOK_AMQP_URL", format!("amqp://guest:{secret}@127.0.0.1:99999/%2f"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("amqp.url"), "{err}");
    assert!(!err.contains(secret), "the RabbitMQ password is shown: {err}");
}

/// Every metric README names is on `/metrics` from the start, at zero, so dashboards and alerts
/// on them work before the first event (the ops audit found only `switchhook_queue_depth`).
#[test]
fn metrics_readme_names_are_served_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let (status, text) = get(&serve.base, "/metrics", None);
    assert_eq!(status, 200);
    for line in [
        "switchhook_events_received_total 0",
        "switchhook_events_matched_total 0",
        "switchhook_events_dropped_total 0",
        "switchhook_deliveries_total{outcome=\"delivered\"} 0",
        "switchhook_deliveries_total{outcome=\"retry\"} 0",
        "switchhook_deliveries_total{outcome=\"failed\"} 0",
        "switchhook_attempt_duration_seconds_count 0",
        "switchhook_queue_depth 0",
        "switchhook_source_rejected_total{source=\"esl\"} 0",
        "switchhook_source_rejected_total{source=\"amqp\"} 0",
        "switchhook_events_lost_total{source=\"esl\"} 0",
        "switchhook_deliveries_unsendable_total 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} missing from /metrics:\n{text}");
    }
    serve.terminate();
}

/// A database a newer switchhook migrated stops `migrate` and `serve` with an error that says
/// so, naming both schema versions (the ops audit got "migration 99 was previously applied but
/// is missing in the resolved migrations", twice).
#[test]
fn a_database_from_a_newer_version_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["migrate"]).status.success());
    let url = format!("sqlite://{}", dir.path().join("switchhook.db").display());
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'from the future', TRUE, x'00', 1)",
        )
        .execute(&mut db)
        .await
        .unwrap();
    });
    for args in [&["migrate"][..], &["serve", "--listen", "127.0.0.1:0"]] {
        let out = run(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the database's schema is version 99, newer than this switchhook knows (3)"),
            "{args:?}: {err}"
        );
        assert_eq!(err.matches("version 99").count(), 1, "said once: {err}");
    }
}

/// `token create` refuses what would make a useless token, naming the flag: a lifetime of
/// zero (the token is expired when printed) and a domain no event or request can have
/// (the ops audit got tokens for `" a.com"` and `--ttl 0s`).
#[test]
fn token_create_refuses_a_zero_ttl_and_a_domain_with_spaces() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (&["token", "create", "--root", "--ttl", "0s"][..], "--ttl"),
        (&["token", "create", "--domain", "a.com", "--role", "admin", "--ttl", "0ms"], "--ttl"),
        (&["token", "create", "--domain", " a.com", "--role", "admin"], "--domain"),
        (&["token", "create", "--domain", "a .com", "--role", "user"], "--domain"),
        (&["token", "create", "--domain", "", "--role", "user"], "--domain"),
    ] {
        let out = run(dir.path(), args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed a token");
    }
    assert!(
        run(dir.path(), &["token", "create", "--domain", "a.com", "--role", "admin", "--ttl", "1s"]).status.success()
    );
}

/// A token command run away from serve's folder made a store of its own in silence: `token
/// list` printed nothing and `token create` a token serve refused (the ops audit). It still
/// works (a store may be prepared before serve starts), but says it started a new store.
#[test]
fn a_token_command_that_starts_a_new_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), &["token", "list"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let err = String::from_utf8_lossy(&first.stderr);
    let db = dir.path().join("switchhook.db");
    assert!(err.contains(&format!("no store at {}; this starts a new, empty one", db.display())), "{err}");
    assert!(err.contains("--data-dir"), "{err}");
    assert!(db.exists());
    let again = run(dir.path(), &["token", "create", "--domain", "a.com", "--role", "admin"]);
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success() && !err.contains("no store"), "{err}");
}

/// A lifetime that ends after year 9999 (`--ttl 1000000y`, a token meant never to expire) is
/// a token like any other: `token create` panicked writing its expiry, after storing it, so
/// the token was active and printed nowhere, and every `token list` after it panicked too.
#[test]
fn a_token_that_outlives_year_9999_is_printed_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["token", "create", "--domain", "a.com", "--role", "admin", "--ttl", "1000000y"]);
    let token = stdout(&out);
    assert_eq!(token.split('.').count(), 3, "{token}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.trim_end().ends_with("expires 9999-12-31T23:59:59Z"), "{err}");
    let list = stdout(&run(dir.path(), &["token", "list"]));
    let line = list.lines().find(|l| l.contains("a.com")).unwrap_or_else(|| panic!("{list}"));
    assert!(line.contains(" 9999-12-31T23:59:59Z ") && line.ends_with("active"), "{list}");
}

/// A failing command prints its error and the causes, never anyhow's stack trace, whatever
/// `RUST_BACKTRACE` says (the ops audit got a 20-frame trace after a bad config value; an
/// unknown id to `token revoke` printed one too).
#[test]
fn errors_print_no_stack_trace_with_rust_backtrace_set() {
    let dir = tempfile::tempdir().unwrap();
    for (args, lease, said) in [
        (&["serve"][..], "1s", "delivery.lease: must be at least 5s"),
        (&["token", "revoke", "no-such-id"], "60s", "no token with id no-such-id"),
    ] {
        let out = switchhook(dir.path(), args)
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .env("SWITCHHOOK_DELIVERY_LEASE", lease)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{args:?}: {err}");
        assert!(!err.contains("backtrace") && !err.contains("main.rs"), "{args:?}: {err}");
    }
}

/// `SWITCHHOOK_DATA_DIR=""` is refused by key and variable like every other bad setting (the
/// ops audit got clap's "a value is required for '--data-dir <DATA_DIR>'").
#[test]
fn an_empty_data_dir_variable_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["serve"][..], &["migrate"]] {
        let out = switchhook(dir.path(), args).env("SWITCHHOOK_DATA_DIR", "").output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("data_dir: must not be empty (from SWITCHHOOK_DATA_DIR)"), "{args:?}: {err}");
    }
}

/// A variable that is not UTF-8 is refused by name; it read as unset, so the default folder
/// was used in silence (a fresh store and root token; found in review).
#[cfg(unix)]
#[test]
fn a_data_dir_variable_that_is_not_utf8_is_refused_by_name() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let garbled = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    let out =
        switchhook(dir.path(), &["migrate"]).current_dir(dir.path()).env("SWITCHHOOK_DATA_DIR", &garbled).output();
    let out = out.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SWITCHHOOK_DATA_DIR: is not valid UTF-8"), "{err}");
    assert!(!dir.path().join("switchhook-data").exists(), "the default folder was made");
}

/// Revoking a revoked token changes nothing and says so, with the time it was revoked; it
/// succeeds, as the token is revoked either way (the ops audit got "revoked" again).
#[test]
fn revoking_a_revoked_token_says_it_already_was() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["token", "create", "--root"]).status.success());
    let list = stdout(&run(dir.path(), &["token", "list"]));
    let id = list.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    let first = run(dir.path(), &["token", "revoke", &id]);
    assert!(first.status.success());
    assert_eq!(String::from_utf8_lossy(&first.stderr).trim(), format!("token {id} revoked"));
    let again = run(dir.path(), &["token", "revoke", &id]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let err = String::from_utf8_lossy(&again.stderr).trim().to_owned();
    let prefix = format!("token {id} was already revoked at ");
    let at = err.strip_prefix(&prefix).unwrap_or_else(|| panic!("{err}"));
    // tests/api.rs checks that the time is the first revocation's, to the millisecond.
    assert!(humantime::parse_rfc3339(at).is_ok(), "{err}");
    assert_eq!(stdout(&run(dir.path(), &["token", "list"])), list.replace(" active", " revoked"));
}

/// A service whose log reader went away (`serve 2>&1 | head`, a logger that died) still stops
/// on SIGTERM, and its tasks keep running: a log line it cannot write is dropped (the walkthrough
/// found `serve` ignoring SIGTERM in that state; only SIGKILL stopped it).
#[test]
fn serve_stops_on_sigterm_after_its_log_reader_went_away() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(dir.path());
    drop(serve.child.stderr.take());
    // Something to log, to a pipe with no reader.
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some("bad")).0, 401);
    let (status, _) = get(&serve.base, "/health", None);
    assert_eq!(status, 200);
    let pid = serve.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while serve.child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = serve.child.kill();
            panic!("serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `delivery.block_private_networks`, a proxy from the environment is not used: it would
/// reach names the check never sees (the review saw a proxy get a hook's internal name).
#[test]
fn block_private_networks_does_not_go_through_an_environment_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    proxy.set_nonblocking(true).unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let env = [
        ("SWITCHHOOK_DELIVERY_BLOCK_PRIVATE_NETWORKS", "true"),
        ("HTTP_PROXY", &proxy_url),
        ("http_proxy", &proxy_url),
    ];
    let serve = Serve::start_with(dir.path(), &env);
    let root = std::fs::read_to_string(dir.path().join("root.token")).unwrap();
    let hook = r#"{"event": "CHANNEL_ANSWER", "timeout": 1000,
        "action": {"type": "web", "method": "POST", "url": "http://metadata.internal.invalid/latest"}}"#;
    let (status, answer) = request(&serve.base, "POST", "/api/v2/hooks?domain=d.example.com", Some(root.trim()), hook);
    assert_eq!(status, 200, "{answer}");
    let event = r#"{"Event-Name": "CHANNEL_ANSWER", "variable_domain_name": "d.example.com", "Unique-ID": "u-1"}"#;
    let (status, answer) = request(&serve.base, "POST", "/api/v2/events", Some(root.trim()), event);
    assert_eq!((status, answer.contains(r#""deliveries":1"#)), (200, true), "{answer}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(proxy.accept().is_err(), "the delivery went through the proxy");
        std::thread::sleep(Duration::from_millis(50));
    }
    serve.terminate();
}

/// `token list | head -1`: a reader that goes away ends a command quietly, as SIGPIPE ends other
/// tools, with no panic or stack trace (before, `println!` panicked: "failed printing to stdout").
#[test]
fn a_closed_standard_output_ends_a_command_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["token", "create", "--root"]).status.success());
    for args in [&["token", "list"][..], &["token", "create", "--domain", "a.example.com", "--role", "admin"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = switchhook(dir.path(), args).env("RUST_BACKTRACE", "1").stdout(writer).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        if args[1] == "create" {
            // The token is stored and active, but its text went nowhere.
            assert!(err.contains("was issued but not written; revoke it: switchhook token revoke "), "{err}");
        }
    }
}

/// `--help` shows each option's variable, and clap prints its value too unless told not to: the
/// database URL's and the event sockets' passwords were printed by `serve --help` wherever the
/// variables were set (a container's environment, a systemd unit).
#[test]
fn help_does_not_print_the_passwords_set_in_variables() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--help"][..], &["serve", "--help"], &["token", "--help"], &["migrate", "--help"]] {
        let out = switchhook(dir.path(), args)
            .env("SWITCHHOOK_DATABASE_URL", "postgres://u:Pg5ecretPW@127.0.0.1/db")
            .env("SWITCHHOOK_ESL", "Es1SecretPW@127.0.0.1:8021")
            .output()
            .unwrap();
        let help = stdout(&out);
        assert!(help.contains("SWITCHHOOK_DATABASE_URL"), "{args:?}: the variable is still named: {help}");
        for secret in ["Pg5ecretPW", "Es1SecretPW"] {
            assert!(!help.contains(secret), "{args:?} prints {secret}: {help}");
        }
    }
}

/// A PostgreSQL that refuses connections (not running, wrong port) is named as such at start-up:
/// the pool retries a refused connection until its timeout and then says only `pool timed out
/// while waiting for an open connection`, which left the operator guessing.
#[test]
fn a_postgres_that_cannot_be_reached_is_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let url = format!("postgres://switchhook:Pg5ecretPW@127.0.0.1:{closed}/db");
    let out = run(dir.path(), &["serve", "--listen", "127.0.0.1:0", "--database-url", &url]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot open store postgres://switchhook:***@127.0.0.1:{closed}/db")), "{err}");
    assert!(err.contains("Connection refused"), "the cause is named: {err}");
    assert!(!err.contains("Pg5ecretPW"), "{err}");
}

/// A PostgreSQL that takes connections and never answers (a stuck proxy, a port that is not
/// PostgreSQL) stops start-up after the connect timeouts, not never.
#[test]
fn a_postgres_that_never_answers_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap(); // the kernel accepts; nobody answers
    let url = format!("postgres://switchhook@{}/db", silent.local_addr().unwrap());
    let mut child = switchhook(dir.path(), &["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("start-up still waits on a PostgreSQL that never answers");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("timed out"), "{err}");
}

/// A first start that cannot write `root.token` (a full disk, a read-only folder; here a folder
/// in its place) fails, and must not leave the root token it issued active in the store: the
/// next start wrote none because the store had one, and said nothing, so nobody had a root
/// token once the disk was fixed.
#[test]
fn a_root_token_that_could_not_be_written_is_written_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let root_path = dir.path().join("root.token");
    std::fs::create_dir(&root_path).unwrap();
    let out = run(dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write") && err.contains("root.token"), "{err}");
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial"))
        .collect();
    assert!(left.is_empty(), "no copy of the token is left behind: {left:?}");

    std::fs::remove_dir(&root_path).unwrap();
    let serve = Serve::start(dir.path());
    let root = std::fs::read_to_string(&root_path).expect("the next start writes root.token").trim().to_owned();
    assert_eq!(get(&serve.base, "/api/v2/hooks?domain=a.com", Some(&root)).0, 200);
    let list = stdout(&run(dir.path(), &["token", "list"]));
    let active = list.lines().filter(|l| l.contains(" root ") && l.ends_with("active")).count();
    assert_eq!(active, 1, "only the root token in the file is active: {list}");
    serve.terminate();
}

/// `root.token` signed with another secret than the one in use (SWITCHHOOK_TOKEN_SECRET set,
/// changed or unset since the first start) is `Invalid token` to every request, and start-up
/// writes no new one as the store has an active root token: the log now says so, and what to do.
#[test]
fn a_root_token_file_the_secret_in_use_refuses_is_named_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(dir.path(), &[("SWITCHHOOK_TOKEN_SECRET", "first-secret-0001")]);
    let (_, log) = serve.terminate();
    assert!(!log.contains("root.token does not"), "{log}");
    let serve = Serve::start_with(dir.path(), &[("SWITCHHOOK_TOKEN_SECRET", "second-secret-0002")]);
    let root = std::fs::read_to_string(dir.path().join("root.token")).unwrap().trim().to_owned();
    assert_eq!(get(&serve.base, "/api/v2/hooks?domain=a.com", Some(&root)).0, 401);
    let (_, log) = serve.terminate();
    let warning = log.lines().find(|l| l.contains("WARN") && l.contains("root.token")).unwrap_or_default();
    assert!(warning.contains("was not signed with the token secret in use"), "{log}");
    assert!(warning.contains("token create --root"), "{warning}");
    assert!(!log.contains("second-secret-0002") && !log.contains(&root), "{log}");
}

/// A token signed elsewhere with the same secret (the Webitel engine's) has no record here, so
/// its id alone cannot be revoked (a mistyped id must not pass as revoked). Given the token
/// itself, `token revoke` checks its signature and records its id as revoked: the API then
/// refuses it. A token not signed with this secret is refused by name; and a token without an
/// id, which could never be revoked, is not accepted at all.
#[test]
fn a_token_signed_elsewhere_is_revoked_by_giving_the_token() {
    use switchhook::auth::{Claims, Role, TokenKeys, now_ms};
    let dir = tempfile::tempdir().unwrap();
    let secret = [("SWITCHHOOK_TOKEN_SECRET", "the-engines-secret")];
    let revoke = |token: &str| switchhook(dir.path(), &["token", "revoke", token]).envs(secret).output().unwrap();
    let keys = TokenKeys::new(b"the-engines-secret").unwrap();
    let id = "e26569d5-1c2a-4b5e-9f3d-3a1b2c4d5e6f";
    let mut claims = Claims::new(id.into(), now_ms() + 3_600_000, Role::Admin, Some("demo.example.com".into()));
    claims.r = None;
    let engines = keys.sign(&claims);
    let serve = Serve::start_with(dir.path(), &secret);
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&engines)).0, 200);

    let by_id = revoke(id);
    assert!(!by_id.status.success());
    assert_eq!(String::from_utf8_lossy(&by_id.stderr).trim(), format!("Error: no token with id {id}"));
    let by_token = revoke(&engines);
    assert!(by_token.status.success(), "{}", String::from_utf8_lossy(&by_token.stderr));
    assert_eq!(String::from_utf8_lossy(&by_token.stderr).trim(), format!("token {id} revoked"));
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&engines)).0, 401);
    let again = revoke(&engines);
    assert!(String::from_utf8_lossy(&again.stderr).starts_with(&format!("token {id} was already revoked at ")));
    // `-` reads it from standard input, out of `ps` and the shell's history.
    claims.id = "f1a2b3c4-0000-4000-8000-000000000001".into();
    let piped = keys.sign(&claims);
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&piped)).0, 200);
    let mut child = switchhook(dir.path(), &["token", "revoke", "-"])
        .envs(secret)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{piped}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&piped)).0, 401);

    let foreign = TokenKeys::new(b"another-secret").unwrap().sign(&claims);
    let refused = revoke(&foreign);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not signed with this service's secret"), "{said}");

    claims.id = String::new();
    assert_eq!(get(&serve.base, "/api/v2/hooks", Some(&keys.sign(&claims))).0, 401);
}
