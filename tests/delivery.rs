//! Delivery details found by black-box grading: how an attempt's failure decides the wait
//! before the next one.

mod common;

use std::time::Duration;

use common::events::channel;
use common::receiver::{Receiver, Reply};
use common::{Backend, TestServer, web};
use serde_json::json;

const D: &str = "demo.example.com";

/// An auth server that answers 429 or 503 with `Retry-After` is asked again when it says, as
/// a receiver is: not after the hook's `delay` (a minute here), and not sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_servers_retry_after_is_honoured() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = Receiver::start().await;
    r.script(
        "/auth",
        [
            Reply::status(429).header("Retry-After", "2").body("slow down"),
            Reply::status(200).body(r#"{"token": "t-1"}"#),
        ],
    );
    let id = s
        .create_hook(
            D,
            json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "retries": 1, "delay": 60,
            "headers": {"Authorization": "Bearer ${auth:body:token}"},
            "auth": {"enabled": true, "url": r.url("/auth")}}),
        )
        .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;

    let sent = r.wait_for("/h", 1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].header("authorization"), Some("Bearer t-1"));
    let auth = r.at("/auth");
    assert_eq!(auth.len(), 2);
    let waited = auth[1].at - auth[0].at;
    assert!(waited >= Duration::from_millis(1900), "asked again after {waited:?}");
    let log = s.settled(D, &id, 1).await;
    assert_eq!(log[0]["log"][0]["error"], "auth request answered 429: slow down", "{}", log[0]);
}

/// An auth server that cannot be reached fails the attempt with the reason, said once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_auth_server_is_named_in_the_log() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = Receiver::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let id = s
        .create_hook(
            D,
            json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")),
            "auth": {"enabled": true, "url": format!("http://{closed}/auth")}}),
        )
        .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;

    let log = s.settled(D, &id, 1).await;
    let error = log[0]["log"][0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("auth request: connection failed: "), "{error}");
    assert!(r.at("/h").is_empty());
}

/// An auth answer whose JSON is cut off at the 64 KiB read limit has no fields to give the
/// webhook's headers: a hook that reads them fails the attempt saying so, rather than sending
/// empty credentials. A hook that reads only the answer's headers is sent as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_answer_too_large_to_read_fails_only_the_hooks_that_read_it() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = Receiver::start().await;
    let padding = "x".repeat(70 * 1024);
    let answer = format!(r#"{{"token": "t-1", "padding": "{padding}"}}"#);
    r.script("/auth", [Reply::status(200).body(&answer)]);
    r.script("/auth2", [Reply::status(200).header("X-Session", "s-1").body(&answer)]);
    let id = s
        .create_hook(
            D,
            json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")),
            "headers": {"Authorization": "Bearer ${auth:body:token}"},
            "auth": {"enabled": true, "url": r.url("/auth")}}),
        )
        .await;
    s.create_hook(
        D,
        json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h2")),
        "headers": {"X-Session": "${auth:header:x-session}"},
        "auth": {"enabled": true, "url": r.url("/auth2")}}),
    )
    .await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;

    let log = s.settled(D, &id, 1).await;
    assert_eq!(
        log[0]["log"][0]["error"], "the auth answer is JSON larger than 64 KiB, whose fields cannot be read",
        "{}",
        log[0]
    );
    assert!(r.at("/h").is_empty());
    let sent = r.wait_for("/h2", 1, Duration::from_secs(10)).await;
    assert_eq!(sent[0].header("x-session"), Some("s-1"));
}

/// Correcting a hook's URL rescues the deliveries still waiting to be retried: each next
/// attempt goes where the hook now points, with the body, headers and delivery id it had. A
/// GET's query mixes the event's data with the URL's own parameters (a key, say), which cannot
/// be told apart: its retries go where they were rendered to, never with the old query to a new
/// address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_go_to_the_hooks_corrected_url() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = Receiver::start().await;
    for (method, wrong, right, retried_at) in
        [("POST", "/wrong", "/right", "/right"), ("GET", "/wrong-get?key=old", "/right-get?key=new", "/wrong-get")]
    {
        let path = wrong.split('?').next().unwrap();
        r.script(path, [Reply::status(404)]);
        let mut doc = json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": method, "url": r.url(wrong)},
            "headers": {"X-Call": "${Unique-ID}"}, "retries": 2, "delay": 1});
        let id = s.create_hook(D, doc.clone()).await;
        s.ingest(channel("CHANNEL_ANSWER", D, &format!("u-{method}"))).await;
        let first = r.wait_for(path, 1, Duration::from_secs(10)).await;

        doc["action"]["url"] = r.url(right).into();
        let (status, v) = s.call("PUT", &format!("/api/v2/hooks/{id}?domain={D}"), Some(&s.root), Some(doc)).await;
        assert_eq!(status, 200, "{v}");

        let retried = r.wait_for(retried_at, if retried_at == path { 2 } else { 1 }, Duration::from_secs(10)).await;
        let (before, after) = (&first[0], retried.last().unwrap());
        assert_eq!(after.header("webhook-id"), before.header("webhook-id"));
        assert_eq!(after.header("x-call"), Some(format!("u-{method}").as_str()));
        assert_eq!((&after.body, &after.target[retried_at.len()..]), (&before.body, &before.target[path.len()..]));
        let log = s.settled(D, &id, 1).await;
        assert_eq!(log[0]["status"], "delivered", "{}", log[0]);
    }
    assert!(r.at("/right-get").is_empty());
}

/// Correcting a hook's fixed header (a wrong API key) rescues the deliveries waiting for a
/// retry too. A header rendered from the event keeps the value its event gave; a header the
/// hook no longer has is no longer sent (a removed content type gives way to the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_send_the_hooks_corrected_fixed_headers() {
    let s = TestServer::start(Backend::Sqlite).await;
    let r = Receiver::start().await;
    r.script("/h", [Reply::status(401)]);
    let mut doc = json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h")), "retries": 2, "delay": 1,
        "headers": {"X-Api-Key": "wrong", "X-Call": "${Unique-ID}", "X-Old": "gone", "Content-Type": "text/plain"}});
    let id = s.create_hook(D, doc.clone()).await;
    s.ingest(channel("CHANNEL_ANSWER", D, "u-1")).await;
    assert_eq!(r.wait_for("/h", 1, Duration::from_secs(10)).await[0].header("content-type"), Some("text/plain"));

    doc["headers"] = json!({"X-Api-Key": "right", "X-Call": "${Caller-Caller-ID-Number}", "X-New": "${Unique-ID}"});
    let (status, v) = s.call("PUT", &format!("/api/v2/hooks/{id}?domain={D}"), Some(&s.root), Some(doc)).await;
    assert_eq!(status, 200, "{v}");

    let sent = r.wait_for("/h", 2, Duration::from_secs(10)).await;
    let retry = &sent[1];
    assert_eq!(retry.header("x-api-key"), Some("right"));
    assert_eq!(retry.header("x-call"), Some("u-1"));
    assert_eq!((retry.header("x-old"), retry.header("x-new")), (None, None));
    assert_eq!(retry.header("content-type"), Some("application/json"));
    assert_eq!(retry.header("webhook-id"), sent[0].header("webhook-id"));
    assert_eq!(s.settled(D, &id, 1).await[0]["status"], "delivered");
}
