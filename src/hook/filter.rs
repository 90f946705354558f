//! Hook filters: one condition per event header, compiled once (regexes included).
//!
//! Semantics follow the original engine: `==`/`!=` with the value `"null"` test for an absent
//! header, and the value `""` takes an absent header for an empty one; the order operators
//! compare numerically when both sides are numbers, else as strings; `reg` takes `/re/flags` or
//! a bare pattern and never matches a missing header.
//!
//! The original ran `reg` as JavaScript regexes, so hooks written for it use look-ahead,
//! look-behind and back-references (`^(?!anonymous)`). `fancy-regex` takes those; a pattern
//! without them runs on the `regex` crate's engine inside it, as fast as before. JavaScript's
//! `\d` and `\w` are ASCII and its `.` stops at `\r`, U+2028 and U+2029: patterns are
//! rewritten to mean that here (`javascript_classes`).

use std::cmp::Ordering;

use fancy_regex::{Regex, RegexBuilder};
use serde_json::Value;

/// The operations a filter may use, as spelled in hook documents.
pub const OPERATIONS: [&str; 7] = ["==", "!=", "<", ">", "<=", ">=", "reg"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unknown operation \"{0}\" (expected one of ==, !=, <, >, <=, >=, reg)")]
    UnknownOperation(String),
    #[error("value must be a string, number or boolean")]
    BadValue,
    #[error("invalid regular expression: {0}")]
    BadRegex(String),
    #[error(
        "regular expression is too large: the hook's {share} reg filters share {} KiB, {} KiB each",
        REGEX_BUDGET >> 10,
        regex_share(*share) >> 10
    )]
    TooLarge { share: usize },
}

/// The most one regular expression may compile to.
pub const MAX_REGEX: usize = 1 << 20;

/// The most the regular expressions of one hook may compile to together: each of its `n`
/// `reg` filters gets `1/n` of it (1 MiB at most), so a hook cannot hold 64 MiB of them.
pub const REGEX_BUDGET: usize = 2 << 20;

/// The most text the `reg` patterns of one hook may have together. fancy-regex holds the size
/// limit to each piece it hands the regex crate, not to a whole pattern, so a pattern of many
/// look-arounds (each a piece) is bounded by its length instead: 16 KiB of them compile to a
/// few MB at most.
pub const MAX_REGEX_TEXT: usize = 16 << 10;

/// The backtracking steps one match of a pattern with look-arounds or back-references may take
/// (a few ms); past it the value does not match. Patterns without them never backtrack.
const BACKTRACK_LIMIT: usize = 100_000;

/// The size limit of each of `n` regular expressions of one hook.
pub fn regex_share(n: usize) -> usize {
    (REGEX_BUDGET / n.max(1)).min(MAX_REGEX)
}

#[derive(Debug, Clone)]
enum Cond {
    /// `==` / `!=` against `"null"`: presence test.
    Absent {
        negate: bool,
    },
    Equal {
        value: Scalar,
        negate: bool,
    },
    Order {
        value: Scalar,
        accept: fn(Ordering) -> bool,
    },
    Regex(Regex),
    /// `reg` with an empty value, which the original took for no pattern.
    Never,
}

/// A filter value with its numeric reading worked out once.
#[derive(Debug, Clone)]
struct Scalar {
    text: String,
    number: Option<f64>,
    /// Written as a JSON number, not as text.
    typed: bool,
}

impl Scalar {
    fn new(text: String) -> Self {
        let number = text.trim().parse::<f64>().ok().filter(|n| n.is_finite());
        Self { text, number, typed: false }
    }
}

/// One compiled `filter` entry.
#[derive(Debug, Clone)]
pub struct Filter {
    header: String,
    /// As written in the document, for the dry run's explanation.
    operation: String,
    value: Value,
    cond: Cond,
}

impl Filter {
    pub fn compile(header: &str, operation: &str, value: &Value) -> Result<Self, FilterError> {
        Self::compile_within(header, operation, value, 1)
    }

    /// [`Filter::compile`] for a hook with `share` `reg` filters: a regex gets
    /// [`regex_share`]`(share)` bytes.
    pub fn compile_within(header: &str, operation: &str, value: &Value, share: usize) -> Result<Self, FilterError> {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            // The original compared with JavaScript's loose equality, where `null` stands for a
            // header the event lacks: the same test as the value `"null"`.
            Value::Null if matches!(operation, "==" | "!=") => "null".to_owned(),
            _ => return Err(FilterError::BadValue),
        };
        let cond = match operation {
            "==" | "!=" if text == "null" => Cond::Absent { negate: operation == "!=" },
            "==" | "!=" => Cond::Equal {
                value: Scalar { typed: value.is_number(), ..Scalar::new(text) },
                negate: operation == "!=",
            },
            "<" => Cond::Order { value: Scalar::new(text), accept: Ordering::is_lt },
            ">" => Cond::Order { value: Scalar::new(text), accept: Ordering::is_gt },
            "<=" => Cond::Order { value: Scalar::new(text), accept: Ordering::is_le },
            ">=" => Cond::Order { value: Scalar::new(text), accept: Ordering::is_ge },
            "reg" if text.is_empty() => Cond::Never,
            "reg" => Cond::Regex(compile_regex(&text, share)?),
            other => return Err(FilterError::UnknownOperation(other.to_owned())),
        };
        Ok(Self { header: header.to_owned(), operation: operation.to_owned(), value: value.clone(), cond })
    }

    pub fn header(&self) -> &str {
        &self.header
    }

    pub fn operation(&self) -> &str {
        &self.operation
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Tests the header's value; `None` means the event lacks the header.
    pub fn test(&self, actual: Option<&Value>) -> bool {
        let actual = actual.filter(|v| !v.is_null());
        match &self.cond {
            Cond::Absent { negate } => actual.is_none() != *negate,
            // The original read an empty value as null (`value || null`), a presence test; an
            // empty header is empty too, so `== ""` passes both and `!= ""` neither.
            Cond::Equal { value, negate } => match actual {
                Some(a) => equal(a, value) != *negate,
                None => value.text.is_empty() != *negate,
            },
            Cond::Order { value, accept } => actual.is_some_and(|a| accept(compare(a, value))),
            // An error is the backtracking limit, hit only by look-arounds and back-references
            // on a pathological value: no match, rather than minutes of CPU.
            Cond::Regex(re) => actual.is_some_and(|a| re.is_match(text_of(a).as_ref()).unwrap_or(false)),
            Cond::Never => false,
        }
    }
}

fn text_of(v: &Value) -> std::borrow::Cow<'_, str> {
    super::template::plain_text(v)
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        other => text_of(other).trim().parse::<f64>().ok().filter(|n| n.is_finite()),
    }
}

fn equal(actual: &Value, expected: &Scalar) -> bool {
    match (actual, expected.number) {
        // A typed number (engine events) compares by value: 5 == "5.0"; so does a filter value
        // written as a number, as JavaScript's loose equality did: 10 == "10.0".
        (Value::Number(_), Some(n)) => number_of(actual) == Some(n),
        (_, Some(n)) if expected.typed => number_of(actual) == Some(n),
        _ => text_of(actual) == expected.text,
    }
}

fn compare(actual: &Value, expected: &Scalar) -> Ordering {
    match (number_of(actual), expected.number) {
        (Some(a), Some(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        _ => text_of(actual).as_ref().cmp(expected.text.as_str()),
    }
}

/// `/pattern/flags` (flags i, m, s and y honoured; g and u ignored) or a bare pattern.
/// `share` as in [`Filter::compile_within`].
fn compile_regex(src: &str, share: usize) -> Result<Regex, FilterError> {
    let (pattern, flags) = split_regex_literal(src).unwrap_or((src, ""));
    // The flags are ASCII (`split_regex_literal`), so char positions are byte positions.
    if let Some((_, c)) = flags.char_indices().find(|&(at, c)| flags[at + 1..].contains(c)) {
        return Err(FilterError::BadRegex(format!("the flag {c} is given twice in {src}")));
    }
    let mut rewritten = javascript_classes(pattern, flags.contains('s'));
    // Sticky: JavaScript's `test` from `lastIndex` 0 matches only at the start.
    if flags.contains('y') {
        rewritten = format!("\\A(?:{rewritten})");
    }
    let build_text = |text: &str, limit: usize| {
        RegexBuilder::new(text)
            .case_insensitive(flags.contains('i'))
            .multi_line(flags.contains('m'))
            // With `m`, `^` and `$` take `\r` for a line end too, as JavaScript's do.
            .crlf(true)
            .dot_matches_new_line(flags.contains('s'))
            .delegate_size_limit(limit)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
    };
    let build = |limit: usize| build_text(&rewritten, limit);
    let limit = regex_share(share);
    build(limit).map_err(|e| match limit < MAX_REGEX && build(MAX_REGEX).is_ok() {
        // It compiles alone, so it is its share of the budget it exceeds.
        true => FilterError::TooLarge { share },
        // The pattern as written, where it fails too: its positions are the operator's.
        false => FilterError::BadRegex(match build_text(pattern, MAX_REGEX) {
            Err(written) => written.to_string(),
            Ok(_) => format!("{e} (in the pattern as JavaScript reads it: {rewritten})"),
        }),
    })
}

/// `pattern` as the original's JavaScript read it, in this engine's syntax:
/// - `\d` and `\w` (and their negations) are ASCII there, where this engine's are Unicode
///   (`\w+` would take all of a Cyrillic name);
/// - `.` stops at `\r`, U+2028 and U+2029 as well as `\n`, unless `dot_all` (the `s` flag, or
///   an inline `(?s)`, which only this engine has);
/// - `\<` and `\>` are the characters `<` and `>`, and `{,` is `{` and `,`, where this engine
///   would read word boundaries and a `{,n}` quantifier;
/// - classes follow JavaScript's grammar ([`javascript_class`]).
///
/// Everything else is passed on as it is. `\b`, `\B` and `\s` stay Unicode (an ASCII `\b`
/// would be look-arounds, which backtrack and stop matching on values of a few tens of KB).
fn javascript_classes(pattern: &str, dot_all: bool) -> String {
    let dot_all = dot_all || inline_dot_all(pattern);
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                None => out.push('\\'),
                // Word boundaries here, the characters themselves there.
                Some(e @ ('<' | '>')) => out.push(e),
                Some(e) => out.push_str(&class_escape(e).unwrap_or_else(|| format!("\\{e}"))),
            },
            // `{,n}` is a quantifier here; there a `{` that no digit follows is a character.
            '{' if chars.as_str().starts_with(',') => out.push_str("\\{"),
            '[' => javascript_class(&mut chars, &mut out),
            '.' if !dot_all => out.push_str("[^\\n\\r\\x{2028}\\x{2029}]"),
            _ => out.push(c),
        }
    }
    out
}

/// `\d`, `\D`, `\w`, `\W` as JavaScript's ASCII classes.
fn class_escape(e: char) -> Option<String> {
    const WORD: &str = "0-9A-Za-z_";
    match e {
        'd' => Some("[0-9]".into()),
        'D' => Some("[^0-9]".into()),
        'w' => Some(format!("[{WORD}]")),
        'W' => Some(format!("[^{WORD}]")),
        _ => None,
    }
}

/// Whether an inline flag group turns on `s` (`(?s)`, `(?is:…)`), which JavaScript does not
/// have: a hook written for this engine with it keeps its `.`.
fn inline_dot_all(pattern: &str) -> bool {
    pattern.match_indices("(?").any(|(at, _)| {
        let flags = &pattern[at + 2..];
        let end = flags.find([':', ')']).unwrap_or(0);
        let on = flags[..end].split('-').next().unwrap_or_default();
        end > 0 && on.chars().all(|c| c.is_ascii_alphabetic()) && on.contains('s')
    })
}

/// One class, after its `[`, as JavaScript reads it, written for this engine:
/// - `[]` matches nothing and `[^]` anything;
/// - a `-` is a range only between two single characters; next to `\d`, `\w`, `\s` (or their
///   negations), first, last or after a range it is a `-` (this engine would read `[+-\d]` as
///   a range and `--` as a set difference);
/// - `[`, `&` and `~` are characters (this engine would start a nested class or a set
///   operation with them), and `\b` is a backspace.
fn javascript_class(chars: &mut std::str::Chars, out: &mut String) {
    enum Atom {
        Char(String),
        Dash,
        Set(String),
    }
    let negated = chars.as_str().starts_with('^');
    if negated {
        chars.next();
    }
    let (mut atoms, mut closed) = (Vec::new(), false);
    loop {
        match chars.next() {
            None => break,
            Some(']') => {
                closed = true;
                break;
            }
            Some('-') => atoms.push(Atom::Dash),
            Some('\\') => match chars.next() {
                None => atoms.push(Atom::Char("\\".into())),
                Some('b') => atoms.push(Atom::Char("\\x08".into())),
                Some(e @ ('s' | 'S')) => atoms.push(Atom::Set(format!("\\{e}"))),
                Some(e) => atoms.push(class_escape(e).map_or_else(|| Atom::Char(format!("\\{e}")), Atom::Set)),
            },
            Some(c @ ('[' | '&' | '~' | '^')) => atoms.push(Atom::Char(format!("\\{c}"))),
            Some(c) => atoms.push(Atom::Char(c.into())),
        }
    }
    if atoms.is_empty() && closed {
        out.push_str(if negated { "[\\s\\S]" } else { "[^\\s\\S]" });
        return;
    }
    fn text(atom: &Atom) -> &str {
        match atom {
            Atom::Char(c) | Atom::Set(c) => c,
            Atom::Dash => "\\-",
        }
    }
    out.push_str(if negated { "[^" } else { "[" });
    let mut i = 0;
    while i < atoms.len() {
        match (&atoms[i], atoms.get(i + 1), atoms.get(i + 2)) {
            (from, Some(Atom::Dash), Some(to)) => {
                let range = !matches!(from, Atom::Set(_)) && !matches!(to, Atom::Set(_));
                out.push_str(text(from));
                out.push_str(if range { "-" } else { "\\-" });
                out.push_str(text(to));
                i += 3;
            }
            (atom, ..) => {
                out.push_str(text(atom));
                i += 1;
            }
        }
    }
    // An unclosed class stays unclosed, for the engine to refuse.
    if closed {
        out.push(']');
    }
}

fn split_regex_literal(src: &str) -> Option<(&str, &str)> {
    let body = src.strip_prefix('/')?;
    let end = body.rfind('/')?;
    let flags = &body[end + 1..];
    flags.chars().all(|c| "gimsuy".contains(c)).then_some((&body[..end], flags))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn passes(op: &str, value: Value, actual: Option<Value>) -> bool {
        Filter::compile("h", op, &value).unwrap().test(actual.as_ref())
    }

    #[test]
    fn equality_compares_text_and_typed_numbers() {
        assert!(passes("==", json!("inbound"), Some(json!("inbound"))));
        assert!(!passes("==", json!("inbound"), Some(json!("outbound"))));
        assert!(passes("==", json!("5"), Some(json!(5.0))));
        assert!(passes("==", json!(5), Some(json!("5"))));
        assert!(!passes("==", json!("05"), Some(json!("5"))));
        assert!(passes("!=", json!("a"), Some(json!("b"))));
        assert!(passes("!=", json!("a"), None));
        assert!(!passes("==", json!("a"), None));
    }

    /// A filter value written as a JSON number compares by value with a header that reads as a
    /// number, as the original's loose equality did (`10 == "10.0"` in JavaScript); a value
    /// written as text compares as text with a text header (`"10" == "10.0"` is false there).
    #[test]
    fn a_typed_number_value_equals_a_header_of_the_same_number() {
        assert!(passes("==", json!(10), Some(json!("10.0"))));
        assert!(passes("==", json!(10), Some(json!(" 10"))));
        assert!(passes("==", json!(1000), Some(json!("1e3"))));
        assert!(passes("==", json!(-2.5), Some(json!("-2.50"))));
        assert!(!passes("!=", json!(10), Some(json!("+10"))));
        assert!(passes("!=", json!(10), Some(json!("11"))));
        assert!(!passes("==", json!(10), Some(json!("ten"))));
        assert!(!passes("==", json!(10), Some(json!(""))));
        assert!(!passes("==", json!("10"), Some(json!("10.0"))));
        assert!(passes("!=", json!("10"), Some(json!("10.0"))));
    }

    #[test]
    fn null_value_tests_presence() {
        assert!(passes("==", json!("null"), None));
        assert!(passes("==", json!("null"), Some(Value::Null)));
        assert!(!passes("==", json!("null"), Some(json!("x"))));
        assert!(passes("!=", json!("null"), Some(json!("x"))));
        assert!(!passes("!=", json!("null"), None));
    }

    #[test]
    fn an_empty_value_takes_an_absent_header_for_an_empty_one() {
        assert!(passes("==", json!(""), None));
        assert!(passes("==", json!(""), Some(Value::Null)));
        assert!(passes("==", json!(""), Some(json!(""))));
        assert!(!passes("==", json!(""), Some(json!("x"))));
        assert!(!passes("!=", json!(""), None));
        assert!(!passes("!=", json!(""), Some(json!(""))));
        assert!(passes("!=", json!(""), Some(json!("x"))));
    }

    #[test]
    fn a_null_value_tests_presence_like_the_text_null() {
        assert!(passes("==", Value::Null, None));
        assert!(!passes("==", Value::Null, Some(json!("x"))));
        assert!(passes("!=", Value::Null, Some(json!("x"))));
        assert_eq!(Filter::compile("h", "<", &Value::Null).unwrap_err(), FilterError::BadValue);
        assert_eq!(Filter::compile("h", "reg", &Value::Null).unwrap_err(), FilterError::BadValue);
    }

    #[test]
    fn order_is_numeric_when_both_sides_are_numbers() {
        assert!(passes(">", json!("9"), Some(json!("10"))));
        assert!(passes("<", json!(100), Some(json!(20))));
        assert!(passes(">=", json!("10"), Some(json!("10.0"))));
        assert!(passes("<=", json!("10"), Some(json!(10))));
        assert!(!passes(">", json!("10"), None));
    }

    #[test]
    fn order_falls_back_to_strings() {
        assert!(passes("<", json!("9"), Some(json!("10a"))));
        assert!(passes(">", json!("abc"), Some(json!("abd"))));
        assert!(!passes(">", json!("abd"), Some(json!("abc"))));
    }

    #[test]
    fn regex_accepts_literals_with_flags_and_bare_patterns() {
        assert!(passes("reg", json!("/^SIP\\//i"), Some(json!("sip/gw1/100"))));
        assert!(!passes("reg", json!("/^SIP\\//"), Some(json!("sip/gw1/100"))));
        assert!(passes("reg", json!("/a.b/gs"), Some(json!("a\nb"))));
        assert!(passes("reg", json!("^10[0-9]$"), Some(json!("105"))));
        assert!(passes("reg", json!("^5$"), Some(json!(5))));
        assert!(!passes("reg", json!(".*"), None));
    }

    /// The original read an empty value as no pattern (`value || null`) and never matched it.
    #[test]
    fn an_empty_pattern_matches_nothing() {
        assert!(!passes("reg", json!(""), Some(json!("anything"))));
        assert!(!passes("reg", json!(""), Some(json!(""))));
        assert!(passes("reg", json!("//"), Some(json!("anything"))));
    }

    /// `y` (sticky, from `lastIndex` 0) anchors the match at the start of the value.
    #[test]
    fn the_sticky_flag_anchors_at_the_start() {
        assert!(passes("reg", json!("/gw1/y"), Some(json!("gw1/100"))));
        assert!(!passes("reg", json!("/gw1/y"), Some(json!("sip/gw1/100"))));
        assert!(!passes("reg", json!("/a|gw1/y"), Some(json!("sip/gw1"))));
        assert!(passes("reg", json!("/GW1/iy"), Some(json!("gw1/100"))));
        assert!(!passes("reg", json!("/^gw1/my"), Some(json!("sip\ngw1"))));
    }

    /// Look-arounds over a long value (a CHANNEL_HANGUP_COMPLETE variable of several KB) stay
    /// within the backtracking limit.
    #[test]
    fn look_arounds_over_long_values_stay_within_the_backtracking_limit() {
        let long = format!("{}sip:100@pbx", "x;".repeat(8000));
        assert!(passes("reg", json!("(?<=sip:)100@"), Some(json!(long))));
        assert!(passes("reg", json!("/^(?!anonymous$).*100@/s"), Some(json!(long))));
        assert!(passes("reg", json!("(\\w)\\1@"), Some(json!(format!("{}00@", "x;".repeat(8000))))));
        assert!(passes("reg", json!("\\bsip:100\\b"), Some(json!(long))));
        // The ASCII classes JavaScript's `\w`, `\d` and `.` become are plain classes: no
        // backtracking, whatever the value's length.
        let longer = format!("{}sip:100@pbx", "x;".repeat(100_000));
        assert!(passes("reg", json!("\\w\\W\\d+@[\\w.]+$"), Some(json!(longer))));
        assert!(passes("reg", json!("/^.*100@PBX$/i"), Some(json!(longer))));
        assert!(passes("reg", json!("/\\bPBX$/i"), Some(json!(long))));
    }

    #[test]
    fn regex_takes_javascript_look_arounds_and_back_references() {
        let anonymous = |name: &str| passes("reg", json!("/^(?!anonymous$)/i"), Some(json!(name)));
        assert!(anonymous("Alice"));
        assert!(!anonymous("Anonymous"));
        assert!(passes("reg", json!("(?<=^sip:)100@"), Some(json!("sip:100@pbx"))));
        assert!(!passes("reg", json!("(?<=^sip:)100@"), Some(json!("tel:100@pbx"))));
        assert!(passes("reg", json!("^(\\d)\\1"), Some(json!("5512"))));
        assert!(!passes("reg", json!("^(\\d)\\1"), Some(json!("5612"))));
        // Catastrophic backtracking stops at the limit and does not match.
        let value = format!("{}?", "a".repeat(64));
        assert!(!passes("reg", json!("^(a+)+\\1!$"), Some(json!(value))));
    }

    /// The original ran JavaScript regexes, whose `\d` and `\w` are ASCII and whose `.`
    /// stops at every line terminator: a filter on Cyrillic or accented caller names must
    /// match as it did there.
    #[test]
    fn classes_word_boundaries_and_dot_are_javascript_s() {
        let reg = |pattern: &str, value: &str| passes("reg", json!(pattern), Some(json!(value)));
        assert!(!reg("^\\w+$", "Іван"));
        assert!(reg("^\\w+$", "Ivan_2"));
        assert!(!reg("^\\d+$", "١٢٣"));
        assert!(reg("^\\d+$", "0123456789"));
        assert!(reg("^\\D$", "٣"));
        assert!(reg("^\\W$", "é"));
        assert!(!reg("^\\W$", "e"));
        assert!(reg("^[\\w-]+$", "a-b_c"));
        assert!(!reg("^[\\w-]+$", "é-b"));
        assert!(!reg("^[\\d]$", "٣"));
        assert!(reg("^[\\D]$", "٣"));
        assert!(reg("^[x\\W]$", "é"));
        assert!(!reg("^[x\\W]$", "a"));
        assert!(reg("^[\\b]$", "\u{8}"));
        assert!(reg("^[[]$", "["));
        assert!(reg("^[a&&b]+$", "a&&b"));
        assert!(!reg("^a.b$", "a\rb"));
        assert!(!reg("^a.b$", "a\u{2028}b"));
        assert!(reg("/^a.b$/s", "a\rb"));
        assert!(reg("^a.b$", "a b"));
        assert!(reg("^\\.\\[\\]\\\\$", ".[]\\"));
        // Classes as JavaScript parses them (each checked with node): a `-` next to a class
        // escape, first, last, after a range or doubled is a character; `[]` and `[^]`.
        let js = [
            (r"^[+-\d]+$", "+-5", true),
            (r"^[+-\d]+$", ",", false),
            (r"^[!-\w]$", "+", false),
            (r"^[\w-.]+$", "a-.b", true),
            (r"^[\w-\.]+@([\w-]+\.)+[\w-]{2,4}$", "john.doe@mail-x.com", true),
            (r"^[\s-\d]$", "-", true),
            (r"^[a-\d]$", "-", true),
            (r"^[a-z--]+$", "a-", true),
            (r"^[+--]$", ",", true),
            (r"^[\w--]+$", "a-", true),
            (r"^[^]$", "a", true),
            (r"^a[^]*b$", "a\nxb", true),
            (r"^[]a]$", "a", false),
            (r"^[]a]$", "]", false),
            (r"^[^]]$", "x]", true),
            (r"^[a-c\d]+$", "ab9", true),
            (r"^[--a]$", "Z", true),
            (r"^[\]x]+$", "]x", true),
            (r"^[a^]+$", "^a", true),
        ];
        for (pattern, value, want) in js {
            assert_eq!(reg(pattern, value), want, "{pattern} on {value:?}");
        }
        // With `m`, `^` and `$` take `\r` for a line end too.
        assert!(reg("/^a$/m", "a\rb") && reg("/^b$/m", "a\rb") && reg("/^b$/m", "a\r\nb"));
        assert!(!reg("/^a$/", "a\rb"));
        // An inline `(?s)`, which only this engine has, keeps its `.`.
        assert!(reg("(?s)^a.b$", "a\nb"));
        assert!(reg("(?is:A.B)", "a\rb"));
        assert!(!reg("(?i)^a.b$", "A\rb"));
        // Look-arounds and back-references still work with the ASCII classes.
        assert!(reg("(?<=\\d)x(\\w)\\1", "5xaa"));
        assert!(!reg("(?<=\\d)x(\\w)\\1", "٣xaa"));
    }

    /// JavaScript (without the `u` flag) reads an escaped character that means nothing to it
    /// as that character, and a `{` that does not start a quantifier as a `{`; this engine
    /// reads `\<` and `\>` as word boundaries and `{,n}` as a quantifier, with no error to say
    /// so. Each case checked with node.
    #[test]
    fn escaped_angle_brackets_and_a_brace_before_a_comma_are_characters_as_in_javascript() {
        let reg = |pattern: &str, value: &str| passes("reg", json!(pattern), Some(json!(value)));
        assert!(reg(r"^\<$", "<"));
        assert!(reg(r"^\>$", ">"));
        assert!(reg(r"^\<sip:\d+@[^>]+\>$", "<sip:100@pbx>"));
        assert!(!reg(r"^\<sip", "sip:100@pbx"));
        assert!(reg(r"^[\<\>]+$", "<>"));
        assert!(reg(r"^a{,3}$", "a{,3}"));
        assert!(!reg(r"^a{,3}$", "aa"));
        assert!(reg(r"^a{1,3}$", "aa"));
        // Escaped, they are characters to both.
        assert!(reg(r"^\\<$", "\\<"));
        assert!(reg(r"^\{,\}$", "{,}"));
    }

    /// An engine event's array of plain values (skills, tags) is tested as the original's
    /// JavaScript turned it into text, its items joined by commas, as templates write it:
    /// `/^vip,2$/.test(["vip", 2])`, `["vip"] == "vip"` and `[5] > 3` are all true there.
    /// Objects, and arrays holding one, are their JSON text.
    #[test]
    fn arrays_of_plain_values_are_tested_as_their_items_joined_by_commas() {
        assert!(passes("reg", json!("^vip,2$"), Some(json!(["vip", 2]))));
        assert!(passes("reg", json!("/^sales(,|$)/"), Some(json!(["sales", "support"]))));
        assert!(passes("==", json!("vip"), Some(json!(["vip"]))));
        assert!(passes("==", json!("a,"), Some(json!(["a", null]))));
        assert!(passes("!=", json!("vip"), Some(json!(["vip", "gold"]))));
        assert!(passes("==", json!(5), Some(json!(["5"]))));
        assert!(passes(">", json!(9), Some(json!([10]))));
        assert!(passes("reg", json!("\"crm\":5"), Some(json!({"crm": 5}))));
        assert!(passes("reg", json!("^\\[\\{"), Some(json!([{"a": 1}]))));
    }

    #[test]
    fn rejects_unknown_operations_bad_regexes_and_values() {
        let err = Filter::compile("h", "~=", &json!("x")).unwrap_err();
        assert_eq!(err, FilterError::UnknownOperation("~=".into()));
        assert!(matches!(Filter::compile("h", "reg", &json!("/(a/")), Err(FilterError::BadRegex(_))));
        // Positions are in the pattern as written, not as rewritten for JavaScript's classes.
        let Err(FilterError::BadRegex(e)) = Filter::compile("h", "reg", &json!(r"^\w+\d+.(")) else { panic!() };
        assert!(e.contains("at position 9"), "{e}");
        for unclosed in ["[abc", "[^", "a[\\d-"] {
            assert!(
                matches!(Filter::compile("h", "reg", &json!(unclosed)), Err(FilterError::BadRegex(_))),
                "{unclosed}"
            );
        }
        assert_eq!(Filter::compile("h", "==", &json!({"a": 1})).unwrap_err(), FilterError::BadValue);
        // JavaScript refuses a flag given twice.
        let Err(FilterError::BadRegex(e)) = Filter::compile("h", "reg", &json!("/a/gig")) else { panic!() };
        assert_eq!(e, "the flag g is given twice in /a/gig");
    }
}
