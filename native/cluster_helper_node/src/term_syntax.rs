//! Roles written as text, for the command line: Erlang term syntax.
//!
//! Owns parsing text into a [`Role`] and nothing else. Accepted:
//!
//! | text | term |
//! |---|---|
//! | `web`, `'Web Server'`, `:web` | atoms (`:web` as Elixir writes it) |
//! | `42`, `-7`, `123456789012345678901234567890` | integers (any size) |
//! | `1.5`, `-2.0e3` | floats (`1.0` is not `1`) |
//! | `"cache"`, `<<"cache">>` | a binary, i.e. an Elixir string |
//! | `<<1,2,3>>` | a binary of bytes |
//! | `[a, "b", 3]`, `[a | b]` | lists (charlists are lists of integers) |
//! | `{shard, 1}` | tuples |
//! | `#{region => "eu"}`, `%{region: "eu"}` | maps |
//!
//! `"cache"` is a binary, as in Elixir (in Erlang it would be a charlist):
//! roles are shared with Elixir apps, whose strings are binaries.
//! Errors say where (character position) and why.

use std::collections::HashMap;

use cluster_helper_core::Role;
use eetf::{Atom, BigInteger, Binary, FixInteger, Float, ImproperList, List, Map, Term, Tuple};

/// Why text is not a term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {pos}: {reason}")]
pub struct ParseError {
    /// 0-based character position.
    pub pos: usize,
    /// What was wrong there.
    pub reason: String,
}

/// Parses `text` as one term and makes it a role.
///
/// ```
/// use cluster_helper_node::parse_role;
/// use cluster_helper_core::Role;
/// assert_eq!(parse_role("{shard, 1}").unwrap(), Role::tuple(&[Role::atom("shard"), Role::int(1)]));
/// assert_eq!(parse_role("\"cache\"").unwrap(), Role::binary("cache"));
/// let e = parse_role("{shard, 1").unwrap_err();
/// assert_eq!(e.pos, 9);
/// ```
pub fn parse_role(text: &str) -> Result<Role, ParseError> {
    let term = parse_term(text)?;
    Role::from_term(&term).map_err(|e| ParseError {
        pos: 0,
        reason: e.to_string(),
    })
}

/// Parses `text` as one term.
pub fn parse_term(text: &str) -> Result<Term, ParseError> {
    let mut p = Parser {
        s: text.chars().collect(),
        pos: 0,
        depth: 0,
    };
    let t = p.term()?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.err("unexpected text after the term"));
    }
    Ok(t)
}

const MAX_DEPTH: usize = 100;

struct Parser {
    s: Vec<char>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn err(&self, reason: &str) -> ParseError {
        ParseError {
            pos: self.pos,
            reason: reason.to_string(),
        }
    }
    fn peek(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, c: char) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected `{c}`")))
        }
    }
    fn starts_with(&self, lit: &str) -> bool {
        lit.chars()
            .enumerate()
            .all(|(i, c)| self.s.get(self.pos + i) == Some(&c))
    }

    fn term(&mut self) -> Result<Term, ParseError> {
        self.ws();
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        let t = match self.peek() {
            None => Err(self.err("expected a term, found the end")),
            Some('{') => self.seq('{', '}').map(|e| Term::from(Tuple::from(e))),
            Some('[') => self.list(),
            Some('#') if self.starts_with("#{") => {
                self.pos += 1;
                self.map("=>")
            }
            Some('%') if self.starts_with("%{") => {
                self.pos += 1;
                self.map("=>")
            }
            Some('<') if self.starts_with("<<") => self.binary(),
            Some('"') => self
                .string()
                .map(|s| Term::from(Binary::from(s.into_bytes()))),
            Some('\'') => self.quoted_atom().map(|a| Term::from(Atom::from(a))),
            Some(':') => {
                self.pos += 1;
                match self.peek() {
                    Some('"') => self.string().map(|a| Term::from(Atom::from(a))),
                    _ => self.bare_atom().map(|a| Term::from(Atom::from(a))),
                }
            }
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_lowercase() => {
                let a = self.bare_atom()?;
                // Elixir's `%{key: value}` shorthand ends an atom with a colon; not here.
                Ok(Term::from(Atom::from(a)))
            }
            Some(c) if c.is_uppercase() || c == '_' => {
                Err(self
                    .err("a variable is not a term (quote atoms that start with a capital: 'Web')"))
            }
            Some(_) => Err(self.err("unexpected character")),
        };
        self.depth -= 1;
        t
    }

    fn seq(&mut self, open: char, close: char) -> Result<Vec<Term>, ParseError> {
        self.expect(open)?;
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(self.term()?);
            if self.eat(close) {
                return Ok(out);
            }
            if !self.eat(',') {
                return Err(self.err(&format!("expected `,` or `{close}`")));
            }
        }
    }

    fn list(&mut self) -> Result<Term, ParseError> {
        self.expect('[')?;
        let mut out = Vec::new();
        if self.eat(']') {
            return Ok(Term::from(List::nil()));
        }
        loop {
            out.push(self.term()?);
            if self.eat(']') {
                return Ok(Term::from(List::from(out)));
            }
            if self.eat('|') {
                let tail = self.term()?;
                self.expect(']')?;
                return Ok(match tail {
                    Term::List(l) => {
                        out.extend(l.elements);
                        Term::from(List::from(out))
                    }
                    t => Term::from(ImproperList::from((out, t))),
                });
            }
            if !self.eat(',') {
                return Err(self.err("expected `,`, `|` or `]`"));
            }
        }
    }

    fn map(&mut self, arrow: &str) -> Result<Term, ParseError> {
        self.expect('{')?;
        let mut m = HashMap::new();
        if self.eat('}') {
            return Ok(Term::from(Map::from(m)));
        }
        loop {
            self.ws();
            // `key: value` (Elixir keyword shorthand) or `key => value`.
            let start = self.pos;
            let key = match self.peek() {
                Some(c) if c.is_lowercase() => {
                    let a = self.bare_atom()?;
                    if self.peek() == Some(':') {
                        self.pos += 1;
                        Some(Term::from(Atom::from(a)))
                    } else {
                        self.pos = start;
                        None
                    }
                }
                _ => None,
            };
            let key = match key {
                Some(k) => k,
                None => {
                    let k = self.term()?;
                    self.ws();
                    if !self.starts_with(arrow) {
                        return Err(self.err(&format!("expected `{arrow}`")));
                    }
                    self.pos += arrow.len();
                    k
                }
            };
            let v = self.term()?;
            let at = self.pos;
            if m.insert(key, v).is_some() {
                return Err(ParseError {
                    pos: at,
                    reason: "duplicate map key".into(),
                });
            }
            if self.eat('}') {
                return Ok(Term::from(Map::from(m)));
            }
            if !self.eat(',') {
                return Err(self.err("expected `,` or `}`"));
            }
        }
    }

    fn binary(&mut self) -> Result<Term, ParseError> {
        self.pos += 2; // <<
        let mut bytes = Vec::new();
        self.ws();
        if self.starts_with(">>") {
            self.pos += 2;
            return Ok(Term::from(Binary::from(bytes)));
        }
        loop {
            self.ws();
            match self.peek() {
                Some('"') => bytes.extend(self.string()?.into_bytes()),
                Some(c) if c.is_ascii_digit() => {
                    let at = self.pos;
                    let mut v: u32 = 0;
                    while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
                        v = v.saturating_mul(10).saturating_add(d);
                        self.pos += 1;
                    }
                    let b = u8::try_from(v).map_err(|_| ParseError {
                        pos: at,
                        reason: "a byte is 0..255".into(),
                    })?;
                    bytes.push(b);
                }
                _ => return Err(self.err("expected a byte or a string in a binary")),
            }
            self.ws();
            if self.starts_with(">>") {
                self.pos += 2;
                return Ok(Term::from(Binary::from(bytes)));
            }
            if !self.eat(',') {
                return Err(self.err("expected `,` or `>>`"));
            }
        }
    }

    fn escape(&mut self) -> Result<char, ParseError> {
        self.pos += 1; // backslash
        let c = self.peek().ok_or_else(|| self.err("unfinished escape"))?;
        self.pos += 1;
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            's' => ' ',
            '0' => '\0',
            other => other,
        })
    }

    fn string(&mut self) -> Result<String, ParseError> {
        self.quoted('"', "string")
    }

    /// Text between `delim`s, with backslash escapes; the cursor is on the opening one.
    fn quoted(&mut self, delim: char, what: &str) -> Result<String, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ParseError {
                        pos: start,
                        reason: format!("unterminated {what}"),
                    })
                }
                Some(c) if c == delim => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => out.push(self.escape()?),
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn quoted_atom(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        let out = self.quoted('\'', "quoted atom")?;
        if out.chars().count() > 255 {
            return Err(ParseError {
                pos: start,
                reason: "an atom has at most 255 characters".into(),
            });
        }
        Ok(out)
    }

    fn bare_atom(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '@' || c == '.')
        {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.err("expected an atom"));
        }
        let a: String = self.s[start..self.pos].iter().collect();
        if a.chars().count() > 255 {
            return Err(ParseError {
                pos: start,
                reason: "an atom has at most 255 characters".into(),
            });
        }
        Ok(a)
    }

    fn number(&mut self) -> Result<Term, ParseError> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '_') {
            self.pos += 1;
        }
        if self.pos == digits_start {
            return Err(self.err("expected a digit"));
        }
        let mut is_float = false;
        if self.peek() == Some('.') && self.s.get(self.pos + 1).is_some_and(|c| c.is_ascii_digit())
        {
            is_float = true;
            self.pos += 1;
            while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                self.pos += 1;
            }
            if matches!(self.peek(), Some('e' | 'E')) {
                self.pos += 1;
                if matches!(self.peek(), Some('+' | '-')) {
                    self.pos += 1;
                }
                while self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
        }
        let text: String = self.s[start..self.pos]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        let bad = || ParseError {
            pos: start,
            reason: format!("`{text}` is not a number"),
        };
        if is_float {
            let f: f64 = text.parse().map_err(|_| bad())?;
            if !f.is_finite() {
                return Err(bad());
            }
            return Ok(Term::from(Float::try_from(f).map_err(|_| bad())?));
        }
        match text.parse::<i32>() {
            Ok(i) => Ok(Term::from(FixInteger::from(i))),
            Err(_) => {
                let b: num_bigint::BigInt = text.parse().map_err(|_| bad())?;
                Ok(Term::from(BigInteger { value: b }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Role {
        parse_role(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_what_users_write() {
        assert_eq!(r("web"), Role::atom("web"));
        assert_eq!(r(":web"), Role::atom("web"));
        assert_eq!(r("'Web Server'"), Role::atom("Web Server"));
        assert_eq!(r("42"), Role::int(42));
        assert_eq!(r("-7"), Role::int(-7));
        assert_eq!(r("1.0"), Role::float(1.0));
        assert_ne!(r("1.0"), r("1"));
        assert_eq!(r("\"cache\""), Role::binary("cache"));
        assert_eq!(r("<<\"cache\">>"), Role::binary("cache"));
        assert_eq!(r("<<1,2>>"), Role::binary([1, 2]));
        assert_eq!(
            r("{shard, 1}"),
            Role::tuple(&[Role::atom("shard"), Role::int(1)])
        );
        assert_eq!(r("[1 | [2]]"), r("[1,2]"));
        assert_eq!(r("#{a => 1, b => 2}"), r("#{b => 2, a => 1}"));
        assert_eq!(r("%{a: 1}"), r("#{a => 1}"));
        assert_eq!(
            r("123456789012345678901234567890").to_string(),
            "123456789012345678901234567890"
        );
    }

    #[test]
    fn says_where_and_why() {
        let e = parse_role("{a, }").unwrap_err();
        assert_eq!(e.pos, 4);
        assert!(parse_role("Web").unwrap_err().reason.contains("variable"));
        assert!(parse_role("\"open")
            .unwrap_err()
            .reason
            .contains("unterminated"));
        assert_eq!(parse_role("a b").unwrap_err().pos, 2);
        assert!(parse_role("<<300>>").unwrap_err().reason.contains("byte"));
        assert!(parse_role("").is_err());
        assert!(parse_role(&"[".repeat(200))
            .unwrap_err()
            .reason
            .contains("deeply"));
    }
}
