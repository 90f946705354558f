//! The ESL source end to end against `simulate`'s event socket: subscriptions that follow the
//! hooks, reconnection, wrong passwords and garbage on the socket.

mod common;

use common::web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::events::channel;
use common::receiver::Receiver;
use common::{Backend, TestServer};
use serde_json::{Value, json};
use switchhook::simulate::run::{Options, Summary, run};
use switchhook::sources::esl::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);
const D1: &str = "domain-1.example.com";

struct Simulator {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<Summary>>,
}

impl Simulator {
    async fn start(listen: SocketAddr, rate: f64, calls: Option<u64>, seed: u64) -> Simulator {
        let options = Options {
            listen,
            password: "ClueCon".into(),
            amqp: None,
            exchange: String::new(),
            format_fields: String::new(),
            rate,
            domains: 3,
            calls,
            seed,
        };
        let stop = CancellationToken::new();
        let (ready, addr) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run(options, stop.clone(), Some(ready)));
        Simulator { addr: addr.await.expect("simulator listening"), stop, task }
    }

    async fn finish(self) -> Summary {
        let summary = self.task.await.unwrap().unwrap();
        self.stop.cancel();
        summary
    }

    async fn kill(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn uid(r: &common::receiver::Received) -> String {
    r.json()["data"]["Unique-ID"].as_str().unwrap_or_default().to_owned()
}

async fn health(s: &TestServer, key: &str) -> Value {
    s.call("GET", "/health", None, None).await.1["data"]["sources"][key].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_hook_gets_exactly_that_domains_answered_calls() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), 100.0, Some(30), 42).await;
    let server = Server { addr: sim.addr.to_string(), password: "ClueCon".into() };
    let s = TestServer::start_configured(Backend::Sqlite, |c| c.esl = vec![server]).await;
    let r = Receiver::start().await;
    // The simulator starts sending once a client subscribes, which this hook causes.
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    let summary = sim.finish().await;
    let want = summary.events[&("CHANNEL_ANSWER".to_owned(), D1.to_owned())];
    assert!(want >= 5, "30 calls over 3 domains: {want} for {D1}");
    let got = r.wait_for("/answer", want as usize, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_now = r.at("/answer");
    assert_eq!(got_now.len(), got.len(), "no more than that domain's answers");
    for req in &got_now {
        let data = req.json()["data"].clone();
        assert_eq!(
            (data["Event-Name"].as_str(), data["variable_domain_name"].as_str()),
            (Some("CHANNEL_ANSWER"), Some(D1))
        );
    }
    let mut ids: Vec<String> = got_now.iter().map(uid).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_hooks_subscribe_without_reconnecting_and_restarts_resume() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), 40.0, None, 7).await;
    let addr = sim.addr;
    let server = Server { addr: addr.to_string(), password: "ClueCon".into() };
    let key = format!("esl {addr}");
    let s = TestServer::start_configured(Backend::Sqlite, |c| c.esl = vec![server]).await;
    let r = Receiver::start().await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    r.wait_for("/answer", 2, WAIT).await;
    let since = health(&s, &key).await["since"].clone();

    // A hook on an event FreeSWITCH does not know (only HTTP ingest can bring it) is left out
    // of the subscription, which FreeSWITCH would otherwise refuse.
    s.create_hook(D1, json!({"event": "MY_OWN_EVENT", "action": web(&r.url("/own"))})).await;
    // A second hook on a custom event: a new subscription on the same connection.
    s.create_hook(D1, json!({"event": "CUSTOM->callcenter::info", "action": web(&r.url("/cc"))})).await;
    let cc = r.wait_for("/cc", 1, WAIT).await;
    assert_eq!(cc[0].json()["data"]["Event-Subclass"], "callcenter::info");
    let h = health(&s, &key).await;
    assert_eq!((&h["connected"], &h["since"]), (&json!(true), &since), "same connection: {h}");
    let gauge = format!("switchhook_source_connected{{source=\"{key}\"}}");
    let connected = async || {
        let metrics = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
        metrics.lines().find_map(|l| l.strip_prefix(&gauge)?.trim().parse::<f64>().ok())
    };
    assert_eq!(connected().await, Some(1.0));

    // Kill the simulator: the source notices, and reconnects when a new one comes up.
    sim.kill().await;
    let deadline = std::time::Instant::now() + WAIT;
    while health(&s, &key).await["connected"] == true {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(connected().await, Some(0.0), "the gauge follows /health");
    let before = r.at("/answer").len();
    let sim = Simulator::start(addr, 40.0, None, 8).await;
    let got = r.wait_for("/answer", before + 2, WAIT).await;
    assert!(health(&s, &key).await["connected"] == true);
    let mut ids: Vec<String> = got.iter().map(uid).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "no answered call twice");
    sim.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_in_health() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), 10.0, None, 1).await;
    let server = Server { addr: sim.addr.to_string(), password: "wrong".into() };
    let key = format!("esl {}", sim.addr);
    let s = TestServer::start_configured(Backend::Sqlite, |c| c.esl = vec![server]).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let h = health(&s, &key).await;
        if h["error"].is_string() {
            assert_eq!(h["connected"], false);
            assert_eq!(h["error"], "authentication failed: FreeSWITCH refused the password");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.kill().await;
}

/// A "FreeSWITCH" that runs `session` on every connection it gets, and counts them.
async fn counting_switch<F, Fut>(session: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(session(sock));
        }
    });
    (addr, connections)
}

/// A "FreeSWITCH" that sends `reply` after the auth exchange, then keeps the socket open.
/// Counts the connections it gets.
async fn bad_switch(reply: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    counting_switch(move |mut sock| {
        let reply = reply.clone();
        async move {
            let _ = sock.write_all(b"Content-Type: auth/request\n\n").await;
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n").await;
            let _ = sock.write_all(&reply).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
    .await
}

/// FreeSWITCH's ACL refusal (`text/rude-rejection` instead of the greeting, then a
/// disconnect notice) shows in health and is retried ever more slowly, not every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_rejection_shows_in_health_and_backs_off() {
    let (h, connections, started, _service) = health_error_after(
        b"Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n\
          Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
          Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n",
    )
    .await;
    assert_eq!(h["error"], "FreeSWITCH refused the connection (its event socket ACL does not allow this address)");
    // Tries at 0, 1 and 3 s (then 7 s); resetting the backoff each time would make five.
    tokio::time::sleep(Duration::from_millis(4500).saturating_sub(started.elapsed())).await;
    let tries = connections.load(Ordering::SeqCst);
    assert!((2..=3).contains(&tries), "{tries} connections in 4.5 s");
}

/// A switch that answers every connection with `frames` and closes it; returns the first
/// `/health` entry of that source with an error, the connections counter, when it started, and
/// the service, which keeps reconnecting while it is held.
async fn health_error_after(frames: &'static [u8]) -> (Value, Arc<AtomicUsize>, std::time::Instant, TestServer) {
    let (addr, connections) = counting_switch(move |mut sock| async move {
        let _ = sock.write_all(frames).await;
    })
    .await;
    let server = Server { addr: addr.to_string(), password: "ClueCon".into() };
    let s = TestServer::start_configured(Backend::Sqlite, |c| c.esl = vec![server]).await;
    let started = std::time::Instant::now();
    loop {
        let h = health(&s, &format!("esl {addr}")).await;
        if h["error"].is_string() && h["error"] != "connecting" {
            return (h, connections, started, s);
        }
        assert!(started.elapsed() < WAIT, "{h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// mod_event_socket answers a connection with a disconnect notice instead of the greeting while
/// it shuts down. `/health` says so, as it does for a notice later on, rather than showing a
/// debug dump of the frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_notice_instead_of_the_greeting_shows_in_health_as_a_disconnect() {
    let (h, ..) = health_error_after(
        b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
          Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n",
    )
    .await;
    assert_eq!(
        (&h["connected"], &h["error"]),
        (&json!(false), &json!("FreeSWITCH disconnected: Disconnected, goodbye."))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_absurd_frame_lengths_drop_the_connection_not_the_process() {
    let absurd = format!("Content-Length: {}\nContent-Type: text/event-json\n\n", 2u64 << 30).into_bytes();
    let mut garbage = b"this is not\x00 an event socket\n\n".to_vec();
    garbage.extend((0..5000u32).map(|i| (i * 7919 % 251) as u8));
    for (reply, problem) in [(garbage, "bad data from FreeSWITCH"), (absurd, "bad data from FreeSWITCH")] {
        let (addr, fake) = bad_switch(reply).await;
        let server = Server { addr: addr.to_string(), password: "ClueCon".into() };
        let s = TestServer::start_configured(Backend::Sqlite, |c| c.esl = vec![server]).await;
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let h = health(&s, &format!("esl {addr}")).await;
            if h["error"].as_str().is_some_and(|e| e.starts_with(problem)) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{h}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The service is alive and the source keeps reconnecting.
        let (status, _) = s.call("GET", "/health", None, None).await;
        assert_eq!(status, 200);
        while fake.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "never reconnected after the bad frame");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A switch that takes the connection and never says a word holds the first connect for the
/// setup timeout (10 s). The source is in `/health` meanwhile, down and `connecting`: before,
/// it was missing, so an alert on `connected == false` had nothing to see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_still_connecting_is_in_health_as_down() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(sock);
    });
    let s = TestServer::start(Backend::Sqlite).await;
    let (mut config, dir, pg) = s.stop().await;
    config.esl = vec![Server { addr: addr.to_string(), password: "ClueCon".into() }];
    let s = TestServer::start_with(config, dir, pg).await;
    // Well inside the 10 s the connect is held for.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut state = health(&s, &format!("esl {addr}")).await;
    while state.is_null() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = health(&s, &format!("esl {addr}")).await;
    }
    assert_eq!((&state["connected"], &state["error"]), (&json!(false), &json!("connecting")), "{state}");
    held.abort();
}

/// An event over the 8 MiB frame limit (a BACKGROUND_JOB with a huge output) is skipped and
/// logged, and the connection goes on: dropping it would lose every event FreeSWITCH had
/// queued for it. The event after it is delivered, on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_frame_limit_is_skipped_and_the_connection_goes_on() {
    let log = common::log::warnings();
    let r = Receiver::start().await;
    let s = TestServer::start(Backend::Sqlite).await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/esl"))})).await;
    let huge = format!(r#"{{"Event-Name":"BACKGROUND_JOB","_body":"{}"}}"#, "x".repeat(9 << 20));
    let after = channel("CHANNEL_ANSWER", D1, "after-the-huge-one").to_string();
    let mut reply = Vec::new();
    for event in [&huge, &after] {
        reply.extend(format!("Content-Length: {}\nContent-Type: text/event-json\n\n{event}", event.len()).bytes());
    }
    let (addr, connections) = bad_switch(reply).await;
    let (mut config, dir, pg) = s.stop().await;
    config.esl = vec![Server { addr: addr.to_string(), password: "ClueCon".into() }];
    let s = TestServer::start_with(config, dir, pg).await;

    let got = r.wait_for("/esl", 1, WAIT).await;
    assert_eq!(uid(&got[0]), "after-the-huge-one");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let skipped = log.lines_with(&["skipped a frame over the 8 MiB limit"]);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].contains("text/event-json"), "{skipped:?}");
    drop(s);
}

/// Events that came in the same read as a bad frame are committed and delivered before the
/// connection is dropped: ESL cannot send them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_before_a_bad_frame_are_delivered() {
    let r = Receiver::start().await;
    let s = TestServer::start(Backend::Sqlite).await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/esl"))})).await;
    let mut reply = Vec::new();
    for n in 0..3 {
        let event = channel("CHANNEL_ANSWER", D1, &format!("before-garbage-{n}")).to_string();
        reply.extend(format!("Content-Length: {}\nContent-Type: text/event-json\n\n{event}", event.len()).bytes());
    }
    reply.extend(b"this is not\x00 an event socket\n\n");
    let (addr, _) = bad_switch(reply).await;
    let (mut config, dir, pg) = s.stop().await;
    config.esl = vec![Server { addr: addr.to_string(), password: "ClueCon".into() }];
    let s = TestServer::start_with(config, dir, pg).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut got: Vec<String> = r.at("/esl").iter().map(uid).collect();
        got.sort();
        got.dedup();
        if got.len() == 3 {
            assert_eq!(got, ["before-garbage-0", "before-garbage-1", "before-garbage-2"]);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered {got:?}: {}",
            health(&s, &format!("esl {addr}")).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A CHANNEL_ANSWER as FreeSWITCH 1.10 writes it after `event json CHANNEL_ANSWER` (headers cut
/// to the ones that matter here; the values are a real call's).
const ANSWER_JSON: &str = r#"{"Event-Name":"CHANNEL_ANSWER","Core-UUID":"8e5ab2b4-1f1c-4f2c-9d0a-5a3e6c2a9f10","FreeSWITCH-Hostname":"fs01.domain-1.example.com","FreeSWITCH-Switchname":"fs01","FreeSWITCH-IPv4":"10.0.0.15","FreeSWITCH-IPv6":"::1","Event-Date-Local":"2024-05-14 10:21:07","Event-Date-GMT":"Tue, 14 May 2024 07:21:07 GMT","Event-Date-Timestamp":"1715671267204118","Event-Calling-File":"switch_channel.c","Event-Calling-Function":"switch_channel_perform_mark_answered","Event-Calling-Line-Number":"3947","Event-Sequence":"58213","Channel-State":"CS_EXECUTE","Channel-Call-State":"ACTIVE","Channel-State-Number":"4","Channel-Name":"sofia/internal/1000@domain-1.example.com","Unique-ID":"disconnect-1","Call-Direction":"inbound","Presence-Call-Direction":"inbound","Channel-Presence-ID":"1000@domain-1.example.com","Answer-State":"answered","Caller-Username":"1000","Caller-Caller-ID-Name":"Jos\u00e9","Caller-Caller-ID-Number":"1000","Caller-Destination-Number":"2000","variable_domain_name":"domain-1.example.com","variable_sip_from_user":"1000"}"#;

/// mod_event_socket ends an inbound listener with `text/disconnect-notice` (the ESL library
/// takes a notice with a body as the end of the connection). A socket left open after it (a
/// proxy, a half-closed connection) must not keep the source waiting for events that will
/// never come: it reconnects, and the events before the notice are delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_notice_ends_the_session_even_if_the_socket_stays_open() {
    let (addr, connections) = counting_switch(|mut sock| async move {
        let mut buf = [0u8; 1024];
        let _ = sock.write_all(b"Content-Type: auth/request\n\n").await;
        let _ = sock.read(&mut buf).await;
        let _ = sock.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n").await;
        let _ = sock.read(&mut buf).await;
        let mut out = b"Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n".to_vec();
        out.extend(
            format!("Content-Length: {}\nContent-Type: text/event-json\n\n{ANSWER_JSON}", ANSWER_JSON.len()).bytes(),
        );
        out.extend(
            b"Content-Type: text/disconnect-notice\nContent-Length: 67\n\n\
              Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n",
        );
        let _ = sock.write_all(&out).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let server = Server { addr: addr.to_string(), password: "ClueCon".into() };
    let s = TestServer::start_configured(Backend::Sqlite, |c| c.esl = vec![server]).await;
    let r = Receiver::start().await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    let got = r.wait_for("/answer", 1, WAIT).await;
    assert_eq!(got[0].json()["data"]["Caller-Caller-ID-Name"], "José");
    let deadline = std::time::Instant::now() + WAIT;
    while connections.load(Ordering::SeqCst) < 2 {
        let h = health(&s, &format!("esl {addr}")).await;
        assert!(std::time::Instant::now() < deadline, "still on the first connection: {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The second connection sends the same event again: it is the same event (Core-UUID and
    // Event-Sequence), so it is not delivered twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.at("/answer").len(), 1);
}

/// `switchhook_events_lost_total{source="esl"}`, read in this process: the server may have stopped.
fn esl_events_lost() -> f64 {
    let metrics = switchhook::telemetry::render();
    let line = metrics.lines().find_map(|l| l.strip_prefix("switchhook_events_lost_total{source=\"esl\"} "));
    line.map_or(0.0, |n| n.parse().unwrap())
}

/// Events each test below reads and cannot commit.
const LOST: usize = 5;

/// The ESL source's shutdown grace in the tests below.
const GRACE: Duration = Duration::from_secs(1);

/// The tests below one at a time, so that each sees the process-wide counter move by its own
/// events alone (no other test of this binary stops with events uncommitted).
static LOSING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A "FreeSWITCH" that sends LOST CHANNEL_ANSWER events of D1 once `send` is cancelled, then
/// keeps the connection open.
async fn switch_sending_on(send: &CancellationToken) -> Server {
    let mut events = Vec::new();
    for n in 0..LOST {
        let event = channel("CHANNEL_ANSWER", D1, &format!("lost-at-shutdown-{n}")).to_string();
        events.extend(format!("Content-Length: {}\nContent-Type: text/event-json\n\n{event}", event.len()).bytes());
    }
    let send = send.clone();
    let (addr, _) = counting_switch(move |mut sock| {
        let (send, events) = (send.clone(), events.clone());
        async move {
            let mut buf = [0u8; 1024];
            let _ = sock.write_all(b"Content-Type: auth/request\n\n").await;
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n").await;
            send.cancelled().await;
            let _ = sock.write_all(&events).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    })
    .await;
    Server { addr: addr.to_string(), password: "ClueCon".into() }
}

/// The `events=` count of a log line.
fn logged_events(line: &str) -> usize {
    let (_, count) = line.split_once("events=").expect("a line with events=");
    count.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

/// Stops `s` (which has to give up its uncommitted events after the ESL source's GRACE) and
/// checks that the LOST events were counted and logged as lost, and never delivered.
async fn stops_counting_the_lost_events(s: TestServer, r: &Receiver, log: &common::log::LogBuffer, before: f64) {
    let logged = || log.lines_with(&["they are lost"]);
    let logged_before = logged().len();
    let stopping = std::time::Instant::now();
    let stopped = tokio::time::timeout(GRACE + Duration::from_secs(5), s.stop()).await;
    assert!(stopped.is_ok(), "the service did not stop in {:?}", stopping.elapsed());
    assert!(stopping.elapsed() >= GRACE, "gave up after {:?}, before the grace", stopping.elapsed());
    assert_eq!(
        esl_events_lost() - before,
        LOST as f64,
        "events counted in switchhook_events_lost_total{{source=\"esl\"}}"
    );
    // One line for the commit given up, and one for the reads queued behind it, if the events
    // came in more than one.
    let lost_logged: usize = logged()[logged_before..].iter().map(|l| logged_events(l)).sum();
    assert_eq!(lost_logged, LOST, "{}", log.text());
    assert!(r.at("/lost").is_empty());
}

/// ESL cannot send an event again, so the source retries a commit the store refuses until
/// shutdown, then gives it up after a grace period, and counts what it gives up: the events
/// it read and could not commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_read_but_not_committed_at_shutdown_are_counted_lost() {
    let _alone = LOSING.lock().await;
    let log = common::log::warnings();
    let send = CancellationToken::new();
    let server = switch_sending_on(&send).await;
    let s = TestServer::start_configured(Backend::Sqlite, |c| {
        c.esl = vec![server];
        c.esl_shutdown_grace = GRACE;
    })
    .await;
    let r = Receiver::start().await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/lost"))})).await;
    // Every commit of new deliveries now fails at once.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&s.config.database_url).await.unwrap();
    sqlx::query("ALTER TABLE deliveries RENAME TO gone").execute(&mut conn).await.unwrap();
    let before = esl_events_lost();
    let refused = || log.lines_with(&["ESL source: cannot commit events"]).len();
    let refused_before = refused();
    send.cancel();
    let deadline = std::time::Instant::now() + WAIT;
    // Once the first commit has gone to the store, any other read of the events is done: the
    // reader does not wait for the committer while the queue has room.
    while refused() == refused_before {
        assert!(std::time::Instant::now() < deadline, "the events were never read: {}", log.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stops_counting_the_lost_events(s, &r, &log, before).await;
}

/// The same when the commit does not fail but hangs (PostgreSQL waiting for a lock another
/// session holds, as it would for a store that stopped answering): shutdown gives it up all
/// the same after the grace period, rather than waiting for the store for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_whose_commit_hangs_at_shutdown_are_counted_lost() {
    use sqlx::Connection as _;
    let Some(backend) = Backend::postgres() else { return };
    let _alone = LOSING.lock().await;
    let log = common::log::warnings();
    let send = CancellationToken::new();
    let server = switch_sending_on(&send).await;
    let s = TestServer::start_configured(backend, |c| {
        c.esl = vec![server];
        c.esl_shutdown_grace = GRACE;
    })
    .await;
    let r = Receiver::start().await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/lost"))})).await;
    let mut lock = sqlx::PgConnection::connect(&s.config.database_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE delivery_payloads IN EXCLUSIVE MODE").execute(&mut lock).await.unwrap();
    let before = esl_events_lost();
    send.cancel();
    let mut watch = sqlx::PgConnection::connect(&s.config.database_url).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while common::commits_waiting(&mut watch).await == 0 {
        assert!(std::time::Instant::now() < deadline, "the events never reached the store");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stops_counting_the_lost_events(s, &r, &log, before).await;
    drop(lock);
}

/// Two hook events can need the same FreeSWITCH subscription: `CHANNEL_ANSWER->x` (an event
/// only HTTP ingest brings, but FreeSWITCH knows its name) subscribes to `CHANNEL_ANSWER`.
/// Deleting that hook must not `nixevent CHANNEL_ANSWER` while a `CHANNEL_ANSWER` hook remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_hook_keeps_the_events_another_hook_still_needs() {
    let sim = Simulator::start("127.0.0.1:0".parse().unwrap(), 40.0, None, 11).await;
    let server = Server { addr: sim.addr.to_string(), password: "ClueCon".into() };
    let s = TestServer::start_configured(Backend::Sqlite, |c| c.esl = vec![server]).await;
    let r = Receiver::start().await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    r.wait_for("/answer", 1, WAIT).await;
    let id = s.create_hook(D1, json!({"event": "CHANNEL_ANSWER->x", "action": web(&r.url("/x"))})).await;
    let (status, v) = s.call("DELETE", &format!("/api/v2/hooks/{id}?domain={D1}"), Some(&s.root), None).await;
    assert_eq!((status, &v["data"]["n"]), (200, &json!(1)), "{v}");
    // Let the subscription change reach the switch, then answered calls must keep coming.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = r.at("/answer").len();
    r.wait_for("/answer", before + 3, WAIT).await;
    sim.kill().await;
}

/// A frame cut short, with the stream going on after it, is what FreeSWITCH writes when it
/// gives up a write (after 600 s of a reader that does not read: a long store outage at a low
/// event rate) and sends the next event. From there every frame's body swallows the next
/// frame's `Content-Length`: each later event was rejected, for good, on a connection that
/// `/health` showed as up. The header block that holds JSON shows the frame boundary is lost;
/// the source reconnects, and FreeSWITCH starts the new connection on a frame boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_cut_short_in_a_stream_that_goes_on_reconnects_to_find_the_frames_again() {
    let event = |uid: &str, seq: usize| {
        let body =
            json!({"Event-Name": "CHANNEL_ANSWER", "Core-UUID": "frame-cut-short", "Event-Sequence": seq.to_string(),
            "Unique-ID": uid, "variable_domain_name": D1, "Event-Date-GMT": "Tue, 14 May 2024 07:21:07 GMT"})
            .to_string();
        format!("Content-Length: {}\nContent-Type: text/event-json\n\n{body}", body.len()).into_bytes()
    };
    let mut first = event("before-the-cut", 1);
    let cut = event("cut-short", 2);
    let next = event("after-the-cut-3", 3);
    // The cut frame's body takes the next frame's first line and `Content-`, so that frame is
    // read from `Type: text/event-json`: a header block that parses.
    let taken = next.iter().position(|&b| b == b'\n').unwrap() + 1 + "Content-".len();
    first.extend(&cut[..cut.len() - taken]);
    first.extend(&next);
    for n in 4..10 {
        first.extend(event(&format!("after-the-cut-{n}"), n));
    }
    let again = event("on-the-next-connection", 10);
    let sessions = Arc::new(AtomicUsize::new(0));
    let (addr, connections) = counting_switch(move |mut sock| {
        let out = if sessions.fetch_add(1, Ordering::SeqCst) == 0 { first.clone() } else { again.clone() };
        async move {
            let mut buf = [0u8; 1024];
            let _ = sock.write_all(b"Content-Type: auth/request\n\n").await;
            let _ = sock.read(&mut buf).await;
            let _ = sock.write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n").await;
            let _ = sock.read(&mut buf).await;
            let _ =
                sock.write_all(b"Content-Type: command/reply\nReply-Text: +OK event listener enabled json\n\n").await;
            let _ = sock.write_all(&out).await;
            // The switch keeps the connection: it does not know it wrote a broken frame.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    })
    .await;
    let r = Receiver::start().await;
    let s = TestServer::start(Backend::Sqlite).await;
    s.create_hook(D1, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    let (mut config, dir, pg) = s.stop().await;
    config.esl = vec![Server { addr: addr.to_string(), password: "ClueCon".into() }];
    let s = TestServer::start_with(config, dir, pg).await;
    let deadline = std::time::Instant::now() + WAIT;
    while !r.at("/answer").iter().any(|req| uid(req) == "on-the-next-connection") {
        let got: Vec<String> = r.at("/answer").iter().map(uid).collect();
        let h = health(&s, &format!("esl {addr}")).await;
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections, delivered {got:?}, health {h}",
            connections.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(r.at("/answer").iter().any(|req| uid(req) == "before-the-cut"));
}
