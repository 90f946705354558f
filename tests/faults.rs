//! Receivers that misbehave: down for a while, failing, too slow, hanging up mid-answer,
//! asking to wait, or gone for good. Each follows its rule in SPEC §5, on both stores.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::events::channel;
use common::receiver::{Receiver, Reply};
use common::{Backend, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

on_both_stores!(
    a_receiver_down_for_a_while_gets_it_when_back,
    failing_receivers_exhaust_retries_and_fail,
    a_receiver_slower_than_the_timeout_times_out,
    a_connection_reset_mid_answer_is_retried,
    a_2xx_whose_body_stalls_or_breaks_is_delivered_once,
    a_2xx_whose_body_still_stalls_when_shutdown_interrupts_is_delivered_once,
    retry_after_is_honoured,
    gone_410_is_retried_like_any_failure,
    a_redirect_is_not_followed_and_the_log_says_where_it_pointed,
    exponential_backoff_doubles_the_wait,
);

const D: &str = "faults.example.com";
const WAIT: Duration = Duration::from_secs(30);

fn hook(url: &str, extra: Value) -> Value {
    let mut h = json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": url}});
    h.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    h
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

async fn a_receiver_down_for_a_while_gets_it_when_back(b: Backend) {
    let s = TestServer::start(b).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let id = s.create_hook(D, hook(&format!("http://127.0.0.1:{port}/back"), json!({"retries": 20, "delay": 1}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = Receiver::start_on(port).await;
    let got = r.wait_for("/back", 1, WAIT).await;
    let log = s.settled(D, &id, 1).await;
    let d = &log[0];
    assert_eq!(d["status"], "delivered");
    assert_eq!(got[0].json()["id"], d["id"]);
    let attempts = d["log"].as_array().unwrap();
    assert!(attempts.len() >= 3, "{d:#}");
    assert!(
        attempts[..attempts.len() - 1]
            .iter()
            .all(|a| a["statusCode"].is_null() && a["error"].as_str().unwrap().contains("connection"))
    );
    assert_eq!(attempts.last().unwrap()["statusCode"], 200);
}

async fn failing_receivers_exhaust_retries_and_fail(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/fail", (0..10).map(|_| Reply::status(503).body("down for maintenance")));
    let id = s.create_hook(D, hook(&r.url("/fail"), json!({"retries": 2, "delay": 1}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let log = s.settled(D, &id, 1).await;
    let d = &log[0];
    assert_eq!((&d["status"], &d["attempts"]), (&json!("failed"), &json!(3)));
    for a in d["log"].as_array().unwrap() {
        assert_eq!(
            (&a["statusCode"], &a["error"], &a["response"]),
            (&json!(503), &json!("answered 503"), &json!("down for maintenance"))
        );
    }
    let times: Vec<Instant> = r.at("/fail").iter().map(|q| q.at).collect();
    assert_eq!(times.len(), 3);
    assert!(
        gaps(&times).iter().all(|g| *g >= Duration::from_millis(950) && *g < Duration::from_secs(4)),
        "{:?}",
        gaps(&times)
    );
}

async fn a_receiver_slower_than_the_timeout_times_out(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/slow", [Reply::status(200).delay(Duration::from_secs(2)), Reply::status(200)]);
    let id = s.create_hook(D, hook(&r.url("/slow"), json!({"retries": 1, "delay": 1, "timeout": 300}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let log = s.settled(D, &id, 1).await;
    let d = &log[0];
    assert_eq!((&d["status"], &d["attempts"]), (&json!("delivered"), &json!(2)));
    let first = &d["log"][0];
    assert_eq!(first["error"], "timed out after 300 ms");
    assert!(first["statusCode"].is_null());
    let ms = first["durationMs"].as_u64().unwrap();
    assert!((300..1500).contains(&ms), "the attempt took {ms} ms");
}

/// Reads a request's head and the body it announces.
async fn read_request(sock: &mut tokio::net::TcpStream) {
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    loop {
        let n = sock.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                .unwrap_or(0);
            if got.len() >= head_end + 4 + len {
                return;
            }
        }
    }
}

/// A receiver that answers 200 and the start of its body, then stalls for `stall` and hangs
/// up; it counts the requests it gets.
async fn half_answer_receiver(stall: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/half", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                read_request(&mut sock).await;
                count.fetch_add(1, Ordering::SeqCst);
                let _ = sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nthanks").await;
                tokio::time::sleep(stall).await;
            });
        }
    });
    (url, served)
}

/// The status is the receiver's answer: a 2xx whose body then stalls past the timeout, or
/// breaks off, is delivered with what came of the body, not failed and sent again.
async fn a_2xx_whose_body_stalls_or_breaks_is_delivered_once(b: Backend) {
    let s = TestServer::start(b).await;
    for stall in [true, false] {
        let (url, served) = half_answer_receiver(if stall { Duration::from_secs(6) } else { Duration::ZERO }).await;
        let id = s.create_hook(D, hook(&url, json!({"retries": 3, "delay": 1, "timeout": 2000}))).await;
        let uid = format!("u-{stall}");
        s.ingest(channel("CHANNEL_ANSWER", D, &uid)).await;
        let log = s.settled(D, &id, 1).await;
        let d = &log[0];
        assert_eq!((&d["status"], &d["attempts"]), (&json!("delivered"), &json!(1)), "stall {stall}: {d:#}");
        let first = &d["log"][0];
        assert_eq!(
            (&first["statusCode"], &first["error"], &first["response"]),
            (&json!(200), &Value::Null, &json!("thanks"))
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(served.load(Ordering::SeqCst), 1, "stall {stall}: sent again");
    }
}

/// A receiver that hangs up in the middle of its status line, once; then answers properly.
async fn reset_receiver() -> (String, tokio::task::JoinHandle<usize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reset", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut served = 0;
        while served < 2 {
            let (mut sock, _) = listener.accept().await.unwrap();
            read_request(&mut sock).await;
            served += 1;
            let answer: &[u8] = if served == 1 {
                b"HTTP/1.1 20"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            };
            let _ = sock.write_all(answer).await;
            drop(sock);
        }
        served
    });
    (url, task)
}

async fn a_connection_reset_mid_answer_is_retried(b: Backend) {
    let s = TestServer::start(b).await;
    let (url, receiver) = reset_receiver().await;
    let id = s.create_hook(D, hook(&url, json!({"retries": 3, "delay": 1}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let log = s.settled(D, &id, 1).await;
    let d = &log[0];
    assert_eq!((&d["status"], &d["attempts"]), (&json!("delivered"), &json!(2)), "{d:#}");
    let first = &d["log"][0];
    assert!(first["statusCode"].is_null() && first["error"].as_str().unwrap().starts_with("request failed"), "{first}");
    assert_eq!(receiver.await.unwrap(), 2);
}

async fn retry_after_is_honoured(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/busy", [Reply::status(429).header("Retry-After", "2"), Reply::status(200)]);
    // The hook's own delay (an hour) would put the retry far away: Retry-After wins.
    let id = s.create_hook(D, hook(&r.url("/busy"), json!({"retries": 3, "delay": 3600}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let got = r.wait_for("/busy", 2, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_millis(1900) && gap < Duration::from_secs(5), "{gap:?}");
    let log = s.settled(D, &id, 1).await;
    assert_eq!(log[0]["log"][0]["statusCode"], 429);
    assert_eq!(log[0]["status"], "delivered");
}

/// SPEC: any answer but a 2xx is retried `retries` times; 410 Gone is no exception.
async fn gone_410_is_retried_like_any_failure(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/gone", (0..5).map(|_| Reply::status(410)));
    let id = s.create_hook(D, hook(&r.url("/gone"), json!({"retries": 2, "delay": 1}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let log = s.settled(D, &id, 1).await;
    assert_eq!((&log[0]["status"], &log[0]["attempts"]), (&json!("failed"), &json!(3)));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.at("/gone").len(), 3);
}

/// A receiver that moved (most often from http to https) answers 301: it is not followed, and
/// the log names where it pointed, resolved against the hook's URL, without its query (which
/// may carry credentials) so the operator can fix `action.url`.
async fn a_redirect_is_not_followed_and_the_log_says_where_it_pointed(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/old", [Reply::status(301).header("Location", "/new/hook?token=s3cret")]);
    let id = s.create_hook(D, hook(&r.url("/old"), json!({}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let log = s.settled(D, &id, 1).await;
    let attempt = &log[0]["log"][0];
    assert_eq!(attempt["statusCode"], 301);
    let want = format!("answered 301, a redirect to {} (redirects are not followed)", r.url("/new/hook"));
    assert_eq!(attempt["error"], want.as_str());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r.at("/new/hook").is_empty());
}

async fn exponential_backoff_doubles_the_wait(b: Backend) {
    let s = TestServer::start(b).await;
    let r = Receiver::start().await;
    r.script("/exp", [Reply::status(500), Reply::status(500), Reply::status(500), Reply::status(200)]);
    let id = s.create_hook(D, hook(&r.url("/exp"), json!({"retries": 5, "delay": 1, "backoff": "exponential"}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    let got = r.wait_for("/exp", 4, WAIT).await;
    let g = gaps(&got.iter().map(|q| q.at).collect::<Vec<_>>());
    // 1 s, 2 s, 4 s, each with jitter of up to a quarter more, never less.
    for (gap, full) in g.iter().zip([1.0, 2.0, 4.0]) {
        let secs = gap.as_secs_f64();
        assert!(secs >= full - 0.05 && secs <= full * 1.25 + 1.0, "gaps {g:?}");
    }
    assert_eq!(s.settled(D, &id, 1).await[0]["status"], "delivered");
}

/// A 2xx whose body still stalls when shutdown's 15 s grace ends is delivered, as any 2xx
/// whose body stalls is (the receiver has taken it): the interrupt only cuts the body short.
/// It was logged as interrupted and sent again after the restart.
async fn a_2xx_whose_body_still_stalls_when_shutdown_interrupts_is_delivered_once(b: Backend) {
    let s = TestServer::start(b).await;
    let (url, served) = half_answer_receiver(Duration::from_secs(60)).await;
    let id = s.create_hook(D, hook(&url, json!({"retries": 3, "delay": 1, "timeout": 120000}))).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-stall-shutdown")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while served.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the receiver never got the webhook");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = s.restart().await;
    let log = s.settled(D, &id, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(served.load(Ordering::SeqCst), 1, "the 2xx was sent again: {:#}", log[0]);
    let attempt = &log[0]["log"][0];
    assert_eq!((&log[0]["status"], &log[0]["attempts"]), (&json!("delivered"), &json!(1)), "{:#}", log[0]);
    assert_eq!((&attempt["statusCode"], &attempt["response"]), (&json!(200), &json!("thanks")), "{attempt}");
}
