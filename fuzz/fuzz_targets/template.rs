//! Fuzz target: hook templates. Parsing and rendering never panic, in either syntax; and a
//! `rawBody` that validation accepts (it renders to JSON with no variables) renders to JSON
//! for any event, which is what `src/hook/template.rs` promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use switchhook::event::Event;
use switchhook::hook::template::{Empty, Lookup, Syntax, Template};

/// Every placeholder resolves to the same value, which reaches the odd corners (quotes,
/// backslashes, numbers) faster than the fuzzer finds a JSON event that names them.
struct Every(Value);

impl Lookup for Every {
    fn resolve(&self, _: &str, _: &[String]) -> Option<Value> {
        Some(self.0.clone())
    }
}

fuzz_target!(|data: &[u8]| {
    // The template, then after a NUL an event (or text that every variable takes).
    let (src, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let src = String::from_utf8_lossy(src);
    let mut lookups: Vec<Box<dyn Lookup>> = [json!("a"), json!("q\"b\\s\n"), json!("12"), json!([1, {"k": "v"}])]
        .into_iter()
        .map(|v| Box::new(Every(v)) as Box<dyn Lookup>)
        .collect();
    lookups.push(Box::new(Every(Value::String(String::from_utf8_lossy(rest).into_owned()))));
    if let Ok(event) = Event::from_json(rest) {
        lookups.push(Box::new(event));
    }
    if let Ok(v) = serde_json::from_slice::<Value>(rest) {
        lookups.push(Box::new(Every(v)));
    }

    if let Ok(t) = Template::parse(&src, Syntax::Text) {
        for lookup in &lookups {
            t.render(lookup.as_ref());
        }
    }
    let Ok(t) = Template::parse(&src, Syntax::Json) else { return };
    // The check `hook::doc` makes before it stores a rawBody.
    if !is_json(&t.render(&Empty)) {
        return;
    }
    for lookup in &lookups {
        let out = t.render(lookup.as_ref());
        assert!(is_json(&out) || too_deep(&out), "template {src:?} rendered {out:?}");
    }
});

fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// serde_json stops at 128 levels: a nested value placed in a nested template can pass that
/// though each was within it alone. Valid JSON still, so not a failure of the property.
fn too_deep(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_err_and(|e| e.to_string().contains("recursion limit"))
}
