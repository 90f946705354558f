//! Property tests: random and mutated input never panics or stalls; any chopping of a valid
//! stream gives the frames of a single push.

use proptest::prelude::*;

use super::*;

/// Takes frames until `None` or an error, parsing events as a caller would. Every frame uses
/// at least one byte, so more of them than bytes would mean the parser stopped making progress.
fn drain(parser: &mut Parser, pushed: usize) {
    for _ in 0..=pushed {
        match parser.next_frame() {
            Ok(Some(Frame::Event(raw))) => drop(raw.into_incoming().map(|e| e.event().is_ok())),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("more frames than bytes: no progress");
}

/// Pieces that make random input look like ESL often enough to reach the deep paths.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"Content-Length: ".to_vec()),
        Just(b"Content-Type: text/event-plain\n".to_vec()),
        Just(b"Content-Type: text/event-json\n".to_vec()),
        Just(b"Content-Type: command/reply\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b": ".to_vec()),
        Just(b"%".to_vec()),
        Just(b"ARRAY::a|:b".to_vec()),
        Just(b"_undef_".to_vec()),
        (0u32..200).prop_map(|n| n.to_string().into_bytes()),
        any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic_or_stall(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        tokens in proptest::collection::vec(token(), 0..64),
        split in any::<prop::sample::Index>(),
    ) {
        for input in [bytes, tokens.concat()] {
            let at = split.index(input.len() + 1);
            let mut parser = Parser::new();
            parser.push(&input[..at]);
            drain(&mut parser, input.len());
            parser.push(&input[at..]);
            drain(&mut parser, input.len());
        }
    }

    #[test]
    fn mutated_valid_streams_never_panic_or_stall(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        chunk in 1usize..600,
    ) {
        let mut stream = ALL.concat();
        for (at, byte) in edits {
            let at = at.index(stream.len());
            stream[at] = byte;
        }
        stream.truncate(cut.index(stream.len() + 1));
        let mut parser = Parser::new();
        for piece in stream.chunks(chunk) {
            parser.push(piece);
            drain(&mut parser, stream.len());
        }
    }

    #[test]
    fn any_chunking_gives_the_same_frames(sizes in proptest::collection::vec(1usize..700, 1..64)) {
        let stream = ALL.concat();
        let mut chunks = Vec::new();
        let mut rest = &stream[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        prop_assert_eq!(parse_chunks(&chunks), frames_of(&stream));
    }
}
