//! Hook ids: 24 lower-case hex digits shaped like a MongoDB ObjectId, so existing clients that
//! validate or sort them keep working: 4 bytes of Unix seconds, 5 random bytes fixed per
//! process, then a 3-byte counter.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Generates a new id.
pub fn new_id() -> String {
    static PROCESS: OnceLock<([u8; 5], AtomicU32)> = OnceLock::new();
    let (random, counter) = PROCESS.get_or_init(|| (rand::random(), AtomicU32::new(rand::random())));
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as u32;
    let count = counter.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&secs.to_be_bytes());
    bytes[4..9].copy_from_slice(random);
    bytes[9..].copy_from_slice(&count.to_be_bytes()[1..]);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts an id from a URL: 24 hex digits of either case, returned in lower case.
pub fn parse_id(raw: &str) -> Option<String> {
    (raw.len() == 24 && raw.bytes().all(|b| b.is_ascii_hexdigit())).then(|| raw.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_24_lower_hex_and_unique() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
    }

    #[test]
    fn parse_id_accepts_only_24_hex_digits() {
        assert_eq!(parse_id("598035B7A7EC15000C40926E").as_deref(), Some("598035b7a7ec15000c40926e"));
        assert_eq!(parse_id("598035b7a7ec15000c40926"), None);
        assert_eq!(parse_id("598035b7a7ec15000c40926g"), None);
        assert_eq!(parse_id("x"), None);
    }
}
