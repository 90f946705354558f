//! ESL frame parsing: bytes read from FreeSWITCH's event socket in, [`Frame`]s out.
//!
//! Pure and incremental: no I/O, no runtime. Reads may split a frame anywhere or carry several
//! frames; state between calls remembers how far the header scan got, so each byte is looked at a
//! bounded number of times however the stream is chopped.
//!
//! Wire format (mod_event_socket): header lines `Name: value` up to a blank line, then exactly
//! `Content-Length` bytes of body when that header is present. Outer header values are sent raw.
//! A `text/event-plain` body is itself a header block (values percent-encoded by
//! `switch_url_encode`), then, when the event has a body, its own `Content-Length`, a blank
//! line and the body.

mod plain;
#[cfg(test)]
mod tests;

use memchr::memchr;

use super::{EventError, Incoming};

/// The largest frame (headers and body) read. FreeSWITCH has no such limit: an event with a
/// huge body (a BACKGROUND_JOB with a long command output) is [skipped](Frame::Oversized),
/// without buffering it, and the stream goes on.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;
/// A frame that declares more than this (1 GiB) is garbage (a corrupt stream or the wrong
/// peer): skipping it would ignore the stream for good, so the connection is dropped.
pub const MAX_SKIPPED: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The greeting: the server wants `auth <password>`.
    AuthRequest,
    /// `Reply-Text` of a command's answer: `+OK accepted`, `-ERR invalid`, ...
    CommandReply {
        reply: String,
    },
    ApiResponse {
        body: String,
    },
    /// `text/event-json` or `text/event-plain`, as it came: see [`RawEvent`].
    Event(RawEvent),
    /// The server is closing the connection; the body says why. With `linger`
    /// (`Content-Disposition: linger`, sent only to a socket that controls a call and asked to
    /// linger) events still follow until the linger time runs out; otherwise nothing does.
    DisconnectNotice {
        body: String,
        linger: bool,
    },
    /// `log/data`, `text/rude-rejection` and anything newer: surfaced so the caller can count
    /// or log it, body dropped.
    Other {
        content_type: String,
    },
    /// A frame of `size` bytes, over [`MAX_FRAME`] (and at most [`MAX_SKIPPED`]), given as soon
    /// as its head is read. [`Parser`] skips its body as it arrives, unbuffered; a
    /// [`FrameDecoder`] caller skips `size` bytes from where the frame began.
    Oversized {
        content_type: String,
        size: u64,
    },
}

/// An event frame's body as it came off the socket, not yet looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    plain: bool,
    body: Vec<u8>,
}

impl RawEvent {
    /// The event for the router: JSON stays text with its routing headers read (see
    /// [`Incoming`]), `text/event-plain` is parsed. A JSON body that does not parse costs only
    /// its own event: the stream goes on, which matters because FreeSWITCH does not replay the
    /// events sent while a client reconnects. A plain body always gives an event.
    pub fn into_incoming(self) -> Result<Incoming, EslError> {
        if self.plain {
            Ok(Incoming::Event(plain::parse(&self.body)))
        } else {
            Incoming::from_json(self.body).map_err(EslError::BadEventJson)
        }
    }
}

/// The frame decoder's errors (frame too large, bad header line, bad `Content-Length`) leave no
/// way to find the next frame: the caller reconnects. [`EslError::BadEventJson`] comes from
/// [`RawEvent::into_incoming`] and costs only that event.
#[derive(Debug, thiserror::Error)]
pub enum EslError {
    #[error("ESL frame head runs past {MAX_FRAME} bytes without ending")]
    HeadTooLarge,
    #[error("ESL frame of {size} bytes: more than the {MAX_SKIPPED} bytes any FreeSWITCH frame has")]
    FrameTooLarge { size: u64 },
    /// The line is not in the message, which `/health` shows without a token: after a frame
    /// boundary is lost it is a piece of an event. The log has it (`detail`).
    #[error("ESL header line is not `Name: value` (the frame boundary is lost, or this is not FreeSWITCH)")]
    BadHeaderLine { line: String },
    #[error("ESL Content-Length is not a byte count: {value:?}")]
    BadContentLength { value: String },
    #[error("text/event-json body: {0}")]
    BadEventJson(#[source] EventError),
}

/// Finds frames at the front of a buffer the caller owns (a `Vec`, a `BytesMut`): the form a
/// tokio-util `Decoder` wants, with no second copy of the stream.
///
/// Contract between calls: `buf` starts where the previous frame ended, i.e. after `Some((_,
/// used))` the caller drops exactly `used` bytes from the front (for a [`Frame::Oversized`],
/// `size` bytes in all, as they arrive: `used` is only its head), and otherwise it only
/// appends. Breaking it gives wrong frames or errors, never a panic.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    /// Start of the current frame's first header line, past any blank lines before it (seen
    /// between frames in the wild, and harmless).
    head_start: usize,
    /// Start of the header line being scanned.
    line_start: usize,
    /// Bytes already searched for `\n`, so a line split across reads is not searched again.
    scanned: usize,
    /// Set once the blank line is seen: the headers are parsed once, then we wait for the body.
    head: Option<Head>,
}

#[derive(Debug)]
struct Head {
    kind: Kind,
    body_start: usize,
    body_len: usize,
}

#[derive(Debug)]
enum Kind {
    AuthRequest,
    CommandReply(String),
    ApiResponse,
    EventJson,
    EventPlain,
    DisconnectNotice { linger: bool },
    Other(String),
    Oversized { content_type: String, size: u64 },
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next complete frame at the front of `buf` and how many bytes it took, or `None` until
    /// more bytes arrive. An error leaves the stream unreadable.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Frame, usize)>, EslError> {
        if self.scanned > buf.len() {
            // The caller broke the contract (the buffer shrank): start over rather than slice
            // out of bounds.
            *self = Self::default();
        }
        let head = match self.head.take() {
            Some(head) => head,
            None => match self.scan_head(buf)? {
                Some(head) => head,
                None => return Ok(None),
            },
        };
        let end = head.body_start + head.body_len;
        // An oversized frame is given without its body, which the caller skips.
        let (body, used) = match head.kind {
            Kind::Oversized { .. } => (&[][..], head.body_start),
            _ => match buf.get(head.body_start..end) {
                Some(body) => (body, end),
                None => {
                    self.head = Some(head);
                    return Ok(None);
                }
            },
        };
        let frame = build(head.kind, body);
        *self = Self::default();
        Ok(Some((frame, used)))
    }

    /// Looks for the blank line ending the header block, resuming where the last call stopped;
    /// parses the block once found.
    fn scan_head(&mut self, buf: &[u8]) -> Result<Option<Head>, EslError> {
        // Never search past the limit: garbage without newlines fails at MAX_FRAME bytes instead
        // of being buffered forever.
        let limit = buf.len().min(MAX_FRAME);
        while let Some(i) = memchr(b'\n', &buf[self.scanned..limit]) {
            let nl = self.scanned + i;
            self.scanned = nl + 1;
            let line = &buf[self.line_start..nl];
            if !line.is_empty() && line != b"\r" {
                self.line_start = nl + 1;
            } else if self.line_start == self.head_start {
                self.head_start = nl + 1;
                self.line_start = nl + 1;
            } else {
                return parse_head(&buf[self.head_start..self.line_start], nl + 1).map(Some);
            }
        }
        self.scanned = limit;
        if buf.len() > MAX_FRAME {
            return Err(EslError::HeadTooLarge);
        }
        Ok(None)
    }
}

/// Owns the buffer as well as the decoder: push what the socket gave, then take frames until
/// `None`.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Bytes before this are consumed; dropped lazily so taking a frame never moves the rest.
    start: usize,
    /// Bytes of an [oversized](Frame::Oversized) frame's body still to come, dropped as pushed.
    skip: usize,
    decoder: FrameDecoder,
}

impl Parser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        let skipped = self.skip.min(bytes.len());
        self.skip -= skipped;
        let bytes = &bytes[skipped..];
        // Compact only when the consumed prefix is at least as long as what remains, so each
        // byte is moved at most once on average: no O(n²) on a busy socket.
        if self.start > 0 && self.start >= self.buf.len() - self.start {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next frame, or `None` until more bytes are pushed. An error leaves the stream
    /// unreadable.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, EslError> {
        let decoded = self.decoder.decode(&self.buf[self.start..]);
        if let Ok(Some((frame, used))) = &decoded {
            self.start += used;
            if let Frame::Oversized { size, .. } = frame {
                let body = *size as usize - used;
                let here = body.min(self.buf.len() - self.start);
                self.start += here;
                self.skip = body - here;
            }
        }
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        decoded.map(|found| found.map(|(frame, _)| frame))
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Parses the outer header block (`block` ends with its last line's `\n`; `body_start` is just
/// past the blank line).
fn parse_head(block: &[u8], body_start: usize) -> Result<Head, EslError> {
    let mut content_type: &[u8] = b"";
    let mut content_length = None;
    let mut reply_text: &[u8] = b"";
    let mut disposition: &[u8] = b"";
    for line in block.split(|&b| b == b'\n') {
        let line = strip_cr(line);
        if line.is_empty() {
            continue;
        }
        let (name, value) =
            split_header(line).filter(|(name, _)| is_header_name(name)).ok_or_else(|| bad_line(line))?;
        // Header names are case-insensitive in FreeSWITCH's own client; the first of a repeated
        // header wins, as there.
        if name.eq_ignore_ascii_case(b"Content-Type") && content_type.is_empty() {
            content_type = value.trim_ascii_end();
        } else if name.eq_ignore_ascii_case(b"Content-Length") && content_length.is_none() {
            let length = parse_length(value).ok_or_else(|| EslError::BadContentLength { value: text(value) })?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case(b"Reply-Text") && reply_text.is_empty() {
            reply_text = value;
        } else if name.eq_ignore_ascii_case(b"Content-Disposition") && disposition.is_empty() {
            disposition = value.trim_ascii_end();
        }
    }
    let body_len = content_length.unwrap_or(0);
    let size = (body_start as u64).saturating_add(body_len);
    if size > MAX_SKIPPED {
        return Err(EslError::FrameTooLarge { size });
    }
    let kind = match content_type.to_ascii_lowercase().as_slice() {
        _ if size > MAX_FRAME as u64 => Kind::Oversized { content_type: text(content_type), size },
        b"auth/request" => Kind::AuthRequest,
        b"command/reply" => Kind::CommandReply(text(reply_text)),
        b"api/response" => Kind::ApiResponse,
        b"text/event-json" => Kind::EventJson,
        b"text/event-plain" => Kind::EventPlain,
        b"text/disconnect-notice" => Kind::DisconnectNotice { linger: disposition.eq_ignore_ascii_case(b"linger") },
        _ => Kind::Other(text(content_type)),
    };
    Ok(Head { kind, body_start, body_len: body_len as usize })
}

fn build(kind: Kind, body: &[u8]) -> Frame {
    match kind {
        Kind::AuthRequest => Frame::AuthRequest,
        Kind::CommandReply(reply) => Frame::CommandReply { reply },
        Kind::ApiResponse => Frame::ApiResponse { body: text(body) },
        Kind::EventJson => Frame::Event(RawEvent { plain: false, body: body.to_vec() }),
        Kind::EventPlain => Frame::Event(RawEvent { plain: true, body: body.to_vec() }),
        Kind::DisconnectNotice { linger } => Frame::DisconnectNotice { body: text(body), linger },
        Kind::Other(content_type) => Frame::Other { content_type },
        Kind::Oversized { content_type, size } => Frame::Oversized { content_type, size },
    }
}

/// `Name: value` → (name, value without the spaces after the colon).
fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr(b':', line)?;
    let value = &line[colon + 1..];
    let skip = value.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    Some((&line[..colon], &value[skip..]))
}

/// What mod_event_socket puts before the colon (`Content-Length`, `Reply-Text`, `Job-UUID`): no
/// spaces, quotes or braces. A name with them is a piece of an event body, so the frame boundary
/// is lost (FreeSWITCH gave up a write halfway and sent the next frame): then every body after
/// it swallows the next frame's `Content-Length`, and only a new connection finds the frames
/// again. A JSON body starts with `{"`, so a stream of them fails at the latest on the second
/// frame after the cut, instead of rejecting every event that follows.
fn is_header_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| b.is_ascii_graphic() && !matches!(b, b'"' | b'{' | b'}'))
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Digits only (FreeSWITCH writes `%d`); saturates instead of overflowing so a huge number
/// reports as too large, not as garbage.
fn parse_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

fn bad_line(line: &[u8]) -> EslError {
    const SHOWN: usize = 120;
    EslError::BadHeaderLine { line: text(&line[..line.len().min(SHOWN)]) }
}

/// Text from the wire; invalid UTF-8 is replaced, not refused: a Latin-1 byte in a caller name
/// must not cost the connection.
fn text(bytes: &[u8]) -> String {
    // `from_utf8` first: it is many times faster than `from_utf8_lossy` on valid input.
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
