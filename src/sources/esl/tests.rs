use super::*;

#[test]
fn servers_parse_with_and_without_password() {
    assert_eq!(Server::parse("secret@fs1:8021"), Ok(Server { addr: "fs1:8021".into(), password: "secret".into() }));
    assert_eq!(Server::parse("10.0.0.1:8021").unwrap().password, "ClueCon");
    assert_eq!(Server::parse("p@ss@fs:1").unwrap().password, "p@ss");
    assert!(Server::parse("fs1").is_err());
    assert!(Server::parse("pw@:8021").is_err());
    assert!(Server::parse("pw@fs:port").is_err());
}

/// Reads of `sizes` events each, numbered 1, 2, … by `Event-Sequence`.
fn reads(sizes: &[usize]) -> Vec<Vec<Incoming>> {
    let mut seq = 0;
    sizes
        .iter()
        .map(|&n| {
            (0..n)
                .map(|_| {
                    seq += 1;
                    Incoming::from_text(format!("{{\"Event-Name\":\"X\",\"Event-Sequence\":\"{seq}\"}}")).unwrap()
                })
                .collect()
        })
        .collect()
}

fn sequences(events: &[Incoming]) -> Vec<usize> {
    events.iter().map(|e| e.headers().text("Event-Sequence").unwrap().parse().unwrap()).collect()
}

#[tokio::test]
async fn a_commit_takes_every_read_queued_in_order_up_to_a_batch() {
    let (tx, mut inbox) = mpsc::channel(READS_QUEUED);
    // Reads of 7 events, as a 64 KB read of 8.7 KB events gives, queued behind the first.
    for read in reads(&[7; 20]) {
        tx.send(read).await.unwrap();
    }
    let first = inbox.recv().await.unwrap();
    assert_eq!(sequences(&group(first, &mut inbox)), (1..=140).collect::<Vec<_>>());
    assert!(inbox.try_recv().is_err(), "nothing is left behind");

    // A group stops at BATCH events: the next read waits for the next commit.
    for read in reads(&[600, 600, 5]) {
        tx.send(read).await.unwrap();
    }
    let first = inbox.recv().await.unwrap();
    assert_eq!(sequences(&group(first, &mut inbox)), (1..=1200).collect::<Vec<_>>());
    let next = inbox.recv().await.unwrap();
    assert_eq!(sequences(&group(next, &mut inbox)), (1201..=1205).collect::<Vec<_>>());

    // Nothing queued: the read is committed alone, at once.
    let lone = reads(&[3]).pop().unwrap();
    assert_eq!(group(lone, &mut inbox).len(), 3);
}

/// A router whose one hook matches `event(n)`, on an SQLite store in `dir`.
async fn router_on(dir: &std::path::Path) -> (Router, String) {
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let store = crate::store::open(&url).await.unwrap();
    let body = serde_json::json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": "http://127.0.0.1:9/"}});
    let doc = crate::hook::HookDoc::from_body(&body, "d.com", crate::hook::Limits { max_retries: 0 }).unwrap();
    let (index, broken) = crate::router::HookIndex::new(vec![crate::store::StoredHook { id: "a".repeat(24), doc }]);
    assert!(broken.is_empty());
    let (deliveries, _) = mpsc::channel(1);
    let hot = crate::router::HotPath { deliveries, owner: "n".into(), lease: Duration::from_secs(30) };
    (Router::new(Arc::new(index), store, Default::default(), hot), url)
}

fn event(n: usize) -> Incoming {
    let text = format!(
        r#"{{"Event-Name":"CHANNEL_ANSWER","variable_domain_name":"d.com","Core-UUID":"c","Event-Sequence":"{n}"}}"#
    );
    Incoming::from_text(text).unwrap()
}

async fn sql(url: &str, statement: &'static str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    sqlx::query(statement).execute(&mut conn).await.unwrap();
}

/// Commits `events` in the background with `grace`, on a router in `dir` whose store
/// refuses them until `deliveries_away` is renamed back; returns the task and the store URL.
async fn refused_commit(
    dir: &std::path::Path,
    events: Vec<Incoming>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> (tokio::task::JoinHandle<Committed>, String) {
    let (router, url) = router_on(dir).await;
    sql(&url, "ALTER TABLE deliveries RENAME TO deliveries_away").await;
    let give_up = GiveUp::new(shutdown.clone(), grace);
    (tokio::spawn(async move { commit(&router, &events, &give_up).await }), url)
}

#[tokio::test]
async fn a_commit_retries_until_the_store_takes_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (committing, url) = refused_commit(dir.path(), vec![event(1), event(2)], &shutdown, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!committing.is_finished(), "events read are never given up before shutdown");
    sql(&url, "ALTER TABLE deliveries_away RENAME TO deliveries").await;
    let done = tokio::time::timeout(Duration::from_secs(5), committing).await;
    assert_eq!(done.expect("commits once the store is back").unwrap(), Committed::Yes);
    let count: i64 = {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&mut conn).await.unwrap()
    };
    assert_eq!(count, 2);
}

#[tokio::test]
async fn at_shutdown_a_commit_gives_up_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let grace = Duration::from_secs(2);
    let (committing, _) = refused_commit(dir.path(), vec![event(1)], &shutdown, grace).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    shutdown.cancel();
    let cancelled = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!committing.is_finished(), "still trying within the grace period");
    let done = tokio::time::timeout(Duration::from_secs(5), committing).await;
    assert_eq!(done.expect("gives up after the grace period").unwrap(), Committed::Lost);
    assert!(cancelled.elapsed() >= grace);
}

/// A store that is slow but keeps committing drains its queue at shutdown: each commit
/// that goes through gives the next one a grace period of its own, however long the whole
/// queue takes.
#[tokio::test]
async fn at_shutdown_a_slow_store_that_keeps_committing_gets_every_queued_group() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let grace = Duration::from_millis(1500);
    let (router, url) = router_on(dir.path()).await;
    let give_up = GiveUp::new(shutdown.clone(), grace);
    shutdown.cancel();
    let cancelled = tokio::time::Instant::now();
    // Each commit waits 900 ms for a write lock another connection holds: three of them
    // take longer than the grace, and each comes well within a grace of the one before.
    for n in 1..=3 {
        let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut locker).await.unwrap();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
        });
        assert_eq!(commit(&router, &[event(n)], &give_up).await, Committed::Yes, "group {n}");
    }
    assert!(cancelled.elapsed() > grace, "the groups took {:?}", cancelled.elapsed());
}

/// The grace runs from the last commit that went through: the events queued behind a
/// commit that was given up are given up at once, not after a grace period of their own
/// each.
#[tokio::test]
async fn commits_after_the_grace_ran_out_give_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let grace = Duration::from_millis(700);
    let (router, url) = router_on(dir.path()).await;
    sql(&url, "ALTER TABLE deliveries RENAME TO deliveries_away").await;
    let give_up = GiveUp::new(shutdown.clone(), grace);
    shutdown.cancel();
    let cancelled = tokio::time::Instant::now();
    assert_eq!(commit(&router, &[event(1)], &give_up).await, Committed::Lost);
    assert!(cancelled.elapsed() >= grace);
    let next = tokio::time::Instant::now();
    assert_eq!(commit(&router, &[event(2)], &give_up).await, Committed::Lost);
    assert!(next.elapsed() < grace / 2, "the second commit waited {:?}", next.elapsed());
}

/// `n` CHANNEL_ANSWER frames as FreeSWITCH writes them, each the same length.
fn answer_frames(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let body = format!(r#"{{"Event-Name":"CHANNEL_ANSWER","Core-UUID":"c","Event-Sequence":"{:04}"}}"#, i + 1);
        out.extend(format!("Content-Length: {}\nContent-Type: text/event-json\n\n{body}", body.len()).bytes());
    }
    out
}

fn source_on(router: Router) -> EslSource {
    let server = Server::parse("fs:8021").unwrap();
    EslSource { server, router: Arc::new(router), health: Health::default(), shutdown_grace: Duration::from_secs(1) }
}

/// Once shutdown has come, the reader reads nothing more, however much FreeSWITCH has sent:
/// what it read then could only be given up. It says `exit` instead. (Unless told
/// otherwise, `select!` picks at random among the ready branches: 20 tries.)
#[tokio::test]
async fn after_shutdown_nothing_more_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_on(router_on(dir.path()).await.0);
    let shutdown = CancellationToken::new();
    shutdown.cancel();
    for _ in 0..20 {
        let (client, mut switch) = tokio::io::duplex(64 * 1024);
        switch.write_all(&answer_frames(10)).await.unwrap();
        let (mut reader, mut writer) = tokio::io::split(client);
        let mut hooks_changed = source.router.index.subscribe();
        let (batches, mut inbox) = mpsc::channel(READS_QUEUED);
        let mut conn = Conn::new(64 * 1024);
        let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
        read.await.unwrap();
        assert!(inbox.try_recv().is_err(), "read after shutdown");
        let mut said = [0; 6];
        switch.read_exact(&mut said).await.unwrap();
        assert_eq!(&said, b"exit\n\n");
    }
}

/// A committer that stopped (it panicked) ends the session with an error, so that it starts
/// again with a new one, rather than as a shutdown that would end the source for good.
#[tokio::test]
async fn a_committer_that_stopped_ends_the_session_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_on(router_on(dir.path()).await.0);
    let (client, mut switch) = tokio::io::duplex(64 * 1024);
    switch.write_all(&answer_frames(3)).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(client);
    let mut hooks_changed = source.router.index.subscribe();
    let (batches, inbox) = mpsc::channel(READS_QUEUED);
    drop(inbox);
    let mut conn = Conn::new(64 * 1024);
    let shutdown = CancellationToken::new();
    let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
    let err = tokio::time::timeout(Duration::from_secs(5), read).await.expect("the session ends").unwrap_err();
    assert!(matches!(err, SessionError::CommitterStopped(n) if n > 0), "{err}");
}

/// A reader waiting for the committer to take its read (a slow store, a full queue) when
/// shutdown comes hands that read over, then reads no more. (20 tries, as above.)
#[tokio::test]
async fn at_shutdown_a_reader_waiting_for_the_committer_hands_its_read_over_and_reads_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_on(router_on(dir.path()).await.0);
    let frame = answer_frames(1).len();
    for _ in 0..20 {
        let shutdown = CancellationToken::new();
        let (client, mut switch) = tokio::io::duplex(64 * 1024);
        switch.write_all(&answer_frames(10)).await.unwrap();
        let (mut reader, mut writer) = tokio::io::split(client);
        let mut hooks_changed = source.router.index.subscribe();
        // The queue is full: the first read waits for the committer.
        let (batches, mut inbox) = mpsc::channel(1);
        batches.send(Vec::new()).await.unwrap();
        // One frame a read.
        let mut conn = Conn::new(frame);
        let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
        let committer = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            shutdown.cancel();
            assert_eq!(inbox.recv().await.map(|r| r.len()), Some(0));
        };
        let (read, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(2), read), committer);
        read.expect("the reader stopped at shutdown").unwrap();
        assert_eq!(sequences(&inbox.try_recv().expect("the read handed over")), [1]);
        assert!(inbox.try_recv().is_err(), "read after shutdown");
    }
}

#[test]
fn event_lists_put_custom_subclasses_last() {
    let events: Vec<String> =
        ["CUSTOM->callcenter::info", "CHANNEL_ANSWER", "CUSTOM->engine::dialer_member_end", "CHANNEL_CREATE"]
            .map(String::from)
            .into();
    let refs: Vec<&String> = events.iter().collect();
    assert_eq!(
        event_list(&refs).as_deref(),
        Some("CHANNEL_ANSWER CHANNEL_CREATE CUSTOM callcenter::info engine::dialer_member_end")
    );
    assert_eq!(event_list(&[]), None);
}

#[test]
fn a_hook_on_bare_custom_does_not_turn_later_names_into_subclasses() {
    let events: Vec<String> =
        ["DTMF", "CUSTOM", "CUSTOM->a::b", "HEARTBEAT", "CHANNEL_ANSWER"].map(String::from).into();
    let refs: Vec<&String> = events.iter().collect();
    assert_eq!(event_list(&refs).as_deref(), Some("CHANNEL_ANSWER DTMF HEARTBEAT CUSTOM a::b"));
    let bare = [String::from("CUSTOM"), String::from("DTMF"), String::from("CUSTOM->mod_event_socket::reload")];
    assert_eq!(event_list(&bare.iter().collect::<Vec<_>>()).as_deref(), Some("DTMF CUSTOM"));
}

#[test]
fn hook_events_that_need_the_same_subscription_share_one_key() {
    let wanted: BTreeSet<String> = ["CHANNEL_ANSWER"].map(String::from).into();
    let before: BTreeSet<String> =
        ["CHANNEL_ANSWER", "CHANNEL_ANSWER->x", "CUSTOM", "CUSTOM->a::b"].map(String::from).into();
    let (wanted, before) = (subscription_keys(&wanted), subscription_keys(&before));
    let removed: Vec<&String> = before.difference(&wanted).collect();
    assert_eq!(event_list(&removed).as_deref(), Some("CUSTOM a::b"), "CHANNEL_ANSWER is still needed");
}

/// The bytes `switch` has been sent so far, without waiting for more.
async fn sent_so_far(switch: &mut tokio::io::DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(10), switch.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// A connection read with short idle and probe times, so that tests need not wait a minute.
fn quick_conn() -> Conn {
    let mut conn = Conn::new(64 * 1024);
    conn.idle = Duration::from_millis(600);
    conn.probe_wait = Duration::from_millis(300);
    conn
}

/// A connection that goes silent (FreeSWITCH's host died, a NAT or load balancer dropped the
/// idle flow: no FIN, no RST ever comes) is probed with a command every FreeSWITCH answers,
/// and dropped when even that gets no answer, so the source reconnects instead of waiting
/// for events that will never come.
#[tokio::test]
async fn a_connection_that_goes_silent_is_probed_then_dropped() {
    assert_eq!((Conn::new(1).idle, Conn::new(1).probe_wait), (IDLE, PROBE_WAIT));
    let dir = tempfile::tempdir().unwrap();
    let source = source_on(router_on(dir.path()).await.0);
    // The reader and the switch meet in memory: the clock can jump, and a loaded machine
    // cannot stretch the margins below.
    tokio::time::pause();
    let (client, mut switch) = tokio::io::duplex(64 * 1024);
    let (mut reader, mut writer) = tokio::io::split(client);
    let mut hooks_changed = source.router.index.subscribe();
    let (batches, _inbox) = mpsc::channel(READS_QUEUED);
    let mut conn = quick_conn();
    let (idle, wait) = (conn.idle, conn.probe_wait);
    let shutdown = CancellationToken::new();
    let started = tokio::time::Instant::now();
    let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
    let switch_side = async {
        tokio::time::sleep(idle - Duration::from_millis(200)).await;
        assert_eq!(sent_so_far(&mut switch).await, b"", "probed before the connection was idle");
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(sent_so_far(&mut switch).await, b"api status\n\n");
    };
    let (read, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(5), read), switch_side);
    let err = read.expect("a silent connection ends the session").unwrap_err();
    assert!(matches!(err, SessionError::Silent(_)), "{err}");
    let took = started.elapsed();
    assert!(took >= idle + wait && took < idle + wait + Duration::from_millis(500), "{took:?}");
}

/// FreeSWITCH's answer to the probe (`api/response`), or any other bytes, keep the connection:
/// a quiet switch is probed once per idle period and never dropped.
#[tokio::test]
async fn a_quiet_switch_that_answers_the_probe_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_on(router_on(dir.path()).await.0);
    // The reader and the switch meet in memory: the clock can jump, and a loaded machine
    // cannot stretch the margins below.
    tokio::time::pause();
    let (client, mut switch) = tokio::io::duplex(64 * 1024);
    let (mut reader, mut writer) = tokio::io::split(client);
    let mut hooks_changed = source.router.index.subscribe();
    let (batches, _inbox) = mpsc::channel(READS_QUEUED);
    let mut conn = quick_conn();
    let wait = conn.probe_wait;
    let shutdown = CancellationToken::new();
    let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
    let switch_side = async {
        for _ in 0..3 {
            let mut probe = [0u8; 12];
            switch.read_exact(&mut probe).await.unwrap();
            assert_eq!(&probe, b"api status\n\n");
            tokio::time::sleep(wait / 2).await;
            let body =
                "UP 0 years, 0 days, 2 hours, 13 minutes\nFreeSWITCH (Version 1.10.12 -release 64bit) is ready\n";
            let answer = format!("Content-Type: api/response\nContent-Length: {}\n\n{body}", body.len());
            switch.write_all(answer.as_bytes()).await.unwrap();
        }
        shutdown.cancel();
    };
    let both = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(read, switch_side) });
    let (read, ()) = both.await.expect("probed three times, then shut down");
    read.expect("the connection was kept");
}

/// A switch that sends events more often than the idle period is never probed.
#[tokio::test]
async fn a_busy_switch_is_not_probed() {
    let dir = tempfile::tempdir().unwrap();
    let source = source_on(router_on(dir.path()).await.0);
    tokio::time::pause();
    let (client, mut switch) = tokio::io::duplex(64 * 1024);
    let (mut reader, mut writer) = tokio::io::split(client);
    let mut hooks_changed = source.router.index.subscribe();
    let (batches, mut inbox) = mpsc::channel(READS_QUEUED);
    let mut conn = quick_conn();
    let idle = conn.idle;
    let shutdown = CancellationToken::new();
    let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
    let switch_side = async {
        for _ in 0..6 {
            tokio::time::sleep(idle / 2).await;
            switch.write_all(&answer_frames(1)).await.unwrap();
            assert!(inbox.recv().await.is_some());
        }
        assert_eq!(sent_so_far(&mut switch).await, b"", "probed while events came");
        shutdown.cancel();
    };
    let both = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(read, switch_side) });
    let (read, ()) = both.await.expect("the session ends at shutdown");
    read.unwrap();
}
