//! The few JSON lines the `pierce` command prints, written by hand: one flat object per line,
//! keys in a fixed order, strings escaped per RFC 8259. Twenty lines instead of serde.

use std::fmt::{self, Write};

/// The cluster node this process is (`pierce server --node-id`): every line it prints says
/// so.
static NODE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// From now on every object carries `"node":id` last (the server's lines have no `node`
/// member of their own).
pub fn set_node(id: &str) {
    let _ = NODE.set(id.to_owned());
}

/// One JSON object under construction, e.g. `{"event":"listening","addr":"127.0.0.1:7777"}`.
#[derive(Clone, Debug)]
pub struct Obj(String);

impl Obj {
    /// An object whose first member is `"event":<event>`.
    pub fn event(event: &str) -> Self {
        Self::new().str("event", event)
    }

    /// An empty object.
    pub fn new() -> Self {
        Self(String::from("{"))
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        push_str(&mut self.0, key);
        self.0.push(':');
    }

    /// Adds a string member.
    #[must_use]
    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_str(&mut self.0, value);
        self
    }

    /// Adds a string member, or `null`.
    #[must_use]
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// Adds an integer member.
    #[must_use]
    pub fn int(mut self, key: &str, value: impl Into<i128>) -> Self {
        self.key(key);
        let _ = write!(self.0, "{}", value.into());
        self
    }

    /// Adds a number member with three decimals (milliseconds to the microsecond), or `null`
    /// when absent or not finite (JSON has no NaN or infinity).
    #[must_use]
    pub fn ms(mut self, key: &str, value: Option<f64>) -> Self {
        self.key(key);
        match value {
            Some(v) if v.is_finite() => {
                let _ = write!(self.0, "{v:.3}");
            }
            _ => self.0.push_str("null"),
        }
        self
    }

    /// Adds a boolean member.
    #[must_use]
    pub fn bool(self, key: &str, value: bool) -> Self {
        self.raw(key, if value { "true" } else { "false" })
    }

    /// Adds a boolean member, or `null`.
    #[must_use]
    pub fn opt_bool(self, key: &str, value: Option<bool>) -> Self {
        match value {
            Some(v) => self.bool(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// Adds an array of objects.
    #[must_use]
    pub fn array(mut self, key: &str, items: impl IntoIterator<Item = Self>) -> Self {
        self.key(key);
        self.0.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            self.0.push_str(&item.finish());
        }
        self.0.push(']');
        self
    }

    /// Adds an array of integers.
    #[must_use]
    pub fn ints(mut self, key: &str, items: impl IntoIterator<Item = u64>) -> Self {
        self.key(key);
        self.0.push('[');
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.0.push(',');
            }
            let _ = write!(self.0, "{item}");
        }
        self.0.push(']');
        self
    }

    /// Adds an integer member, or `null`.
    #[must_use]
    pub fn opt_int(self, key: &str, value: Option<u64>) -> Self {
        match value {
            Some(v) => self.int(key, v),
            None => self.raw(key, "null"),
        }
    }

    /// Adds an object member.
    #[must_use]
    pub fn object(self, key: &str, value: Self) -> Self {
        self.raw(key, &value.finish())
    }

    /// Adds a member whose value is already JSON.
    fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.0.push_str(json);
        self
    }

    /// The finished object, without a trailing newline.
    pub fn finish(mut self) -> String {
        if let Some(node) = NODE.get() {
            self = self.str("node", node);
        }
        self.0.push('}');
        self.0
    }
}

impl Default for Obj {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}}}", self.0)
    }
}

/// Appends `s` as a JSON string literal: quotes, backslashes and control characters escaped;
/// everything else (all of Unicode) passes through as UTF-8.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_separated_and_strings_escaped() {
        let line = Obj::event("summary")
            .bool("ok", true)
            .str("name", "a\"b\\c\nd\u{1}é")
            .int("n", 3u32)
            .ms("t", Some(1.5))
            .ms("u", None)
            .opt_bool("p", None)
            .array("peers", [Obj::new().int("x", -1i32), Obj::new()])
            .ints("ids", [1, 22])
            .opt_int("o", None)
            .finish();
        assert_eq!(
            line,
            r#"{"event":"summary","ok":true,"name":"a\"b\\c\nd\u0001é","n":3,"t":1.500,"u":null,"p":null,"peers":[{"x":-1},{}],"ids":[1,22],"o":null}"#
        );
    }

    #[test]
    fn non_finite_numbers_become_null() {
        let line = Obj::new()
            .ms("a", Some(f64::NAN))
            .ms("b", Some(f64::INFINITY));
        assert_eq!(line.finish(), r#"{"a":null,"b":null}"#);
    }
}
