//! `${name}` templates for `rawBody`, `headers` and `auth` values, parsed once when a hook is stored.
//!
//! A placeholder names an event header: `${x}` reads `variable_x`, else `x`; `${a.b.c}` walks
//! into a nested object or array. In a JSON template (`rawBody`) each placeholder also remembers
//! whether it sits inside a string literal, so rendering can keep the body valid JSON whatever
//! the value holds.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// A template failed to parse; `offset` is the byte position of the bad `${`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed \"${{\" at byte {offset}")]
    Unclosed { offset: usize },
    #[error("empty \"${{}}\" at byte {offset}")]
    Empty { offset: usize },
    #[error("\"${{\" inside an escape sequence at byte {offset}")]
    InEscape { offset: usize },
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq)]
struct Var {
    /// The text between `${` and `}`, used for whole-name lookups such as `auth:body:token`.
    name: String,
    /// `name` split on `.`, for nested lookups.
    path: Vec<String>,
    /// Inside a JSON string literal (JSON templates only).
    in_string: bool,
}

/// Where a template's output goes, which decides how values are written into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Header values, query values: values are written as plain text.
    Text,
    /// `rawBody`: values inside string literals are JSON-escaped; values outside become JSON.
    Json,
}

/// A parsed template, ready to render against any lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    syntax: Syntax,
}

impl Template {
    pub fn parse(src: &str, syntax: Syntax) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut json = JsonState::default();
        let mut rest = src;
        let mut offset = 0;
        while let Some(start) = rest.find("${") {
            let (before, after) = rest.split_at(start);
            if syntax == Syntax::Json {
                json.advance(before);
                if json.inside_escape() {
                    return Err(TemplateError::InEscape { offset: offset + start });
                }
            }
            lit.push_str(before);
            let Some(end) = after.find('}') else {
                return Err(TemplateError::Unclosed { offset: offset + start });
            };
            let name = after[2..end].trim();
            if name.is_empty() {
                return Err(TemplateError::Empty { offset: offset + start });
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(Var {
                name: name.to_owned(),
                path: name.split('.').map(str::to_owned).collect(),
                in_string: syntax == Syntax::Json && json.in_string,
            }));
            offset += start + end + 1;
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self { parts, syntax })
    }

    /// Whether a placeholder's name starts with `prefix` (`auth:body:`).
    pub fn refers_to(&self, prefix: &str) -> bool {
        self.parts.iter().any(|part| matches!(part, Part::Var(var) if var.name.starts_with(prefix)))
    }

    /// The text of a template without placeholders, which renders the same for any event.
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Lit(text)] => Some(text),
            _ => None,
        }
    }

    /// Renders the template; `lookup` resolves the placeholders (see [`Lookup`]). Output stops
    /// growing once it passes [`MAX_RENDERED`].
    pub fn render(&self, lookup: &dyn Lookup) -> String {
        self.render_within(lookup, MAX_RENDERED)
    }

    /// [`Template::render`], stopping once the output passes `limit` bytes (by at most one
    /// value): a caller that must not send a cut text checks the length.
    pub fn render_within(&self, lookup: &dyn Lookup, limit: usize) -> String {
        let mut out = String::new();
        for part in &self.parts {
            if out.len() > limit {
                break;
            }
            match part {
                Part::Lit(text) => out.push_str(text),
                Part::Var(v) => {
                    let value = lookup.resolve(&v.name, &v.path);
                    match (self.syntax, v.in_string) {
                        (Syntax::Text, _) => write_text(value.as_ref(), &mut out),
                        (Syntax::Json, true) => write_escaped(value.as_ref(), &mut out),
                        (Syntax::Json, false) => write_json(value.as_ref(), &mut out),
                    }
                }
            }
        }
        out
    }
}

/// What templates may render beyond the size of the event they read. Each `${x}` copies its
/// value, so a short template over a large event could otherwise ask for gigabytes, and a
/// batch of events renders together before it is committed. Requests people write templates
/// for are a few KB; an event's values, each copied once, always fit.
pub const MAX_RENDERED: usize = 256 << 10;

/// Resolves placeholder names to values. Implemented by events (and by the auth variables
/// layered over them) so one renderer serves bodies, headers and the dry run.
pub trait Lookup {
    /// The value of `${name}`; `path` is `name` split on `.`.
    fn resolve(&self, name: &str, path: &[String]) -> Option<Value>;
}

/// No variables at all: every placeholder renders as missing. Used to validate templates.
pub struct Empty;

impl Lookup for Empty {
    fn resolve(&self, _: &str, _: &[String]) -> Option<Value> {
        None
    }
}

/// Walks `path` below `root` through objects and array indexes.
pub fn walk<'v>(root: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(root, |v, key| match v {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Advances the "inside a JSON string" state over literal template text.
/// Where a JSON template's literal text leaves off: inside a string or not, and inside an
/// escape sequence or not. A placeholder inside an escape (`"\${x}"`, `"\u${x}0041"`, or
/// between the halves of a surrogate pair) would render valid JSON when empty and break with a
/// value, so it is refused.
#[derive(Debug, Default)]
struct JsonState {
    in_string: bool,
    /// Characters still owed to an escape: 1 after a backslash, then 4 after `\u`.
    owed: u8,
    /// The hex digits of a `\u` escape read so far.
    hex: String,
    /// The last escape was a high surrogate, which needs its low half next.
    high_surrogate: bool,
}

impl JsonState {
    fn advance(&mut self, text: &str) {
        for c in text.chars() {
            if self.owed > 0 {
                if self.owed == 1 && self.hex.is_empty() && c == 'u' {
                    self.owed = 4;
                    self.hex.push('u');
                    continue;
                }
                self.owed -= 1;
                if self.hex.is_empty() {
                    self.high_surrogate = false;
                } else {
                    self.hex.push(c);
                    if self.owed == 0 {
                        let code = u16::from_str_radix(&self.hex[1..], 16).unwrap_or(0);
                        self.high_surrogate = (0xD800..0xDC00).contains(&code);
                        self.hex.clear();
                    }
                }
            } else if self.in_string && c == '\\' {
                self.owed = 1;
            } else {
                self.high_surrogate = false;
                if c == '"' {
                    self.in_string = !self.in_string;
                }
            }
        }
    }

    fn inside_escape(&self) -> bool {
        self.owed > 0 || self.high_surrogate
    }
}

/// Plain text: strings as they are, other scalars in JSON form, missing and null as nothing.
fn write_text(value: Option<&Value>, out: &mut String) {
    if let Some(value) = value {
        out.push_str(&plain_text(value));
    }
}

/// A value as the original's JavaScript turned it into text, which templates write and filters
/// test: strings as they are, other scalars in JSON form, null as nothing, an array of scalars
/// as their text joined by commas (`vip,2`); other arrays and objects are their JSON text.
pub fn plain_text(value: &Value) -> Cow<'_, str> {
    match value {
        Value::Null => Cow::Borrowed(""),
        Value::String(s) => Cow::Borrowed(s),
        Value::Array(items) if items.iter().all(|item| !item.is_array() && !item.is_object()) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&plain_text(item));
            }
            Cow::Owned(out)
        }
        other => Cow::Owned(other.to_string()),
    }
}

/// Inside a JSON string literal: the text form, JSON-escaped, without the quotes.
fn write_escaped(value: Option<&Value>, out: &mut String) {
    let mut text = String::new();
    write_text(value, &mut text);
    let quoted = Value::String(text).to_string();
    out.push_str(&quoted[1..quoted.len() - 1]);
}

/// Outside a string literal: a JSON value. Strings that are JSON text (`12`, `true`, an object
/// or array a FreeSWITCH variable holds as text) keep their meaning, as the original's plain
/// substitution gave them; other strings are quoted, and missing values become `null`, so the
/// body stays valid JSON whatever the event holds.
fn write_json(value: Option<&Value>, out: &mut String) {
    match value {
        None => out.push_str("null"),
        Some(Value::String(s)) if is_json_text(s) => out.push_str(s),
        Some(other) => {
            let _ = write!(out, "{other}");
        }
    }
}

fn is_json_text(s: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Map(Value);
    impl Lookup for Map {
        fn resolve(&self, name: &str, path: &[String]) -> Option<Value> {
            self.0.get(name).or_else(|| walk(&self.0, path)).cloned()
        }
    }

    fn render(src: &str, syntax: Syntax, vars: Value) -> String {
        Template::parse(src, syntax).unwrap().render(&Map(vars))
    }

    #[test]
    fn text_substitutes_and_leaves_missing_empty() {
        let out = render("Bearer ${tok}/${none}/$x {y}", Syntax::Text, json!({"tok": "abc"}));
        assert_eq!(out, "Bearer abc//$x {y}");
    }

    #[test]
    fn json_escapes_values_inside_strings() {
        let out =
            render(r#"{"name": "${name}", "n": ${n}}"#, Syntax::Json, json!({"name": "Jo \"JJ\"\nSmith", "n": "12"}));
        assert_eq!(out, r#"{"name": "Jo \"JJ\"\nSmith", "n": 12}"#);
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["name"], "Jo \"JJ\"\nSmith");
    }

    #[test]
    fn json_quotes_text_and_nulls_missing_outside_strings() {
        let out = render(r#"{"a": ${a}, "b": ${b}, "c": ${c}}"#, Syntax::Json, json!({"a": "x y", "c": true}));
        assert_eq!(out, r#"{"a": "x y", "b": null, "c": true}"#);
    }

    /// Outside a string literal a value that is JSON text (an object or array a FreeSWITCH
    /// variable holds as text, a quoted string) is that JSON, as the original's plain
    /// substitution made it; other text is still quoted.
    #[test]
    fn json_text_outside_strings_is_written_as_json() {
        let vars = json!({"meta": "{\"crm_id\": 5}", "list": "[1, \"a\"]", "s": "\"x\"", "q": "{broken", "e": ""});
        let out = render(r#"{"meta": ${meta}, "list": ${list}, "s": ${s}, "q": ${q}, "e": ${e}}"#, Syntax::Json, vars);
        assert_eq!(out, r#"{"meta": {"crm_id": 5}, "list": [1, "a"], "s": "x", "q": "{broken", "e": ""}"#);
    }

    /// An array of scalars in text, or inside a JSON string, is its items joined by commas, as
    /// the original's JavaScript wrote it (`vip,2`); other arrays and objects are JSON text, and
    /// outside a string an array stays an array.
    #[test]
    fn arrays_of_scalars_in_text_are_joined_by_commas() {
        let vars = json!({"tags": ["vip", 2, true, null, "x"], "objs": [{"a": 1}], "none": []});
        assert_eq!(render("${tags}|${objs}|${none}", Syntax::Text, vars.clone()), r#"vip,2,true,,x|[{"a":1}]|"#);
        let out = render(r#"{"t": "${tags}", "v": ${tags}}"#, Syntax::Json, vars);
        assert_eq!(out, r#"{"t": "vip,2,true,,x", "v": ["vip",2,true,null,"x"]}"#);
    }

    #[test]
    fn json_tracks_escaped_quotes_in_literals() {
        let t = Template::parse(r#"{"a\"${x}": "${y}"}"#, Syntax::Json).unwrap();
        let out = t.render(&Map(json!({"x": "1", "y": "q\""})));
        assert_eq!(out, r#"{"a\"1": "q\""}"#);
    }

    #[test]
    fn nested_paths_walk_objects_and_arrays() {
        let out = render("${a.b.0}-${a.c}", Syntax::Text, json!({"a": {"b": [7], "c": {"d": 1}}}));
        assert_eq!(out, r#"7-{"d":1}"#);
    }

    #[test]
    fn placeholders_inside_escape_sequences_are_refused() {
        assert_eq!(Template::parse(r#"{"a": "\${x}"}"#, Syntax::Json), Err(TemplateError::InEscape { offset: 8 }));
        assert_eq!(Template::parse(r#"{"a": "\u${x}0041"}"#, Syntax::Json), Err(TemplateError::InEscape { offset: 9 }));
        assert!(Template::parse(r#"{"a": "\u0041${x}\\${y}"}"#, Syntax::Json).is_ok());
        assert_eq!(
            Template::parse(r#"{"a": "\ud83d${x}\ude00"}"#, Syntax::Json),
            Err(TemplateError::InEscape { offset: 13 })
        );
        assert!(Template::parse(r#"{"a": "\ud83d\ude00${x}"}"#, Syntax::Json).is_ok());
        assert!(Template::parse(r#"\${x}"#, Syntax::Text).is_ok(), "text templates have no escapes");
    }

    #[test]
    fn reports_unclosed_and_empty_placeholders() {
        assert_eq!(Template::parse("ab${x", Syntax::Text), Err(TemplateError::Unclosed { offset: 2 }));
        assert_eq!(Template::parse("${a}${ }", Syntax::Text), Err(TemplateError::Empty { offset: 4 }));
    }

    #[test]
    fn static_templates_render_verbatim() {
        let t = Template::parse("application/json", Syntax::Text).unwrap();
        assert_eq!(t.render(&Empty), "application/json");
    }
}
