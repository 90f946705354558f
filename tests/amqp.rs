//! The RabbitMQ source against the machine's broker (`SWITCHHOOK_TEST_AMQP_URL`): mod_amqp
//! shaped messages in, webhooks out; bad messages rejected and logged; nothing lost across
//! restarts or when the broker loses the queue.

mod common;

use common::web;

use std::time::Duration;

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicPublishArguments, Channel, ExchangeDeleteArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::Connection;
use common::events::{channel, dialer_member_end, with};
use common::log::warnings;
use common::receiver::Receiver;
use common::{Backend, TestServer};
use serde_json::{Value, json};
use switchhook::event::{Event, routing};
use switchhook::sources::amqp::{Exchange, Settings};

const D: &str = "amqp.example.com";
const WEBITEL: &str = "#FreeSWITCH-Hostname,Event-Name,Event-Subclass,Channel-Presence-ID,Channel-Presence-Data";
const WAIT: Duration = Duration::from_secs(20);

/// The broker URL, or `None` (and one line saying so) when the variable is unset.
fn broker() -> Option<String> {
    match std::env::var("SWITCHHOOK_TEST_AMQP_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            println!("skipped: SWITCHHOOK_TEST_AMQP_URL is not set");
            None
        }
    }
}

/// Exchanges and a queue of the test's own, so tests can run side by side.
struct Topology {
    url: String,
    tag: String,
    conn: Connection,
    channel: Channel,
}

impl Topology {
    async fn new(url: String) -> Topology {
        let args = switchhook::sources::amqp::connection_args(&url).unwrap();
        let conn =
            Connection::open(&args).await.expect("SWITCHHOOK_TEST_AMQP_URL is set but RabbitMQ cannot be reached");
        let channel = conn.open_channel(None).await.unwrap();
        let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        Topology { url, tag, conn, channel }
    }

    fn fs_exchange(&self) -> String {
        format!("TAP.Events.{}", self.tag)
    }

    fn engine_exchange(&self) -> String {
        format!("engine.{}", self.tag)
    }

    /// One exchange, as the default configuration has it: mod_amqp's format.
    fn default_settings(&self) -> Settings {
        let mut settings = self.settings();
        settings.exchanges.truncate(1);
        settings
    }

    fn settings(&self) -> Settings {
        Settings {
            url: self.url.clone(),
            queue: format!("switchhook.test.{}", self.tag),
            prefetch: 100,
            exchanges: vec![
                Exchange {
                    name: self.fs_exchange(),
                    kind: "topic".into(),
                    format_fields: routing::fields(routing::DEFAULT_FORMAT),
                },
                Exchange {
                    name: self.engine_exchange(),
                    kind: "topic".into(),
                    format_fields: routing::fields(WEBITEL),
                },
            ],
        }
    }

    /// Publishes like mod_amqp: the event as JSON, the key from format_fields.
    async fn publish_fs(&self, event: &Value) {
        let key = routing::routing_key(
            &Event::new(event.as_object().unwrap().clone()),
            &routing::fields(routing::DEFAULT_FORMAT),
        );
        self.publish(&self.fs_exchange(), &key, event.to_string().into_bytes()).await;
    }

    async fn publish(&self, exchange: &str, key: &str, body: Vec<u8>) {
        let props = BasicProperties::default().with_content_type("application/json").finish();
        self.channel.basic_publish(props, body, BasicPublishArguments::new(exchange, key)).await.unwrap();
    }

    async fn delete_queue(&self) {
        self.channel.queue_delete(QueueDeleteArguments::new(&self.settings().queue)).await.unwrap();
    }

    async fn cleanup(self) {
        let queue = self.settings().queue;
        let _ = self.channel.queue_delete(QueueDeleteArguments::new(&queue)).await;
        for ex in [self.fs_exchange(), self.engine_exchange()] {
            let _ = self.channel.exchange_delete(ExchangeDeleteArguments::new(&ex)).await;
        }
        let _ = self.conn.close().await;
    }
}

/// A server on SQLite reading RabbitMQ with `settings`.
async fn serve(settings: Settings) -> TestServer {
    TestServer::start_configured(Backend::Sqlite, |c| c.amqp = Some(settings)).await
}

/// Waits until the source is connected (it binds before it consumes), then a moment more for
/// it to apply the bindings of hooks created after it connected.
async fn wait_connected(s: &TestServer) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, v) = s.call("GET", "/health", None, None).await;
        if v["data"]["sources"]["amqp"]["connected"] == true {
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        assert!(std::time::Instant::now() < deadline, "amqp never connected: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh topology, a receiver, and a server whose one hook sends `CHANNEL_ANSWER` to the
/// receiver's `/h`, connected with its binding in place.
async fn answering(url: String) -> (Topology, Receiver, TestServer) {
    hooked(url, Topology::settings, "CHANNEL_ANSWER", "/h").await
}

/// [`answering`] with other settings, and a hook on `event` sent to `path`.
async fn hooked(
    url: String,
    settings: fn(&Topology) -> Settings,
    event: &str,
    path: &str,
) -> (Topology, Receiver, TestServer) {
    let t = Topology::new(url).await;
    let r = Receiver::start().await;
    let s = serve(settings(&t)).await;
    s.create_hook(D, json!({"event": event, "action": web(&r.url(path))})).await;
    wait_connected(&s).await;
    (t, r, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mod_amqp_events_reach_hooks_and_bad_messages_are_rejected_and_logged() {
    let Some(url) = broker() else { return };
    let log = warnings();
    let t = Topology::new(url).await;
    let r = Receiver::start().await;
    let s = serve(t.settings()).await;
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    s.create_hook(D, json!({"event": "CUSTOM->engine::dialer_member_end", "action": web(&r.url("/member"))})).await;
    wait_connected(&s).await;

    t.publish_fs(&channel("CHANNEL_ANSWER", D, "a-1")).await;
    let bad_key = format!("FreeSWITCH.fs1.CHANNEL_ANSWER..bad-{}", t.tag);
    let bad = format!("this is not json {} {}", t.tag, "x".repeat(300));
    t.publish(&t.fs_exchange(), &bad_key, bad.clone().into_bytes()).await;
    t.publish(&t.fs_exchange(), "FreeSWITCH.fs1.CHANNEL_ANSWER..arr", b"[1,2]".to_vec()).await;
    t.publish_fs(&channel("CHANNEL_ANSWER", D, "a-2")).await;
    // mod_amqp passes caller names through as bytes: invalid UTF-8 is replaced, not rejected.
    let latin1 = channel("CHANNEL_ANSWER", D, "a-3").to_string().replace("\"Alice\"", "\"Jos\u{1}\"");
    let latin1 = latin1.into_bytes().into_iter().map(|b| if b == 1 { 0xe9 } else { b }).collect();
    t.publish(&t.fs_exchange(), "FreeSWITCH.fs1.CHANNEL_ANSWER..a-3", latin1).await;
    t.publish_fs(&channel("CHANNEL_HANGUP", D, "not-bound")).await;
    let member = dialer_member_end(D);
    t.publish(&t.engine_exchange(), ".CUSTOM.engine%3A%3Adialer_member_end..", member.to_string().into_bytes()).await;

    let got = r.wait_for("/answer", 3, WAIT).await;
    let mut ids: Vec<String> = got.iter().map(|q| q.json()["data"]["Unique-ID"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["a-1", "a-2", "a-3"]);
    let a3 = got.iter().find(|q| q.json()["data"]["Unique-ID"] == "a-3").unwrap().json();
    assert_eq!(a3["data"]["Caller-Caller-ID-Name"], "Jos\u{fffd}");
    let m = r.wait_for("/member", 1, WAIT).await[0].json();
    assert_eq!(m["data"]["currentProbe"], 2);
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    // The counter is the process's: another test of this binary rejects a message too.
    let rejected = metrics.lines().find_map(|l| l.strip_prefix("switchhook_source_rejected_total{source=\"amqp\"} "));
    assert!(rejected.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 2), "{metrics}");
    // Audit: the warning said neither where the message came from nor what it held.
    let exchange = format!("exchange=\"{}\"", t.fs_exchange());
    let lines = log.lines_with(&["rejected a message", &exchange]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let long = format!("routing_key=\"{bad_key}\" body=\"{}\"", &bad[..200]);
    assert!(lines.iter().any(|l| l.ends_with(&long)), "{long} is not in {lines:?}");
    let short = "routing_key=\"FreeSWITCH.fs1.CHANNEL_ANSWER..arr\" body=\"[1,2]\"";
    assert!(lines.iter().any(|l| l.ends_with(short)), "{short} is not in {lines:?}");

    // A hook added while running adds its binding, and its events start to arrive.
    s.create_hook(D, json!({"event": "CHANNEL_HANGUP", "action": web(&r.url("/hangup"))})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    t.publish_fs(&channel("CHANNEL_HANGUP", D, "h-1")).await;
    let got = r.wait_for("/hangup", 1, WAIT).await;
    assert_eq!(got[0].json()["data"]["Unique-ID"], "h-1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.at("/hangup").len(), 1, "the event published before its binding existed is not delivered");

    s.stop().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_stopped_or_unacked_at_a_crash_arrive_after_restart() {
    let Some(url) = broker() else { return };
    let (t, r, s) = answering(url).await;

    // Stopped: messages wait in the durable queue.
    let (config, dir, pg) = s.stop().await;
    for i in 0..50 {
        t.publish_fs(&channel("CHANNEL_ANSWER", D, &format!("stopped-{i}"))).await;
    }
    let s = TestServer::start_with(config, dir, pg).await;
    r.wait_for("/h", 50, WAIT).await;

    // Crash while consuming a burst: whatever was not acknowledged comes back.
    for i in 0..3000 {
        t.publish_fs(&channel("CHANNEL_ANSWER", D, &format!("burst-{i}"))).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (config, dir, pg) = s.crash().await;
    let s = TestServer::start_with(config, dir, pg).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut ids: Vec<String> =
            r.at("/h").iter().map(|q| q.json()["data"]["Unique-ID"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids.dedup();
        if ids.len() == 3050 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "only {} of 3050 distinct events arrived", ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
    t.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_publishes_like_mod_amqp() {
    let Some(url) = broker() else { return };
    let t = Topology::new(url.clone()).await;
    let r = Receiver::start().await;
    let s = serve(t.settings()).await;
    s.create_hook("domain-1.example.com", json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    wait_connected(&s).await;
    let options = switchhook::simulate::run::Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        password: String::new(),
        amqp: Some(url),
        exchange: t.fs_exchange(),
        format_fields: routing::DEFAULT_FORMAT.into(),
        rate: 0.0,
        domains: 2,
        calls: Some(40),
        seed: 3,
    };
    let summary =
        switchhook::simulate::run::run(options, tokio_util::sync::CancellationToken::new(), None).await.unwrap();
    let want = summary.events[&("CHANNEL_ANSWER".to_owned(), "domain-1.example.com".to_owned())] as usize;
    let got = r.wait_for("/answer", want, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.at("/answer").len(), want);
    assert!(got.iter().all(|q| q.json()["data"]["variable_domain_name"] == "domain-1.example.com"));
    s.stop().await;
    t.cleanup().await;
}

/// Audit: the contact-center engine publishes to TAP.Events with its own layout (event name in
/// the 2nd word), which the default config's bindings for mod_amqp's layout never matched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_and_mod_amqp_layouts_both_reach_hooks_on_one_exchange() {
    let Some(url) = broker() else { return };
    let t = Topology::new(url).await;
    let r = Receiver::start().await;
    let settings = t.default_settings();
    let ex = t.fs_exchange();
    let s = serve(settings).await;
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/answer"))})).await;
    s.create_hook(D, json!({"event": "CUSTOM->engine::dialer_member_end", "action": web(&r.url("/member"))})).await;
    wait_connected(&s).await;

    let member = dialer_member_end(D);
    t.publish(&ex, ".CUSTOM.engine%3A%3Adialer_member_end..", member.to_string().into_bytes()).await;
    t.publish_fs(&with(member.clone(), json!({"FreeSWITCH-Hostname": "fs1", "id": "from-fs"}))).await;
    let webitel = routing::routing_key(
        &Event::new(channel("CHANNEL_ANSWER", D, "webitel").as_object().unwrap().clone()),
        &routing::fields(routing::WEBITEL_FORMAT),
    );
    assert_eq!(webitel.split('.').nth(1), Some("CHANNEL_ANSWER"), "{webitel}");
    t.publish(&ex, &webitel, channel("CHANNEL_ANSWER", D, "webitel").to_string().into_bytes()).await;
    // mod_amqp cuts keys at 255 bytes: the words after the name may be missing.
    t.publish(&ex, "FreeSWITCH.fs1.CHANNEL_ANSWER", channel("CHANNEL_ANSWER", D, "cut").to_string().into_bytes()).await;
    // The broad match: a host word equal to a hook's event name routes a HANGUP here, and the
    // router, reading the name from the body, delivers it nowhere.
    let hangup = channel("CHANNEL_HANGUP", D, "hangup").to_string().into_bytes();
    t.publish(&ex, "FreeSWITCH.CHANNEL_ANSWER.CHANNEL_HANGUP..hangup", hangup).await;

    let got = r.wait_for("/member", 2, WAIT).await;
    let mut ids: Vec<String> = got.iter().map(|q| q.json()["data"]["id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["5980360fa7ec15000c409270", "from-fs"]);
    let got = r.wait_for("/answer", 2, WAIT).await;
    let mut ids: Vec<String> = got.iter().map(|q| q.json()["data"]["Unique-ID"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert_eq!(ids, ["cut", "webitel"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((r.at("/answer").len(), r.at("/member").len()), (2, 2));
    s.stop().await;
    t.cleanup().await;
}

/// Audit: a queue recreated empty (deleted, broker data lost, another broker) got no bindings,
/// because only keys missing from the recorded set were bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_lost_while_stopped_is_bound_again_at_start() {
    let Some(url) = broker() else { return };
    let (t, r, s) = answering(url).await;

    let (config, dir, pg) = s.stop().await;
    t.delete_queue().await;
    let s = TestServer::start_with(config, dir, pg).await;
    wait_connected(&s).await;
    t.publish_fs(&channel("CHANNEL_ANSWER", D, "after-restart")).await;
    let got = r.wait_for("/h", 1, WAIT).await;
    assert_eq!(got[0].json()["data"]["Unique-ID"], "after-restart");
    s.stop().await;
    t.cleanup().await;
}

/// Audit: the broker's basic.cancel (queue deleted while consuming) was ignored, leaving a dead
/// consumer, no queue, and /health saying connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_while_consuming_is_declared_and_bound_again() {
    let Some(url) = broker() else { return };
    let (t, r, s) = answering(url).await;
    t.publish_fs(&channel("CHANNEL_ANSWER", D, "before")).await;
    r.wait_for("/h", 1, WAIT).await;

    t.delete_queue().await;
    // Until the source has reconnected, declared and bound the queue, events are unroutable.
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 0;
    while r.at("/h").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no event arrived after the queue was deleted");
        t.publish_fs(&channel("CHANNEL_ANSWER", D, &format!("after-{n}"))).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = r.at("/h").last().unwrap().json();
    assert!(last["data"]["Unique-ID"].as_str().unwrap().starts_with("after-"), "{last}");
    let (_, health) = s.call("GET", "/health", None, None).await;
    assert_eq!(health["data"]["sources"]["amqp"]["connected"], true, "{health}");
    s.stop().await;
    t.cleanup().await;
}

/// Audit: a hook stored before the length check must not stop the source; its binding is
/// skipped and logged with the hook's event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_hook_too_long_for_a_binding_key_is_skipped_and_logged() {
    let Some(url) = broker() else { return };
    let log = warnings();
    let t = Topology::new(url).await;
    let r = Receiver::start().await;
    let s = serve(t.settings()).await;
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    let id = s.create_hook(D, json!({"event": "CUSTOM->placeholder", "action": web(&r.url("/long"))})).await;
    let (config, dir, pg) = s.stop().await;
    let long = format!("CUSTOM->{}::{}", t.tag, "a:".repeat(62));
    let url = config.database_url.clone();
    let doc: String = on_store_db!(&url, |conn| sqlx::query_scalar("SELECT doc FROM hooks WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut conn)
        .await
        .unwrap());
    let mut doc: Value = serde_json::from_str(&doc).unwrap();
    doc["event"] = json!(long);
    let updated = on_store_db!(&url, |conn| sqlx::query("UPDATE hooks SET event = $1, doc = $2 WHERE id = $3")
        .bind(&long)
        .bind(doc.to_string())
        .bind(&id)
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected());
    assert_eq!(updated, 1);

    let s = TestServer::start_with(config, dir, pg).await;
    wait_connected(&s).await;
    t.publish_fs(&channel("CHANNEL_ANSWER", D, "still-bound")).await;
    let got = r.wait_for("/h", 1, WAIT).await;
    assert_eq!(got[0].json()["data"]["Unique-ID"], "still-bound");
    let lines = log.lines_with(&["binding key is over 255 bytes", &format!("event={long}")]);
    assert!(!lines.is_empty(), "the skipped hook event is not logged");
    s.stop().await;
    t.cleanup().await;
}

/// What mod_amqp (FreeSWITCH 1.10, mod_amqp_producer.c) puts on the wire for an event: the body
/// is `switch_event_serialize_json` (every value a string, the event body as `_body` after its
/// `Content-Length`), the key built by `amqp_util_encode`, the properties `text/json`,
/// non-persistent, a timestamp and an `x_Liquid_MessageSentTimeStamp` header of type
/// timestamp; and once with the routing key older mod_amqp builds. (No rejected message here:
/// the rejection counter is shared with the test above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_exactly_as_mod_amqp_publishes_it_is_delivered() {
    let Some(url) = broker() else { return };
    let (t, r, s) = hooked(url, Topology::default_settings, "CUSTOM->callcenter::info", "/cc").await;

    let body = r#"{"Event-Subclass":"callcenter::info","Event-Name":"CUSTOM","Core-UUID":"8e5ab2b4-1f1c-4f2c-9d0a-5a3e6c2a9f10","FreeSWITCH-Hostname":"fs01.amqp.example.com","FreeSWITCH-Switchname":"fs01","FreeSWITCH-IPv4":"10.0.0.15","FreeSWITCH-IPv6":"::1","Event-Date-Local":"2024-05-14 10:21:07","Event-Date-GMT":"Tue, 14 May 2024 07:21:07 GMT","Event-Date-Timestamp":"1715671267204118","Event-Calling-File":"mod_callcenter.c","Event-Calling-Function":"cc_queue_function","Event-Calling-Line-Number":"2092","Event-Sequence":"58214","CC-Queue":"support@amqp.example.com","CC-Action":"member-queue-start","CC-Member-UUID":"f2b0c1f4-3c1e-4a7e-8a55-6b7f0e2d9a31","CC-Member-CID-Name":"Jos\u00e9 \"VIP\"","Unique-ID":"mq-1","Channel-Presence-ID":"1000@amqp.example.com","variable_domain_name":"amqp.example.com","variable_cc_queue_names":["support","sales"],"Content-Length":"11","_body":"line1\nline2"}"#;
    let key = "FreeSWITCH.fs01%2Eamqp%2Eexample%2Ecom.CUSTOM.callcenter%3A%3Ainfo.mq-1";
    let mut headers = amqprs::FieldTable::new();
    headers.insert("x_Liquid_MessageSentTimeStamp".try_into().unwrap(), amqprs::FieldValue::T(1_715_671_267_204_200));
    let props = BasicProperties::default()
        .with_content_type("text/json")
        .with_delivery_mode(1)
        .with_timestamp(1_715_671_267)
        .with_headers(headers)
        .finish();
    let args = BasicPublishArguments::new(&t.fs_exchange(), key);
    t.channel.basic_publish(props.clone(), body.as_bytes().to_vec(), args).await.unwrap();
    // mod_amqp before it encoded words: values as they are, `.` as `_`.
    let legacy = "FreeSWITCH.fs01_amqp_example_com.CUSTOM.callcenter::info.mq-2";
    let args = BasicPublishArguments::new(&t.fs_exchange(), legacy);
    t.channel.basic_publish(props, body.replace("mq-1", "mq-2").into_bytes(), args).await.unwrap();

    let got = r.wait_for("/cc", 2, WAIT).await;
    // The two are sent at once, in either order.
    let mut calls: Vec<String> =
        got.iter().map(|g| g.json()["data"]["Unique-ID"].as_str().unwrap().to_owned()).collect();
    calls.sort();
    assert_eq!(calls, ["mq-1", "mq-2"]);
    let data = &got[0].json()["data"];
    assert_eq!(data["Event-Subclass"], "callcenter::info");
    assert_eq!(data["CC-Member-CID-Name"], "José \"VIP\"");
    assert_eq!(data["variable_cc_queue_names"], json!(["support", "sales"]));
    assert_eq!(data["_body"], "line1\nline2");
    s.stop().await;
    t.cleanup().await;
}

/// Audit: a body that starts with a UTF-8 byte order mark (a producer writing JSON as Windows
/// tools save text) was rejected as "not valid JSON". Here the contact-center engine's event, as
/// its broker publishes it (`text/json`, no delivery mode, no headers, its routing key), with
/// the engine's typed values: numbers, and a member variable holding an object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_event_after_a_utf8_byte_order_mark_is_delivered_with_its_types() {
    let Some(url) = broker() else { return };
    let (t, r, s) = hooked(url, Topology::default_settings, "CUSTOM->engine::dialer_member_end", "/member").await;

    let member = with(
        dialer_member_end(D),
        json!({"expire": 1_501_880_400_000_u64, "agentId": "1000", "variable_crm": {"lead": {"id": 17, "vip": true}}}),
    );
    let mut body = "\u{feff}".as_bytes().to_vec();
    body.extend(member.to_string().into_bytes());
    let props = BasicProperties::default().with_content_type("text/json").finish();
    let args = BasicPublishArguments::new(&t.fs_exchange(), ".CUSTOM.engine%3A%3Adialer_member_end..");
    t.channel.basic_publish(props, body, args).await.unwrap();

    let got = r.wait_for("/member", 1, WAIT).await;
    assert_eq!(got[0].json()["data"], member);
    s.stop().await;
    t.cleanup().await;
}

/// Audit: RabbitMQ refuses to redeclare a queue with other arguments (PRECONDITION_FAILED,
/// which closes the channel). A queue the operator made beforehand, as a quorum queue for high
/// availability or with a length limit, was declared again with none, so the source never
/// consumed: it reconnected forever. An existing queue is now used as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_declared_beforehand_with_other_arguments_is_used_as_it_is() {
    let Some(url) = broker() else { return };
    let t = Topology::new(url).await;
    let mut args = amqprs::FieldTable::new();
    args.insert("x-queue-type".try_into().unwrap(), amqprs::FieldValue::S("quorum".try_into().unwrap()));
    args.insert("x-max-length".try_into().unwrap(), amqprs::FieldValue::l(1_000_000));
    let declare = QueueDeclareArguments::durable_client_named(&t.settings().queue).arguments(args).finish();
    t.channel.queue_declare(declare).await.unwrap();
    let r = Receiver::start().await;
    let s = serve(t.settings()).await;
    s.create_hook(D, json!({"event": "CHANNEL_ANSWER", "action": web(&r.url("/h"))})).await;
    wait_connected(&s).await;
    t.publish_fs(&channel("CHANNEL_ANSWER", D, "quorum")).await;
    let got = r.wait_for("/h", 1, WAIT).await;
    assert_eq!(got[0].json()["data"]["Unique-ID"], "quorum");
    s.stop().await;
    t.cleanup().await;
}

/// Audit: when the broker refused an operation it closes the channel, and the source said only
/// "AMQP internal communication error: channel closed": the broker's reason now shows in the
/// log and in /health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_declare_reports_the_brokers_reason() {
    let Some(url) = broker() else { return };
    let log = warnings();
    let t = Topology::new(url).await;
    let mut settings = t.settings();
    settings.queue = format!("amq.switchhook.{}", t.tag);
    let s = serve(settings).await;
    let error = amqp_error(&s).await;
    let want = format!(
        "cannot declare the queue: the broker refused: '403: ACCESS_REFUSED - queue name 'amq.switchhook.{}' \
         contains reserved prefix 'amq.*'', (class_id = 50, method_id = 10)",
        t.tag
    );
    assert_eq!(error, want);
    assert!(!log.lines_with(&["reconnecting", &want]).is_empty(), "not logged: {}", log.text());
    s.stop().await;
    t.cleanup().await;
}

/// Audit: the reconnect backoff only grew (1, 2, 4, 8 s...), so after a few broker-side
/// interruptions, each separated by hours of consuming, the next reconnect still waited up to
/// 30 s. A session that consumed for at least as long as the next wait now resets it, as in
/// the ESL source (`sources::Reconnect`); one that drops as soon as it consumes does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconnect_backoff_starts_again_after_a_session_that_consumed() {
    let Some(url) = broker() else { return };
    let (t, _r, s) = answering(url).await;
    let connected = |v: &Value| v["data"]["sources"]["amqp"]["connected"] == true;
    let mut waits = Vec::new();
    // Two sessions that drop as soon as they consume, then two that consume for longer than
    // the next wait would be (4 s, then 2 s).
    for held in [0, 0, 5, 3] {
        tokio::time::sleep(Duration::from_secs(held)).await;
        t.delete_queue().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        // The cancel takes the source down at once; then it waits its backoff and reconnects.
        while connected(&s.call("GET", "/health", None, None).await.1) {
            assert!(std::time::Instant::now() < deadline, "the source never noticed the queue was deleted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let down = std::time::Instant::now();
        while !connected(&s.call("GET", "/health", None, None).await.1) {
            assert!(std::time::Instant::now() < deadline, "the source never reconnected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        waits.push(down.elapsed());
    }
    // 1 s, then 2 s after a session that dropped at once (the backoff grows), then the first
    // step again, 1 s, after each held session (without the reset: 4 s and 8 s).
    let secs: Vec<f64> = waits.iter().map(Duration::as_secs_f64).collect();
    let within = |w: f64, low: f64| w >= low && w < low + 2.0;
    assert!(within(secs[0], 1.0) && within(secs[1], 2.0), "{secs:?}");
    assert!(within(secs[2], 1.0) && within(secs[3], 1.0), "{secs:?}");
    s.stop().await;
    t.cleanup().await;
}

/// The RabbitMQ source's first error in `/health`, once it has one.
async fn amqp_error(s: &TestServer) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, v) = s.call("GET", "/health", None, None).await;
        if let Some(error) = v["data"]["sources"]["amqp"]["error"].as_str().filter(|e| *e != "connecting") {
            return error.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no error in /health: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A virtual host that does not exist (or that the user may not use): RabbitMQ closes the
/// connection with its reason, which /health showed inside a Debug dump of the close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_vhost_is_named_with_the_brokers_reason() {
    let Some(url) = broker() else { return };
    let t = Topology::new(url.clone()).await;
    let mut settings = t.settings();
    let mut elsewhere = url::Url::parse(&url).unwrap();
    elsewhere.set_path(&format!("/no-such-vhost-{}", t.tag));
    settings.url = elsewhere.to_string();
    let s = serve(settings).await;
    let error = amqp_error(&s).await;
    let want =
        format!("cannot connect: the broker refused: 530: NOT_ALLOWED - vhost no-such-vhost-{} not found", t.tag);
    assert_eq!(error, want);
    s.stop().await;
    t.cleanup().await;
}

/// A wrong password in `amqp.url`: RabbitMQ closes the connection at login without a reason
/// (amqprs does not ask for one), and /health and the log said only `Connection reset by peer`,
/// which reads as a network fault. The error now says what a closed login usually means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_named_as_the_likely_cause() {
    let Some(url) = broker() else { return };
    let t = Topology::new(url.clone()).await;
    let mut settings = t.settings();
    let mut wrong = url::Url::parse(&url).unwrap();
    wrong.set_password(Some("not-the-password")).unwrap();
    settings.url = wrong.to_string();
    let s = serve(settings).await;
    let error = amqp_error(&s).await;
    assert!(error.starts_with("cannot connect: "), "{error}");
    assert!(error.contains("user name or password"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");
    s.stop().await;
    t.cleanup().await;
}

/// A message larger than the largest body HTTP ingest takes (10 MiB) is rejected with its
/// size named, as malformed ones are, rather than held in memory and stored; the events
/// after it arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_rejected_by_name() {
    let Some(url) = broker() else { return };
    let log = warnings();
    let (t, r, s) = answering(url).await;

    let mut huge = channel("CHANNEL_ANSWER", D, "huge");
    huge["padding"] = "x".repeat(11 << 20).into();
    t.publish(&t.fs_exchange(), "FreeSWITCH.fs1.CHANNEL_ANSWER..huge", huge.to_string().into_bytes()).await;
    t.publish_fs(&channel("CHANNEL_ANSWER", D, "after")).await;

    let got = r.wait_for("/h", 1, WAIT).await;
    assert_eq!(got[0].json()["data"]["Unique-ID"], "after");
    let lines = log.lines_with(&["rejected a message", "over the 10 MiB limit"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("routing_key=\"FreeSWITCH.fs1.CHANNEL_ANSWER..huge\""), "{lines:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.at("/h").len(), 1);
    s.stop().await;
    t.cleanup().await;
}
