//! Secrets never reach the log: a whole flow on a real server under a process-wide subscriber
//! that captures every level, then the captured log searched for each secret the flow handled.
//! A test binary of its own, because it installs the global tracing subscriber.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use common::log::LogBuffer;
use common::receiver::{Receiver, Reply};
use common::{Backend, TOKEN_SECRET, TestServer};
use serde_json::{Value, json};
use switchhook::auth::{Claims, Role, TokenKeys, now_ms};
use switchhook::sources::esl::Server;
use switchhook::store::Revocation;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

const D: &str = "logs.example.com";
const PLAIN_SECRET: &str = "plain-hook-secret-4242";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ROTATED_SECRET: &str = "rotated-hook-secret-9090";
const STATIC_BEARER: &str = "static-bearer-5150";
const API_KEY: &str = "auth-api-key-8675309";
const MAP_PASSWORD: &str = "auth-map-password-1618";
const AUTH_BODY_TOKEN: &str = "auth-body-token-31337";
const COOKIE: &str = "cookie-value-2718";
const SESSION: &str = "session-header-1123";
const ESL_PASSWORD: &str = "esl-wrong-password-1414";
/// Credentials written into hook URLs: user info, and a query parameter named as a secret.
const URL_PASSWORD: &str = "url-password-2236";
const URL_QUERY_KEY: &str = "url-query-key-3162";
const AUTH_URL_PASSWORD: &str = "auth-url-password-1732";
const AUTH_URL_KEY: &str = "auth-url-key-2449";
const AUTH_GET_PASSWORD: &str = "auth-get-password-1259";
/// Put into the PostgreSQL URL; the test server trusts local connections, so it is ignored.
const DB_PASSWORD: &str = "db-password-5772";
/// Put into the PostgreSQL URL as `sslpassword`, which libpq reads and sqlx does not.
const DB_SSL_PASSWORD: &str = "db-ssl-password-6626";
const WAIT: Duration = Duration::from_secs(20);

/// One capture at the product's default level (`info`, as `SWITCHHOOK_LOG` defaults) and one
/// at `trace`, where the libraries (sqlx statements among them) speak too.
fn capture() -> (LogBuffer, LogBuffer) {
    let (info, trace) = (LogBuffer::default(), LogBuffer::default());
    tracing_subscriber::registry().with(layer(&info, "info")).with(layer(&trace, "trace")).init();
    (info, trace)
}

fn layer<S>(buffer: &LogBuffer, level: &str) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let buffer = buffer.clone();
    fmt::layer().with_ansi(false).with_writer(move || buffer.clone()).with_filter(EnvFilter::new(level))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log() {
    let (info, trace) = capture();
    // The search itself is sound: a value logged at debug is found at trace and only there.
    let canary = [("canary".to_owned(), "canary-value-0001".to_owned())];
    tracing::debug!(value = "canary-value-0001", "canary");
    let mut secrets = Vec::new();
    // The token secret from SWITCHHOOK_TOKEN_SECRET, and generated and kept in the store.
    let runs = [(Some(Backend::Sqlite), true), (Some(Backend::Sqlite), false), (Backend::postgres(), true)];
    for (backend, env_secret) in runs.into_iter().filter_map(|(b, e)| Some((b?, e))) {
        secrets.extend(flow(backend, env_secret).await);
    }
    let (info, trace) = (info.text(), trace.text());
    assert!(info.contains("switchhook is serving"), "the capture works:\n{info}");
    assert!(info.contains("authentication failed: FreeSWITCH refused the password"), "the ESL error was logged");
    assert!(trace.contains("sqlx::query"), "sqlx statements were captured at trace");
    assert_eq!((leaks(&info, &canary).len(), leaks(&trace, &canary).len()), (0, 1));
    let at_info = leaks(&info, &secrets);
    let at_trace = leaks(&trace, &secrets);
    println!("captured {} bytes at info, {} bytes at trace", info.len(), trace.len());
    assert!(at_info.is_empty(), "secrets in the info log:\n{}", at_info.join("\n"));
    assert!(at_trace.is_empty(), "secrets in the trace log:\n{}", at_trace.join("\n"));
}

/// Each line that holds a secret, with the secret's name.
fn leaks(log: &str, secrets: &[(String, String)]) -> Vec<String> {
    log.lines()
        .flat_map(|line| {
            secrets.iter().filter(|(_, s)| line.contains(s.as_str())).map(move |(name, _)| format!("[{name}] {line}"))
        })
        .collect()
}

/// Runs everything that handles a secret on one store; returns each secret by name.
async fn flow(backend: Backend, env_secret: bool) -> Vec<(String, String)> {
    let (esl, esl_heard) = refusing_esl().await;
    let server = Server { addr: esl.to_string(), password: ESL_PASSWORD.into() };
    let s = TestServer::start_configured(backend, |c| {
        c.esl = vec![server];
        if !env_secret {
            c.token_secret = None;
        }
        if c.database_url.starts_with("postgres") {
            let mut url = url::Url::parse(&c.database_url).unwrap();
            url.set_password(Some(DB_PASSWORD)).unwrap();
            // A libpq parameter sqlx does not read: sqlx logs such parameters with their values.
            url.query_pairs_mut().append_pair("sslpassword", DB_SSL_PASSWORD);
            c.database_url = url.to_string();
        }
    })
    .await;
    let token_secret = match env_secret {
        true => TOKEN_SECRET.to_owned(),
        false => s.services.store.token_secret("unused: one is kept already").await.unwrap(),
    };
    assert_ne!(token_secret, "unused: one is kept already");
    let r = Receiver::start().await;
    let admin = s.token(Role::Admin, D).await;
    let user = s.token(Role::User, D).await;
    let revoked = s.token(Role::Admin, D).await;
    let foreign = TokenKeys::new(b"another service's secret").unwrap().sign(&Claims::new(
        "f".into(),
        now_ms() + 60_000,
        Role::Root,
        None,
    ));

    r.script("/flaky", [Reply::status(500).body("try again"), Reply::status(200)]);
    let auth_ok = Reply::status(200)
        .header("Set-Cookie", &format!("sid={COOKIE}; Path=/; HttpOnly"))
        .header("X-Session", SESSION)
        .body(&json!({"token": AUTH_BODY_TOKEN, "ttl": 60}).to_string());
    r.script("/auth-get", [auth_ok.clone()]);
    r.script("/auth", [Reply::status(401).body("denied"), auth_ok.clone(), auth_ok.clone(), auth_ok]);
    r.script("/secured", [Reply::status(500), Reply::status(200)]);
    r.script("/dead", (0..4).map(|_| Reply::status(500)));
    r.script("/with-creds", [Reply::status(500).body("no")]);

    let create = |body: Value| {
        let (s, admin) = (&s, admin.clone());
        async move {
            let (status, v) = s.call("POST", "/api/v2/hooks", Some(&admin), Some(body)).await;
            assert_eq!(status, 200, "{v}");
            v["data"]["insertedIds"][0].as_str().unwrap().to_owned()
        }
    };
    let web = |path: &str| json!({"type": "web", "method": "POST", "url": r.url(path)});
    let plain = create(json!({"event": "CHANNEL_ANSWER", "action": web("/flaky"), "secret": PLAIN_SECRET,
        "headers": {"Authorization": format!("Bearer {STATIC_BEARER}"), "X-Call": "${Unique-ID}"},
        "retries": 2, "delay": 1}))
    .await;
    let secured = create(json!({"event": "CHANNEL_ANSWER", "action": web("/secured"), "secret": WHSEC,
        "headers": {"Authorization": "Bearer ${auth:body:token}", "X-Session": "${auth:header:x-session}"},
        "auth": {"enabled": true, "url": r.url("/auth"), "method": "POST", "cookie": true,
            "headers": {"X-Api-Key": API_KEY}, "map": {"login": "robot", "password": MAP_PASSWORD}},
        "retries": 2, "delay": 1}))
    .await;
    let dead = create(json!({"event": "CHANNEL_ANSWER", "action": web("/dead"), "secret": PLAIN_SECRET,
        "retries": 0}))
    .await;
    // Credentials in the URLs: the webhook's, one that cannot be reached, and a GET auth
    // pre-request's (its map goes in the query string).
    let with_creds = |path: &str| {
        let mut url = url::Url::parse(&r.url(path)).unwrap();
        url.set_username("hook-user").unwrap();
        url.set_password(Some(URL_PASSWORD)).unwrap();
        url.query_pairs_mut().append_pair("api_key", URL_QUERY_KEY);
        url.to_string()
    };
    let unreachable = with_creds("/closed").replace(&r.addr.port().to_string(), "1");
    let auth_url =
        with_creds("/auth-get").replace(URL_PASSWORD, AUTH_URL_PASSWORD).replace(URL_QUERY_KEY, AUTH_URL_KEY);
    let in_urls = [
        json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": with_creds("/with-creds")}}),
        json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": unreachable}}),
        json!({"event": "CHANNEL_ANSWER", "action": web("/with-creds"),
            "auth": {"enabled": true, "url": auth_url, "method": "GET", "map": {"password": AUTH_GET_PASSWORD}}}),
    ];
    let mut url_hooks = Vec::new();
    for body in in_urls {
        url_hooks.push(create(body).await);
    }
    // A refused create that carries a secret, and one whose secret is the bad part.
    for bad in [
        json!({"event": "CHANNEL_ANSWER", "action": web("/x"), "secret": PLAIN_SECRET, "delay": 0}),
        json!({"event": "CHANNEL_ANSWER", "action": web("/x"), "secret": format!("whsec_*{PLAIN_SECRET}")}),
    ] {
        let (status, _) = s.call("POST", "/api/v2/hooks", Some(&admin), Some(bad)).await;
        assert_eq!(status, 400);
    }

    let event = json!({"Event-Name": "CHANNEL_ANSWER", "Unique-ID": "u-1", "variable_domain_name": D});
    let (status, v) = s.call("POST", "/api/v2/events", Some(&admin), Some(event.clone())).await;
    assert_eq!((status, &v["data"]["deliveries"]), (200, &json!(6)), "{v}");
    let (status, _) = s.call("POST", &format!("/api/v2/hooks/{secured}/test"), Some(&admin), Some(event)).await;
    assert_eq!(status, 200);

    // Retries, the auth pre-request failing then passing, and a manual retry of a failure.
    assert_eq!(s.settled(D, &plain, 1).await[0]["status"], "delivered");
    assert_eq!(s.settled(D, &secured, 1).await[0]["status"], "delivered");
    let failed = s.settled(D, &dead, 1).await[0]["id"].as_str().unwrap().to_owned();
    let retry = s.http.post(s.url(&format!("/api/v2/deliveries/{failed}/retry"))).bearer_auth(&admin);
    assert_eq!(retry.send().await.unwrap().status(), 200);
    r.wait_for("/dead", 2, WAIT).await;
    assert_eq!(s.settled(D, &dead, 1).await[0]["status"], "failed");
    for id in &url_hooks {
        s.settled(D, id, 1).await;
    }
    let auth_get = &r.at("/auth-get")[0];
    assert!(auth_get.header("authorization").is_some_and(|v| v.starts_with("Basic ")), "{auth_get:?}");
    let got = r.at("/secured");
    let last = got.last().unwrap();
    assert_eq!(last.header("authorization"), Some(format!("Bearer {AUTH_BODY_TOKEN}").as_str()));
    assert_eq!(last.header("cookie"), Some(format!("sid={COOKIE}").as_str()));
    assert_eq!(r.at("/auth")[0].header("x-api-key"), Some(API_KEY));

    // Rotating a secret, reading hooks back, and tokens in every carrier.
    let rotate = json!({"event": "CHANNEL_ANSWER", "action": web("/flaky"), "secret": ROTATED_SECRET});
    let (status, _) = s.call("PUT", &format!("/api/v2/hooks/{plain}"), Some(&admin), Some(rotate)).await;
    assert_eq!(status, 200);
    let by_query = s.http.get(s.url(&format!("/api/v2/hooks?access_token={admin}&domain=x"))).send().await.unwrap();
    assert_eq!(by_query.status(), 200);
    let by_bearer = s.http.get(s.url(&format!("/api/v2/hooks/{secured}?domain={D}"))).bearer_auth(&s.root);
    assert_eq!(by_bearer.send().await.unwrap().status(), 200);

    // Requests that are refused: bad, foreign, revoked, and a token without permission.
    let id = s.services.keys.verify(&revoked, 0).unwrap().id;
    assert_eq!(s.services.store.revoke_token(&id, now_ms()).await.unwrap(), Revocation::Revoked);
    for (token, want) in
        [(format!("{admin}x"), 401), (foreign.clone(), 401), (revoked.clone(), 401), (user.clone(), 403)]
    {
        let (status, _) = s.call("GET", "/api/v2/hooks", Some(&token), None).await;
        assert_eq!(status, want);
    }

    // The event socket refused our password; health says so.
    let heard = tokio::time::timeout(WAIT, esl_heard).await.expect("the ESL source connected").unwrap();
    assert_eq!(heard, format!("auth {ESL_PASSWORD}"));
    let key = format!("esl {esl}");
    let deadline = std::time::Instant::now() + WAIT;
    let failed =
        |v: &serde_json::Value| v["data"]["sources"][&key]["error"].as_str().is_some_and(|e| e != "connecting");
    while !failed(&s.call("GET", "/health", None, None).await.1) {
        assert!(std::time::Instant::now() < deadline, "the ESL error never showed in /health");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let root = s.root.clone();
    s.stop().await;

    let key = switchhook::hook::signing_key(WHSEC).unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let named = [
        ("token secret", token_secret),
        ("database password", DB_PASSWORD.into()),
        ("database TLS key password", DB_SSL_PASSWORD.into()),
        ("root token", root),
        ("admin token", admin),
        ("user token", user),
        ("revoked token", revoked),
        ("foreign token", foreign),
        ("plain hook secret", PLAIN_SECRET.into()),
        ("whsec secret", WHSEC.into()),
        ("whsec key, base64", WHSEC.trim_start_matches("whsec_").into()),
        ("whsec key, hex", hex),
        ("whsec key, bytes", format!("{key:?}").trim_matches(['[', ']']).into()),
        ("rotated hook secret", ROTATED_SECRET.into()),
        ("static bearer header", STATIC_BEARER.into()),
        ("auth API key", API_KEY.into()),
        ("auth map password", MAP_PASSWORD.into()),
        ("auth body token", AUTH_BODY_TOKEN.into()),
        ("auth cookie", COOKIE.into()),
        ("auth session header", SESSION.into()),
        ("ESL password", ESL_PASSWORD.into()),
        ("URL password", URL_PASSWORD.into()),
        ("URL query key", URL_QUERY_KEY.into()),
        (
            "URL basic credentials",
            base64::engine::general_purpose::STANDARD.encode(format!("hook-user:{URL_PASSWORD}")),
        ),
        ("auth URL password", AUTH_URL_PASSWORD.into()),
        ("auth URL query key", AUTH_URL_KEY.into()),
        (
            "auth URL basic credentials",
            base64::engine::general_purpose::STANDARD.encode(format!("hook-user:{AUTH_URL_PASSWORD}")),
        ),
        ("auth GET map password", AUTH_GET_PASSWORD.into()),
    ];
    named.into_iter().map(|(n, s)| (n.to_owned(), s)).collect()
}

/// An event socket that asks for the password, refuses it, and hangs up; the first `auth`
/// line it heard comes out of the channel.
async fn refusing_esl() -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heard, first) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut heard = Some(heard);
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"Content-Type: auth/request\n\n").await;
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while !line.ends_with(b"\n\n") && socket.read(&mut byte).await.is_ok_and(|n| n == 1) {
                line.push(byte[0]);
            }
            if let Some(heard) = heard.take() {
                let _ = heard.send(String::from_utf8_lossy(&line).trim().to_owned());
            }
            let _ = socket.write_all(b"Content-Type: command/reply\nReply-Text: -ERR invalid\n\n").await;
        }
    });
    (addr, first)
}
