//! Fuzz target: bytes from a misbehaving event socket into the ESL `Parser`. It must never
//! panic, and how the bytes are chopped into reads must not change the frames it returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchhook::event::esl::{Frame, Parser};
use switchhook::event::{Event, Headers as _, Incoming};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose where the reads split, so the fuzzer explores chopping too.
    let (cuts, stream) = match data {
        [a, b, rest @ ..] => ((usize::from(*a), usize::from(*b)), rest),
        _ => return,
    };
    let whole = frames(&[stream]);
    let one = cuts.0.min(stream.len());
    let two = (one + cuts.1 * 7).min(stream.len());
    let mut reads = vec![&stream[..one], &stream[one..two]];
    // The rest in short reads: a frame split every few bytes, headers and body alike.
    reads.extend(stream[two..].chunks(1 + cuts.1 % 13));
    assert_eq!(whole, frames(&reads), "reads {one}, {two}, then {} bytes each", 1 + cuts.1 % 13);
});

/// The parsed event; for JSON kept as text, the routing headers read from it must be the ones
/// the full parse finds.
fn checked(incoming: Incoming) -> Option<Event> {
    let event = incoming.event().ok()?.into_owned();
    if let Incoming::Json(_) = &incoming {
        let headers = incoming.headers();
        for name in ["Event-Sequence", "Core-UUID", "Unique-ID"] {
            assert_eq!(headers.text(name), event.text(name), "{name}");
        }
        assert_eq!(headers.route_key(), event.route_key());
    }
    Some(event)
}

/// What the parser yields for these reads: frames in order, events peeked at and parsed, up
/// to the first framing error (after which the source reconnects).
fn frames(reads: &[&[u8]]) -> Vec<String> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for read in reads {
        parser.push(read);
        loop {
            match parser.next_frame() {
                Ok(Some(Frame::Event(raw))) => out.push(format!("{:?}", raw.into_incoming().map(checked))),
                Ok(Some(frame)) => out.push(format!("{frame:?}")),
                Ok(None) => break,
                Err(e) => {
                    out.push(format!("fatal: {e}"));
                    return out;
                }
            }
        }
    }
    out.push(format!("{} bytes left", parser.buffered()));
    out
}
