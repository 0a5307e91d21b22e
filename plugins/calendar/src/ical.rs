//! iCalendar (RFC 5545) at the content-line level: unfolding, parameters (quoted or not, multi-valued),
//! components nested by BEGIN/END, and the serialiser that folds lines at 75 octets. Values are kept as written
//! (TEXT escapes included) so a calendar read and written back loses nothing the plugin does not understand;
//! [`unescape_text`] and [`escape_text`] convert TEXT values.
//!
//! Owns no I/O. The input is untrusted (files posted by anyone in a conversation, answers of a CalDAV server), so
//! every failure is an [`IcalError`] with the line it happened on, and nesting and size are bounded.

use std::fmt;

/// Components nested deeper than this are refused (VCALENDAR > VEVENT > VALARM is 3).
pub const MAX_DEPTH: usize = 16;
/// Content lines in one object at most (after unfolding).
pub const MAX_LINES: usize = 100_000;

/// A parameter: `NAME=v1,v2` (name upper-cased; values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Upper-case name.
    pub name: String,
    /// Values without their quotes.
    pub values: Vec<String>,
}

/// A property: `NAME;PARAM=..:value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// Upper-case name.
    pub name: String,
    /// Parameters in order.
    pub params: Vec<Param>,
    /// The raw value (TEXT escapes kept).
    pub value: String,
}

impl Property {
    /// A property without parameters.
    pub fn new(name: &str, value: &str) -> Self {
        Property {
            name: name.to_ascii_uppercase(),
            params: Vec::new(),
            value: value.to_owned(),
        }
    }
    /// Add (or replace) a single-valued parameter.
    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.set_param(name, value);
        self
    }
    /// The first value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .and_then(|p| p.values.first())
            .map(String::as_str)
    }
    /// Set parameter `name` to the single `value`, replacing it where it was or appending it.
    pub fn set_param(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_uppercase();
        match self.params.iter_mut().find(|p| p.name == name) {
            Some(p) => p.values = vec![value.to_owned()],
            None => self.params.push(Param {
                name,
                values: vec![value.to_owned()],
            }),
        }
    }
}

/// A component (`BEGIN:NAME` … `END:NAME`) with its properties and sub-components in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Component {
    /// Upper-case name (VCALENDAR, VEVENT, VALARM…).
    pub name: String,
    /// Properties in order.
    pub properties: Vec<Property>,
    /// Sub-components in order.
    pub components: Vec<Component>,
}

impl Component {
    /// An empty component.
    pub fn new(name: &str) -> Self {
        Component {
            name: name.to_ascii_uppercase(),
            ..Component::default()
        }
    }
    /// The first property called `name`.
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }
    /// The value of the first property called `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.property(name).map(|p| p.value.as_str())
    }
    /// Every property called `name`.
    pub fn properties_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Property> + 'a {
        self.properties.iter().filter(move |p| p.name.eq_ignore_ascii_case(name))
    }
    /// Sub-components called `name`.
    pub fn components_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Component> + 'a {
        self.components.iter().filter(move |c| c.name.eq_ignore_ascii_case(name))
    }
    /// Append a property.
    pub fn push(&mut self, property: Property) {
        self.properties.push(property);
    }
}

/// Why an iCalendar object could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IcalError {
    /// 1-based line (after unfolding; 0 for the whole object).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for IcalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "not a valid iCalendar object: {}", self.reason)
        } else {
            write!(f, "not a valid iCalendar object (line {}): {}", self.line, self.reason)
        }
    }
}

impl std::error::Error for IcalError {}

fn err(line: usize, reason: impl Into<String>) -> IcalError {
    IcalError {
        line,
        reason: reason.into(),
    }
}

/// Join folded lines (a line break followed by a space or tab continues the line), accepting CRLF or LF.
fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = raw.strip_prefix([' ', '\t'])
            && let Some(last) = lines.last_mut()
        {
            last.push_str(rest);
            continue;
        }
        lines.push(raw.to_owned());
    }
    lines
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}

/// One unfolded content line.
pub fn parse_line(line: &str, number: usize) -> Result<Property, IcalError> {
    let name_end = line.find([';', ':']).ok_or_else(|| err(number, "a content line needs a ':' before its value"))?;
    let name = &line[..name_end];
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err(err(number, "a property name may hold only letters, digits and '-'"));
    }
    let mut property = Property {
        name: name.to_ascii_uppercase(),
        params: Vec::new(),
        value: String::new(),
    };
    let mut rest = &line[name_end..];
    while let Some(after) = rest.strip_prefix(';') {
        let eq = after.find('=').ok_or_else(|| err(number, "a parameter needs '='"))?;
        let pname = &after[..eq];
        if pname.is_empty() || !pname.chars().all(is_name_char) {
            return Err(err(number, "a parameter name may hold only letters, digits and '-'"));
        }
        let mut cursor = &after[eq + 1..];
        let mut values = Vec::new();
        loop {
            if let Some(quoted) = cursor.strip_prefix('"') {
                let close = quoted.find('"').ok_or_else(|| err(number, "an unterminated quoted parameter value"))?;
                values.push(quoted[..close].to_owned());
                cursor = &quoted[close + 1..];
            } else {
                let end = cursor.find([',', ';', ':']).unwrap_or(cursor.len());
                let value = &cursor[..end];
                if value.contains('"') {
                    return Err(err(number, "a '\"' inside an unquoted parameter value"));
                }
                values.push(value.to_owned());
                cursor = &cursor[end..];
            }
            match cursor.chars().next() {
                Some(',') => cursor = &cursor[1..],
                Some(';') | Some(':') => break,
                _ => return Err(err(number, "a parameter must be followed by ';' or ':'")),
            }
        }
        property.params.push(Param {
            name: pname.to_ascii_uppercase(),
            values,
        });
        rest = cursor;
    }
    let value = rest.strip_prefix(':').ok_or_else(|| err(number, "a content line needs a ':' before its value"))?;
    property.value = value.to_owned();
    Ok(property)
}

/// Parse an iCalendar stream: one or more top-level components (usually one VCALENDAR).
pub fn parse(text: &str) -> Result<Vec<Component>, IcalError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = unfold(text);
    if lines.len() > MAX_LINES {
        return Err(err(0, format!("more than {MAX_LINES} lines")));
    }
    let mut stack: Vec<Component> = Vec::new();
    let mut done = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let number = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if line.chars().any(|c| c.is_control() && c != '\t') {
            return Err(err(number, "a control character inside a content line"));
        }
        let property = parse_line(line, number)?;
        match property.name.as_str() {
            "BEGIN" => {
                let name = property.value.trim();
                if name.is_empty() || !name.chars().all(is_name_char) {
                    return Err(err(number, "BEGIN needs a component name"));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(err(number, format!("components nested deeper than {MAX_DEPTH}")));
                }
                stack.push(Component::new(name));
            }
            "END" => {
                let component = stack.pop().ok_or_else(|| err(number, "END without BEGIN"))?;
                if !component.name.eq_ignore_ascii_case(property.value.trim()) {
                    return Err(err(
                        number,
                        format!("END:{} closes BEGIN:{}", property.value.trim(), component.name),
                    ));
                }
                match stack.last_mut() {
                    Some(parent) => parent.components.push(component),
                    None => done.push(component),
                }
            }
            _ => match stack.last_mut() {
                Some(current) => current.properties.push(property),
                None => return Err(err(number, "a property outside any BEGIN/END")),
            },
        }
    }
    if let Some(open) = stack.last() {
        return Err(err(0, format!("BEGIN:{} is never closed", open.name)));
    }
    if done.is_empty() {
        return Err(err(0, "no component (BEGIN:VCALENDAR … END:VCALENDAR)"));
    }
    Ok(done)
}

/// Parse a stream that must hold exactly one VCALENDAR.
pub fn parse_calendar(text: &str) -> Result<Component, IcalError> {
    let mut all = parse(text)?;
    if all.len() != 1 || all[0].name != "VCALENDAR" {
        return Err(err(0, "expected exactly one VCALENDAR"));
    }
    Ok(all.remove(0))
}

fn needs_quotes(value: &str) -> bool {
    value.contains([':', ';', ','])
}

/// One content line, unfolded (without CRLF).
fn line_text(property: &Property) -> String {
    let mut out = property.name.clone();
    for param in &property.params {
        out.push(';');
        out.push_str(&param.name);
        out.push('=');
        for (i, v) in param.values.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            // A double quote cannot be written inside a parameter value (RFC 5545 3.2): it is dropped.
            let v = v.replace('"', "");
            if needs_quotes(&v) {
                out.push('"');
                out.push_str(&v);
                out.push('"');
            } else {
                out.push_str(&v);
            }
        }
    }
    out.push(':');
    // Line breaks cannot be written in a content line: a raw one is written as the TEXT escape.
    out.push_str(&property.value.replace("\r\n", "\\n").replace(['\r', '\n'], "\\n"));
    out
}

/// Fold a line at 75 octets (never inside a UTF-8 sequence), with CRLF line ends.
fn fold_into(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if width + len > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

fn write_component(out: &mut String, component: &Component) {
    fold_into(out, &format!("BEGIN:{}", component.name));
    for p in &component.properties {
        fold_into(out, &line_text(p));
    }
    for c in &component.components {
        write_component(out, c);
    }
    fold_into(out, &format!("END:{}", component.name));
}

/// Serialise components (CRLF, folded at 75 octets).
pub fn serialize(components: &[Component]) -> String {
    let mut out = String::new();
    for c in components {
        write_component(&mut out, c);
    }
    out
}

/// A TEXT value as written (`\n`, `\,`, `\;`, `\\` escapes) to plain text.
pub fn unescape_text(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') | Some('N') => out.push('\n'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Plain text to a TEXT value.
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &[(&str, &str)] = &[
        ("1-conference", include_str!("../tests/rfc5545/1-conference.ics")),
        ("2-group-meeting", include_str!("../tests/rfc5545/2-group-meeting.ics")),
        ("3-mime-meeting", include_str!("../tests/rfc5545/3-mime-meeting.ics")),
        ("4-todo-alarm", include_str!("../tests/rfc5545/4-todo-alarm.ics")),
        ("5-journal", include_str!("../tests/rfc5545/5-journal.ics")),
        ("6-freebusy", include_str!("../tests/rfc5545/6-freebusy.ics")),
    ];

    #[test]
    fn rfc5545_examples_parse_and_round_trip() {
        for (name, text) in FIXTURES {
            let first = parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(first.len(), 1, "{name}");
            assert_eq!(first[0].name, "VCALENDAR", "{name}");
            let written = serialize(&first);
            assert!(written.split("\r\n").all(|l| l.len() <= 75), "{name}: a line longer than 75 octets");
            let second = parse(&written).unwrap_or_else(|e| panic!("{name} again: {e}"));
            assert_eq!(first, second, "{name}");
            assert_eq!(serialize(&second), written, "{name}: the serialisation is stable");
        }
    }

    #[test]
    fn rfc5545_examples_say_what_the_rfc_says() {
        let c = parse_calendar(FIXTURES[0].1).unwrap();
        let ev = c.components_named("VEVENT").next().unwrap();
        assert_eq!(
            unescape_text(ev.value("DESCRIPTION").unwrap()),
            "Networld+Interop Conference and Exhibit\nAtlanta World Congress Center\nAtlanta, Georgia"
        );
        let c = parse_calendar(FIXTURES[1].1).unwrap();
        let tz = c.components_named("VTIMEZONE").next().unwrap();
        assert_eq!(tz.components.len(), 2);
        let ev = c.components_named("VEVENT").next().unwrap();
        let attendee = ev.property("ATTENDEE").unwrap();
        assert_eq!(attendee.value, "mailto:employee-A@example.com");
        assert_eq!(attendee.param("cutype"), Some("GROUP"));
        assert_eq!(ev.property("DTSTART").unwrap().param("TZID"), Some("America/New_York"));
        let c = parse_calendar(FIXTURES[2].1).unwrap();
        let ev = c.components_named("VEVENT").next().unwrap();
        assert_eq!(ev.value("ATTACH"), Some("ftp://example.com/pub/conf/bkgrnd.ps"));
        let c = parse_calendar(FIXTURES[3].1).unwrap();
        let todo = c.components_named("VTODO").next().unwrap();
        assert_eq!(todo.components[0].name, "VALARM");
        assert_eq!(todo.components[0].value("REPEAT"), Some("4"));
        let c = parse_calendar(FIXTURES[4].1).unwrap();
        let j = c.components_named("VJOURNAL").next().unwrap();
        assert!(unescape_text(j.value("DESCRIPTION").unwrap()).contains("John Smith, Jane Doe, Jim Dandy"));
        let c = parse_calendar(FIXTURES[5].1).unwrap();
        assert_eq!(c.components[0].properties_named("FREEBUSY").count(), 3);
    }

    #[test]
    fn parameters_quoted_and_multi_valued() {
        let p = parse_line(r#"ATTENDEE;DELEGATED-TO="mailto:a@x","mailto:b@x";CN=Bob:mailto:bob@x"#, 1).unwrap();
        assert_eq!(p.params[0].values, vec!["mailto:a@x", "mailto:b@x"]);
        assert_eq!(p.param("CN"), Some("Bob"));
        assert_eq!(p.value, "mailto:bob@x");
        let again = parse_line(&line_text(&p), 1).unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn long_and_multibyte_lines_fold_and_unfold() {
        let mut c = Component::new("VCALENDAR");
        let mut ev = Component::new("VEVENT");
        ev.push(Property::new("SUMMARY", &escape_text(&"Grüße, 日本語; ".repeat(20))));
        c.components.push(ev);
        let text = serialize(std::slice::from_ref(&c));
        assert!(text.split("\r\n").all(|l| l.len() <= 75));
        let back = parse_calendar(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(
            unescape_text(back.components[0].value("SUMMARY").unwrap()),
            "Grüße, 日本語; ".repeat(20)
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "BEGIN:VCALENDAR",
            "END:VCALENDAR",
            "SUMMARY:x",
            "BEGIN:VCALENDAR\r\nEND:VEVENT",
            "BEGIN:VCALENDAR\r\nno colon\r\nEND:VCALENDAR",
            "BEGIN:VCALENDAR\r\nX;P=\"open:v\r\nEND:VCALENDAR",
            "BEGIN:VCALENDAR\r\nX;P=a\"b:v\r\nEND:VCALENDAR",
            "BEGIN:VCALENDAR\r\nX;P:v\r\nEND:VCALENDAR",
            "BEGIN:VCALENDAR\r\nX Y:v\r\nEND:VCALENDAR",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = "BEGIN:A\n".repeat(MAX_DEPTH + 1) + &"END:A\n".repeat(MAX_DEPTH + 1);
        assert!(parse(&deep).unwrap_err().reason.contains("deeper"));
    }

    #[test]
    fn text_escapes_round_trip() {
        let text = "a, b; c\\d\nnext";
        assert_eq!(unescape_text(&escape_text(text)), text);
    }
}
