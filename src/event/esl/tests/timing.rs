//! Parse time per event, in release: `cargo test --release --lib event::esl -- --ignored
//! --nocapture`.

use serde_json::Value;

use super::*;

/// CPU time of this thread, which a busy 2-core box does not inflate the way it does wall time.
fn thread_cpu() -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(std::time::Duration::from_nanos(stat.split(' ').next()?.parse().ok()?))
}

/// 50,000 realistic events from one buffer, then the same through 64 KiB reads.
#[test]
#[ignore = "timing; run in release"]
fn measure_parse_time_per_event() {
    const N: usize = 50_000;
    // In the same test, not a second one: the harness would run them side by side.
    measure_event_map_floor();
    for (what, fixture) in [("event-plain", CHANNEL_ANSWER_PLAIN), ("event-json", HANGUP_COMPLETE_JSON)] {
        // Distinct Unique-IDs of the same length, so Content-Length stays right.
        let text = std::str::from_utf8(fixture).unwrap();
        let stream: Vec<u8> = (0..N)
            .flat_map(|i| {
                let id = format!("2b7f0d4c-8a3e-4c1f-b0a9-{i:012x}");
                text.replace("2b7f0d4c-8a3e-4c1f-b0a9-5d2e6f7a8b9c", &id).into_bytes()
            })
            .collect();

        // Whole buffer through the decoder; each event is dropped as it comes, as downstream will.
        let (wall, cpu) = (std::time::Instant::now(), thread_cpu());
        let mut decoder = FrameDecoder::new();
        let (mut at, mut events) = (0, 0);
        while let Some((frame, used)) = decoder.decode(&stream[at..]).unwrap() {
            events += usize::from(parsed(frame));
            at += used;
        }
        let (one_wall, one_cpu) = (wall.elapsed(), thread_cpu().zip(cpu).map(|(b, a)| b - a));
        assert_eq!(events, N);

        // As a socket would deliver it: 64 KiB reads pushed into a Parser.
        let wall = std::time::Instant::now();
        let mut parser = Parser::new();
        let mut events = 0;
        for read in stream.chunks(64 * 1024) {
            parser.push(read);
            while let Some(frame) = parser.next_frame().unwrap() {
                events += usize::from(parsed(frame));
            }
        }
        let reads_wall = wall.elapsed();
        assert_eq!(events, N);

        let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / N as f64;
        println!(
            "{what} ({} bytes/event): {:.2} µs/event wall, {} CPU ({:.0} events/s wall); \
             via 64 KiB reads {:.2} µs/event wall",
            fixture.len(),
            per(one_wall),
            one_cpu.map_or("n/a".into(), |d| format!("{:.2} µs/event", per(d))),
            N as f64 / one_wall.as_secs_f64(),
            per(reads_wall),
        );
    }
}

/// Whether `frame` is an event, parsed as downstream will when a hook wants it.
fn parsed(frame: Frame) -> bool {
    match frame {
        Frame::Event(raw) => std::hint::black_box(parse(raw)).is_ok(),
        _ => false,
    }
}

/// What any parser producing an [`Event`] pays for the fixture's headers: two strings and a map
/// insert each, with the text already split. Tells the parser's own cost from the map's.
fn measure_event_map_floor() {
    const N: usize = 50_000;
    let event = only_event(CHANNEL_ANSWER_PLAIN);
    let pairs: Vec<(String, String)> =
        event.0.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect();
    let (wall, cpu) = (std::time::Instant::now(), thread_cpu());
    for _ in 0..N {
        let mut map = serde_json::Map::with_capacity(pairs.len());
        for (name, value) in &pairs {
            map.insert(name.as_str().to_owned(), Value::String(value.as_str().to_owned()));
        }
        std::hint::black_box(Event(map));
    }
    let cpu = thread_cpu().zip(cpu).map(|(b, a)| b - a);
    println!(
        "map floor for {} headers: {:.2} µs/event wall, {} CPU",
        pairs.len(),
        wall.elapsed().as_secs_f64() * 1e6 / N as f64,
        cpu.map_or("n/a".into(), |d| format!("{:.2} µs/event", d.as_secs_f64() * 1e6 / N as f64)),
    );
}
