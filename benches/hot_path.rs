//! Micro-benchmarks of the per-event hot path: matching, rendering, ESL parsing, splitting an
//! ingest batch, compressing a request for SQLite, signing.
//! `cargo bench`; figures and targets are in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use switchhook::event::esl::{Frame, Parser};
use switchhook::event::{Event, Headers as _, Incoming};
use switchhook::hook::{CompiledHook, HookDoc, Limits};
use switchhook::router::HookIndex;
use switchhook::simulate::calls::Switch;
use switchhook::simulate::wire;
use switchhook::store::StoredHook;

fn hook(domain: &str, event: &str, extra: Value) -> HookDoc {
    let mut body =
        json!({"event": event, "action": {"type": "web", "method": "POST", "url": "http://127.0.0.1:9000/h"}});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    HookDoc::from_body(&body, domain, Limits { max_retries: 100 }).unwrap()
}

/// `n` hooks over `domains` domains, plus `hot` hooks on CHANNEL_ANSWER in `hot.example.com`.
fn index(n: usize, domains: usize, hot: usize) -> HookIndex {
    const EVENTS: [&str; 5] =
        ["CHANNEL_CREATE", "CHANNEL_HANGUP", "CHANNEL_BRIDGE", "CHANNEL_DESTROY", "CUSTOM->callcenter::info"];
    let mut hooks: Vec<StoredHook> = (0..n)
        .map(|i| StoredHook {
            id: format!("{i:024x}"),
            doc: hook(&format!("d{}.example.com", i % domains), EVENTS[i % 5], json!({})),
        })
        .collect();
    hooks.extend((0..hot).map(|i| StoredHook {
        id: format!("{:024x}", n + i),
        doc: hook("hot.example.com", "CHANNEL_ANSWER", json!({})),
    }));
    HookIndex::new(hooks).0
}

/// A realistic event of `name` from the simulated switch, in `domain`.
fn event(name: &str, domain: &str) -> Event {
    Switch::new(3, vec![domain.to_owned()])
        .call()
        .into_iter()
        .find(|e| e.get("Event-Name") == Some(&json!(name)))
        .unwrap()
}

/// What the router does to find a parsed event's hooks: its route, then their filters.
fn matched(idx: &HookIndex, event: &Event) -> usize {
    let Some(key) = event.route_key() else { return 0 };
    idx.hooks(&key).iter().filter(|h| h.hook.failed_filter(event).is_none()).count()
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("matching");
    let miss = event("CHANNEL_ANSWER", "d1.example.com");
    let hit = event("CHANNEL_ANSWER", "hot.example.com");
    for (hooks, domains) in [(10, 10), (10_000, 1_000)] {
        let idx = index(hooks, domains, 0);
        group.bench_function(format!("no match, {hooks} hooks"), |b| b.iter(|| matched(&idx, black_box(&miss))));
    }
    for hot in [1, 10] {
        let idx = index(10_000, 1_000, hot);
        group.bench_function(format!("{hot} match, 10000 hooks"), |b| b.iter(|| matched(&idx, black_box(&hit))));
    }
    group.finish();
}

fn rendering(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    let complete = event("CHANNEL_HANGUP_COMPLETE", "d.example.com");
    let name = "CHANNEL_HANGUP_COMPLETE";
    let id = "6f1c4a2e-0c4b-4f5e-9d1a-3b2c1d0e9f8a";
    let compile = |extra| -> CompiledHook { hook("d.example.com", name, extra).compile().unwrap() };
    let default = compile(json!({}));
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("default body, {} headers", complete.0.len()), |b| {
        b.iter(|| default.render(black_box(&complete), name, id))
    });
    let picked = compile(json!({"fields": ["Unique-ID", "Caller-Caller-ID-Number", "Caller-Destination-Number",
        "variable_billsec", "Hangup-Cause"], "map": {"Unique-ID": "call_id", "variable_billsec": "billsec"}}));
    group.bench_function("fields + map", |b| b.iter(|| picked.render(black_box(&complete), name, id)));
    let raw = compile(json!({"customBody": true, "rawBody":
        "{\"call\": \"${Unique-ID}\", \"from\": \"${Caller-Caller-ID-Name}\", \"to\": \"${Caller-Destination-Number}\", \"billsec\": ${billsec}, \"cause\": \"${hangup_cause}\"}",
        "headers": {"X-Call": "${Unique-ID}"}}));
    group.bench_function("rawBody template", |b| b.iter(|| raw.render(black_box(&complete), name, id)));
    group.finish();
}

fn esl_parser(c: &mut Criterion) {
    let mut group = c.benchmark_group("esl");
    let events = Switch::new(5, vec!["d.example.com".into()]).calls(100);
    for (format, encode) in [("plain", wire::event_plain as fn(&Event) -> Vec<u8>), ("json", wire::event_json)] {
        let stream: Vec<u8> = events.iter().flat_map(encode).collect();
        group.throughput(Throughput::Elements(events.len() as u64));
        // Every event parsed (a hook filters it), or only its routing headers read (no hook
        // wants it, or the hooks that do send it whole).
        for (what, parse) in [("parse", true), ("peek", false)] {
            let name = format!("{} {format} events ({} KiB), {what}", events.len(), stream.len() / 1024);
            group.bench_function(name, |b| {
                b.iter_batched(
                    Parser::new,
                    |mut parser| {
                        parser.push(black_box(&stream));
                        let mut n = 0;
                        while let Some(frame) = parser.next_frame().unwrap() {
                            if let Frame::Event(raw) = frame {
                                let incoming = raw.into_incoming().unwrap();
                                if parse {
                                    black_box(incoming.event().unwrap());
                                } else {
                                    black_box(incoming);
                                }
                            }
                            n += 1;
                        }
                        n
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

/// An ingest batch split into events kept as text: the array look against the serde split with a
/// look per item, which is what ingest does when the array look refuses a batch.
fn ingest(c: &mut Criterion) {
    let mut group = c.benchmark_group("ingest");
    let events = Switch::new(5, vec!["d.example.com".into()]).calls(20);
    let items: Vec<String> = events.iter().take(100).map(|e| serde_json::to_string(&e.0).unwrap()).collect();
    let batch = format!("[{}]", items.join(","));
    group.throughput(Throughput::Elements(items.len() as u64));
    let name = |how: &str| format!("{} events ({} KiB), {how}", items.len(), batch.len() / 1024);
    group.bench_function(name("array look"), |b| b.iter(|| Incoming::all_from_text(black_box(&batch)).unwrap()));
    group.bench_function(name("serde split, look per item"), |b| {
        b.iter(|| {
            let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(black_box(&batch)).unwrap();
            raw.iter().map(|item| Incoming::from_text(item.get().to_owned()).unwrap()).collect::<Vec<_>>()
        })
    });
    group.finish();
}

fn storing(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let complete = event("CHANNEL_HANGUP_COMPLETE", "d.example.com");
    let body = hook("d.example.com", "CHANNEL_HANGUP_COMPLETE", json!({})).compile().unwrap();
    let body = body.render(&complete, "CHANNEL_HANGUP_COMPLETE", "id").body;
    let packed = switchhook::store::compress(&body);
    group.throughput(Throughput::Bytes(body.len() as u64));
    let sizes = format!("{} B body, {} B compressed", body.len(), packed.len());
    group.bench_function(format!("compress {sizes}"), |b| b.iter(|| switchhook::store::compress(black_box(&body))));
    group.bench_function(format!("decompress {sizes}"), |b| {
        b.iter(|| switchhook::store::decompress("id", black_box(&packed)).unwrap())
    });
    group.finish();
}

fn signing(c: &mut Criterion) {
    let complete = event("CHANNEL_HANGUP_COMPLETE", "d.example.com");
    let hook =
        hook("d.example.com", "CHANNEL_HANGUP_COMPLETE", json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}))
            .compile()
            .unwrap();
    let body = hook.render(&complete, "CHANNEL_HANGUP_COMPLETE", "id").body;
    let key = hook.signing_key.unwrap();
    c.bench_function(&format!("sign {} B body", body.len()), |b| {
        b.iter(|| {
            switchhook::delivery::sign::signature(
                &key,
                "6f1c4a2e-0c4b-4f5e-9d1a-3b2c1d0e9f8a",
                1_796_000_000,
                black_box(body.as_bytes()),
            )
        })
    });
}

criterion_group!(benches, matching, rendering, esl_parser, ingest, storing, signing);
criterion_main!(benches);
