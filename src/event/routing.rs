//! mod_amqp routing keys: how FreeSWITCH names an event on a topic exchange, and the binding
//! keys that select the events a hook needs.
//!
//! A key is the `format_fields` joined by `.`: `#text` is the literal text, any other field is
//! that header's value with `[A-Za-z0-9-~_]` kept, `.` as `%2E`, space as `+` and every other
//! byte as `%XX` (a value that is only `#` or `*` is kept as it is); a missing header gives an
//! empty word.

use std::fmt::Write as _;

use super::Event;

/// mod_amqp's default `format_fields`.
pub const DEFAULT_FORMAT: &str = "#FreeSWITCH,FreeSWITCH-Hostname,Event-Name,Event-Subclass,Unique-ID";

/// Webitel's `format_fields` (its engine's `FS_ROUTING`): the event name is the second word. The
/// engine publishes its own events with this shape: `.CUSTOM.engine%3A%3Adialer_member_end..`.
pub const WEBITEL_FORMAT: &str =
    "FreeSWITCH-Hostname,Event-Name,Event-Subclass,Channel-Presence-ID,Channel-Presence-Data";

/// The fields of a `format_fields` setting.
pub fn fields(format: &str) -> Vec<String> {
    format.split(',').map(|f| f.trim().to_owned()).collect()
}

/// One routing-key word, encoded as mod_amqp encodes header values.
pub fn encode_word(value: &str) -> String {
    encode(value, false)
}

/// [`encode_word`] as mod_amqp's `amqp_util_encode` runs where `char` is signed (x86): a byte
/// over 0x7F is printed from a negative number, its high digit as `'0'` plus -8..=-1, one of
/// `()*+,-./` (`é`, bytes C3 A9, is `%,3%*9`; a `.` there splits the word). As long as
/// [`encode_word`], so [`longest_binding_key`] holds for it.
pub fn encode_word_signed(value: &str) -> String {
    encode(value, true)
}

fn encode(value: &str, signed: bool) -> String {
    // mod_amqp copies these as they are. In a binding the word is then a wildcard: the queue
    // gets more than the hook needs, and the router, reading the name from the body, drops it.
    if value == "#" || value == "*" {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'~' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            0x80.. if signed => {
                let high = b'0'.wrapping_add_signed(b as i8 >> 4);
                let _ = write!(out, "%{}{:X}", high as char, b & 0x0F);
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The routing key mod_amqp gives `event` under `fields`.
pub fn routing_key(event: &Event, fields: &[impl AsRef<str>]) -> String {
    let words: Vec<String> = fields
        .iter()
        .map(|field| match field.as_ref().strip_prefix('#') {
            Some(literal) => literal.to_owned(),
            None => event.text(field.as_ref()).map(|v| encode_word(&v)).unwrap_or_default(),
        })
        .collect();
    words.join(".")
}

/// AMQP's limit on a routing or binding key (a short string), in bytes. mod_amqp cuts its keys
/// at this length; a longer binding key is refused by the protocol.
pub const MAX_KEY_BYTES: usize = 255;

/// The binding key that selects a hook event (`CHANNEL_ANSWER`, `CUSTOM->callcenter::info`) on
/// an exchange whose publishers build keys from `fields`: `#.CHANNEL_ANSWER.#`, or
/// `#.CUSTOM.callcenter%3A%3Ainfo.#` when `Event-Subclass` follows `Event-Name` in `fields`
/// (in mod_amqp's default layout and in Webitel's). Without an `Event-Name` field the key
/// cannot select, so it is `#`.
///
/// `#` matches zero or more words, so the key does not depend on where the event name sits:
/// FreeSWITCH's `FreeSWITCH.fs1.CUSTOM.engine%3A%3Adialer_member_end.<uuid>` and the
/// contact-center engine's `.CUSTOM.engine%3A%3Adialer_member_end..` on the same exchange both
/// match, and so do keys mod_amqp cut short at [`MAX_KEY_BYTES`] after the name.
///
/// Trade-off: the name may match any word, so a message whose hostname, Unique-ID or presence
/// word happens to equal the encoded name (a FreeSWITCH host called `CHANNEL_ANSWER`) reaches
/// the queue too. The router reads the event name from the body and drops such a message, so
/// the cost is broker traffic, never a wrong delivery.
pub fn binding_key(hook_event: &str, fields: &[String]) -> String {
    key_of(hook_event, fields, encode_word)
}

/// The keys to bind for `hook_event`: [`binding_key`], and where they differ, the key mod_amqp
/// published before it encoded words (older FreeSWITCH): values as they are, `.` as `_`
/// (`#.CUSTOM.callcenter::info.#`), and the key of a name with bytes over 0x7F as mod_amqp
/// built for x86 encodes them (see [`encode_word_signed`]). A queue bound by all of them gets
/// the event from any version and build.
pub fn binding_keys(hook_event: &str, fields: &[String]) -> Vec<String> {
    let mut keys = vec![binding_key(hook_event, fields)];
    for key in
        [key_of(hook_event, fields, |word| word.replace('.', "_")), key_of(hook_event, fields, encode_word_signed)]
    {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

fn key_of(hook_event: &str, fields: &[String], word: fn(&str) -> String) -> String {
    if !fields.iter().any(|f| f == "Event-Name") {
        return "#".to_owned();
    }
    let subclass_follows = fields.windows(2).any(|w| w[0] == "Event-Name" && w[1] == "Event-Subclass");
    match hook_event.split_once("->") {
        Some((name, sub)) if subclass_follows => format!("#.{}.{}.#", word(name), word(sub)),
        Some((name, _)) => format!("#.{}.#", word(name)),
        None => format!("#.{}.#", word(hook_event)),
    }
}

/// The longest binding key [`binding_key`] gives `hook_event` under any `format_fields`: the
/// one with the subclass in it. A hook event is usable on RabbitMQ only if this fits
/// [`MAX_KEY_BYTES`].
pub fn longest_binding_key(hook_event: &str) -> String {
    binding_key(hook_event, &fields("Event-Name,Event-Subclass"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: serde_json::Value) -> Event {
        Event(v.as_object().unwrap().clone())
    }

    #[test]
    fn words_are_encoded_like_mod_amqp() {
        assert_eq!(encode_word("engine::dialer_member_end"), "engine%3A%3Adialer_member_end");
        assert_eq!(encode_word("fs1.example.com"), "fs1%2Eexample%2Ecom");
        assert_eq!(encode_word("a b~c-d_e"), "a+b~c-d_e");
        assert_eq!(encode_word("1000@x"), "1000%40x");
        assert_eq!(encode_word("é"), "%C3%A9");
    }

    #[test]
    fn routing_keys_follow_format_fields() {
        let fields = fields(DEFAULT_FORMAT);
        let answer = event(
            json!({"Event-Name": "CHANNEL_ANSWER", "FreeSWITCH-Hostname": "fs1.example.com", "Unique-ID": "u-1"}),
        );
        assert_eq!(routing_key(&answer, &fields), "FreeSWITCH.fs1%2Eexample%2Ecom.CHANNEL_ANSWER..u-1");
        let webitel =
            self::fields("FreeSWITCH-Hostname,Event-Name,Event-Subclass,Channel-Presence-ID,Channel-Presence-Data");
        let member =
            event(json!({"Event-Name": "CUSTOM", "Event-Subclass": "engine::dialer_member_end", "currentProbe": 2}));
        assert_eq!(routing_key(&member, &webitel), ".CUSTOM.engine%3A%3Adialer_member_end..");
    }

    #[test]
    fn binding_keys_select_the_event_in_any_word() {
        let fields = fields(DEFAULT_FORMAT);
        assert_eq!(binding_key("CHANNEL_ANSWER", &fields), "#.CHANNEL_ANSWER.#");
        assert_eq!(binding_key("CUSTOM->callcenter::info", &fields), "#.CUSTOM.callcenter%3A%3Ainfo.#");
        assert_eq!(binding_key("CUSTOM", &fields), "#.CUSTOM.#");
        // Webitel's layout gives the same keys: one exchange can carry both.
        let webitel = self::fields(WEBITEL_FORMAT);
        assert_eq!(
            binding_key("CUSTOM->engine::dialer_member_end", &webitel),
            "#.CUSTOM.engine%3A%3Adialer_member_end.#"
        );
        assert_eq!(binding_key("CHANNEL_ANSWER", &webitel), "#.CHANNEL_ANSWER.#");
        // A subclass that is not the word after the name cannot narrow the key.
        let apart = self::fields("Event-Subclass,Unique-ID,Event-Name");
        assert_eq!(binding_key("CUSTOM->callcenter::info", &apart), "#.CUSTOM.#");
        assert_eq!(binding_key("CUSTOM->callcenter::info", &self::fields("Event-Name")), "#.CUSTOM.#");
        assert_eq!(binding_key("CHANNEL_ANSWER", &self::fields("#x,Unique-ID")), "#");
    }

    #[test]
    fn subclasses_are_bound_as_every_mod_amqp_version_names_them() {
        let fields = fields(DEFAULT_FORMAT);
        assert_eq!(binding_keys("CHANNEL_ANSWER", &fields), ["#.CHANNEL_ANSWER.#"]);
        assert_eq!(
            binding_keys("CUSTOM->callcenter::info", &fields),
            ["#.CUSTOM.callcenter%3A%3Ainfo.#", "#.CUSTOM.callcenter::info.#"]
        );
        assert_eq!(binding_keys("CUSTOM->a.b", &fields), ["#.CUSTOM.a%2Eb.#", "#.CUSTOM.a_b.#"]);
        let old = "FreeSWITCH.fs1_example_com.CUSTOM.callcenter::info.u-1";
        assert!(binding_keys("CUSTOM->callcenter::info", &fields).iter().any(|k| topic_match(k, old)));
    }

    /// Audit: mod_amqp built for x86, where `char` is signed, prints a byte over 0x7F from a
    /// negative number (`é` as `%,3%*9`, not `%C3%A9`), so a hook on a custom event whose
    /// subclass is not ASCII never got its events from it.
    #[test]
    fn subclasses_beyond_ascii_are_bound_as_mod_amqp_on_x86_encodes_them() {
        assert_eq!(encode_word_signed("café::naïve"), "caf%,3%*9%3A%3Ana%,3%*Fve");
        assert_eq!(encode_word_signed("a.b c@d~"), encode_word("a.b c@d~"));
        // 日 is E6 97 A5: a high digit of -2 prints `.`, which splits the word.
        assert_eq!(encode_word_signed("日"), "%.6%)7%*5");
        let fields = fields(DEFAULT_FORMAT);
        for (name, subclass) in [("CUSTOM->café::naïve", "café::naïve"), ("CUSTOM->日本::x", "日本::x")] {
            let event = Event(
                json!({"Event-Name": "CUSTOM", "Event-Subclass": subclass, "FreeSWITCH-Hostname": "fs1", "Unique-ID": "u"})
                    .as_object()
                    .unwrap()
                    .clone(),
            );
            let x86 = routing_key(&event, &fields).replace(&encode_word(subclass), &encode_word_signed(subclass));
            let keys = binding_keys(name, &fields);
            assert!(keys.iter().any(|k| topic_match(k, &x86)), "{keys:?} should match {x86}");
            assert!(keys.iter().all(|k| k.len() <= longest_binding_key(name).len()), "{keys:?}");
        }
        assert_eq!(binding_keys("CUSTOM->callcenter::info", &fields).len(), 2);
    }

    /// Audit: mod_amqp's `amqp_util_encode` copies a value that is exactly `#` or `*` as it
    /// is; the binding for a subclass so named looked for `%2A` and never matched.
    #[test]
    fn a_value_that_is_a_lone_wildcard_is_kept_as_mod_amqp_keeps_it() {
        assert_eq!((encode_word("*"), encode_word("#")), ("*".to_owned(), "#".to_owned()));
        assert_eq!((encode_word("**"), encode_word("#x")), ("%2A%2A".to_owned(), "%23x".to_owned()));
        let published = "FreeSWITCH.fs1.CUSTOM.*.u-1";
        let keys = binding_keys("CUSTOM->*", &fields(DEFAULT_FORMAT));
        assert!(keys.iter().any(|k| topic_match(k, published)), "{keys:?} should match {published}");
    }

    /// What RabbitMQ's topic exchange does with a binding key and a routing key.
    fn topic_match(binding: &str, key: &str) -> bool {
        fn go(b: &[&str], k: &[&str]) -> bool {
            match b.split_first() {
                None => k.is_empty(),
                Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
                Some((w, rest)) => k.split_first().is_some_and(|(kw, krest)| (*w == "*" || w == kw) && go(rest, krest)),
            }
        }
        go(&binding.split('.').collect::<Vec<_>>(), &key.split('.').collect::<Vec<_>>())
    }

    #[test]
    fn binding_keys_match_both_layouts_and_keys_cut_short() {
        let key = binding_key("CUSTOM->engine::dialer_member_end", &fields(DEFAULT_FORMAT));
        for routed in [
            "FreeSWITCH.fs1%2Eexample%2Ecom.CUSTOM.engine%3A%3Adialer_member_end.u-1",
            ".CUSTOM.engine%3A%3Adialer_member_end..",
            "FreeSWITCH.fs1.CUSTOM.engine%3A%3Adialer_member_end",
        ] {
            assert!(topic_match(&key, routed), "{key} should match {routed}");
        }
        for other in ["FreeSWITCH.fs1.CUSTOM.engine%3A%3Adialer_member_start.u-1", ".CUSTOM.callcenter%3A%3Ainfo.."] {
            assert!(!topic_match(&key, other), "{key} should not match {other}");
        }
        let answer = binding_key("CHANNEL_ANSWER", &fields(DEFAULT_FORMAT));
        assert!(topic_match(&answer, "FreeSWITCH.fs1.CHANNEL_ANSWER..u-1"));
        assert!(topic_match(&answer, "fs1.CHANNEL_ANSWER..1000%40x.d"));
        assert!(!topic_match(&answer, "FreeSWITCH.fs1.CHANNEL_HANGUP..u-1"));
        // The trade-off: a hostname word equal to the name matches; the router drops it.
        assert!(topic_match(&answer, "FreeSWITCH.CHANNEL_ANSWER.CHANNEL_HANGUP..u-1"));
    }

    #[test]
    fn the_longest_binding_key_holds_the_subclass() {
        assert_eq!(longest_binding_key("CHANNEL_ANSWER"), "#.CHANNEL_ANSWER.#");
        assert_eq!(longest_binding_key("CUSTOM->a::b"), "#.CUSTOM.a%3A%3Ab.#");
        for format in [DEFAULT_FORMAT, WEBITEL_FORMAT, "Event-Name", "#x"] {
            let name = "CUSTOM->x::y.z";
            assert!(binding_key(name, &fields(format)).len() <= longest_binding_key(name).len(), "{format}");
        }
    }
}
