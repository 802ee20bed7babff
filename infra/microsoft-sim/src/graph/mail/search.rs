//! `$search` on message collections: the subset of KQL the sim understands, parsed into an expression and
//! evaluated against stored messages.
//!
//! Microsoft's contract (https://learn.microsoft.com/graph/search-query-parameter, "Using $search on message
//! collections", read 2026-12-06): "You can search messages based on a value in specific message properties. The
//! results of the search are sorted by the date and time that the message was sent. A $search request returns up
//! to 1000 results." The searchable properties used here: **participants** ("The from, to, cc, and bcc fields of
//! an email message, specified as an SMTP address, display name, or alias"), **from**, **to**, **cc**, **bcc**,
//! **recipients** ("The to, cc, and bcc fields"), **received** ("The date that an email message was received by a
//! recipient", example `received:07/23/2018`) and **sent**; a value without a property searches "the default
//! search properties of from, subject, and body".
//!
//! Grammar (everything else is a 400 `BadRequest` naming what is supported; see docs/mail.md):
//!
//! ```text
//! search  := '"' kql '"' | kql                 (the doc shows both $search="pizza" and $search=pizza)
//! kql     := or
//! or      := and ( "OR" and )*
//! and     := unary ( [ "AND" ] unary )*        (adjacency means AND; AND binds tighter than OR, as in KQL)
//! unary   := "(" or ")" | term
//! term    := addrprop ":" value | dateprop dateop date | value
//! addrprop:= participants | from | to | cc | bcc | recipients          (any case)
//! dateprop:= received | sent                                           (any case)
//! dateop  := ":" | ">=" | "<=" | ">" | "<"
//! date    := YYYY-MM-DD | M/D/YYYY
//! value   := word | \"phrase with spaces\"     (inner quotes backslash-escaped inside the outer ones)
//! ```
//!
//! Matching (case-insensitive): an address value (with `@`) equals an SMTP address of the named fields; a value
//! without `@` equals an address's local part (the alias) or a whole word, or run of words, of a display name.
//! Dates compare UTC days. A bare value is a substring of the from name or address, the subject or the body text.

use serde_json::Value;
use time::Date;

use super::render::content_property;
use super::store::MessageRecord;
use super::text::html_to_text;
use crate::generate::Owner;

/// "A $search request returns up to 1000 results" (search-query-parameter, read 2026-12-06).
pub const MAX_RESULTS: usize = 1000;

const FROM: u8 = 1;
const TO: u8 = 2;
const CC: u8 = 4;
const BCC: u8 = 8;

/// What the sim supports, for every refusal.
pub const SUPPORTED: &str = "microsoft-sim supports $search on messages with participants:, from:, to:, cc:, bcc:, \
     recipients: (an SMTP address, or an alias or display-name word, or \\\"a phrase\\\"), received and sent with \
     :, >=, <=, >, < and a date YYYY-MM-DD or MM/DD/YYYY, bare words (from, subject, body), AND, OR (upper case), \
     adjacency (AND) and parentheses, the whole query in double quotes";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Term(Term),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// `fields` is a set of FROM/TO/CC/BCC bits.
    Party {
        fields: u8,
        value: Needle,
    },
    Date {
        sent: bool,
        op: DateOp,
        day: Date,
    },
    /// A bare value, lower-cased: a substring of from, subject or body.
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needle {
    /// A full SMTP address, lower-cased.
    Address(String),
    /// An alias or display-name words, lower-cased (one word, or a phrase's words).
    Words(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOp {
    On,
    Ge,
    Le,
    Gt,
    Lt,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    /// A word, with the phrases it contained already unquoted; `plain` is how many leading bytes of `text` were
    /// not inside a phrase (only they can hold a property name and its operator).
    Word {
        text: String,
        plain: usize,
    },
}

/// Parses a `$search` value. `Err` is the message of the 400.
pub fn parse(raw: &str) -> Result<Expr, String> {
    let trimmed = raw.trim();
    let kql = match trimmed.strip_prefix('"') {
        Some(rest) => rest
            .strip_suffix('"')
            .filter(|inner| !inner.ends_with('\\'))
            .ok_or_else(|| {
                format!(
                    "The $search value {raw:?} opens a double quote it does not close. {SUPPORTED}."
                )
            })?,
        None => trimmed,
    };
    let tokens = tokenize(kql)?;
    if tokens.is_empty() {
        return Err(format!("The $search value is empty. {SUPPORTED}."));
    }
    let mut parser = Parser { tokens, at: 0 };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!(
            "Syntax error in $search near token {} ({:?}). {SUPPORTED}.",
            parser.at + 1,
            parser.tokens[parser.at]
        ));
    }
    Ok(expr)
}

fn tokenize(kql: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = kql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '(' {
            tokens.push(Token::Open);
            i += 1;
            continue;
        }
        if c == ')' {
            tokens.push(Token::Close);
            i += 1;
            continue;
        }
        let mut text = String::new();
        let mut plain: Option<usize> = None;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '(' && chars[i] != ')' {
            match chars[i] {
                '\\' if chars.get(i + 1) == Some(&'"') => {
                    // A phrase: everything up to the next escaped quote, spaces included.
                    let start = i + 2;
                    let mut j = start;
                    while j < chars.len() && !(chars[j] == '\\' && chars.get(j + 1) == Some(&'"')) {
                        if chars[j] == '"' {
                            return Err(format!(
                                "An unescaped double quote inside a $search phrase. {SUPPORTED}."
                            ));
                        }
                        j += 1;
                    }
                    if j >= chars.len() {
                        return Err(format!("A $search phrase is not closed. {SUPPORTED}."));
                    }
                    plain.get_or_insert(text.len());
                    text.extend(&chars[start..j]);
                    i = j + 2;
                }
                '"' => {
                    return Err(format!(
                        "A double quote inside the $search query must be escaped (\\\"). {SUPPORTED}."
                    ));
                }
                '\\' => {
                    return Err(format!(
                        "A backslash in $search escapes only a double quote. {SUPPORTED}."
                    ));
                }
                other => {
                    text.push(other);
                    i += 1;
                }
            }
        }
        let quoted = plain.is_some();
        let plain = plain.unwrap_or(text.len());
        tokens.push(match (text.as_str(), quoted) {
            ("AND", false) => Token::And,
            ("OR", false) => Token::Or,
            ("NOT", false) => {
                return Err(format!(
                    "microsoft-sim does not support NOT in $search. {SUPPORTED}."
                ));
            }
            _ => Token::Word { text, plain },
        });
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.unary()?];
        loop {
            match self.peek() {
                Some(Token::And) => {
                    self.at += 1;
                    parts.push(self.unary()?);
                }
                Some(Token::Open) | Some(Token::Word { .. }) => parts.push(self.unary()?),
                _ => break,
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, String> {
        let at = self.at + 1;
        match self.tokens.get(self.at).cloned() {
            Some(Token::Open) => {
                self.at += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(format!(
                        "An unbalanced parenthesis in $search. {SUPPORTED}."
                    ));
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Word { text, plain }) => {
                self.at += 1;
                term(&text, plain).map(Expr::Term)
            }
            Some(other) => Err(format!(
                "Syntax error in $search at token {at} ({other:?}): an operand was expected. {SUPPORTED}."
            )),
            None => Err(format!(
                "Syntax error in $search: the query ends where an operand was expected. {SUPPORTED}."
            )),
        }
    }
}

fn term(text: &str, plain: usize) -> Result<Term, String> {
    // A property restriction only outside phrases: `\"re: pricing\"` is a bare phrase.
    let Some(at) = text[..plain].find([':', '<', '>', '=']) else {
        if text.contains('*') {
            return Err(format!(
                "microsoft-sim does not support wildcards (*) in $search. {SUPPORTED}."
            ));
        }
        return Ok(Term::Text(text.to_lowercase()));
    };
    let property = text[..at].to_ascii_lowercase();
    let rest = &text[at..];
    let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
        (">=", v)
    } else if let Some(v) = rest.strip_prefix("<=") {
        ("<=", v)
    } else {
        rest.split_at(1)
    };
    if value.trim().is_empty() {
        return Err(format!(
            "The $search restriction {text:?} has no value. {SUPPORTED}."
        ));
    }
    let fields = match property.as_str() {
        "participants" => Some(FROM | TO | CC | BCC),
        "from" => Some(FROM),
        "to" => Some(TO),
        "cc" => Some(CC),
        "bcc" => Some(BCC),
        "recipients" => Some(TO | CC | BCC),
        _ => None,
    };
    if let Some(fields) = fields {
        if op != ":" {
            return Err(format!(
                "microsoft-sim supports only ':' with {property} in $search, not {op:?}. {SUPPORTED}."
            ));
        }
        if value.contains('*') {
            return Err(format!(
                "microsoft-sim does not support wildcards (*) in $search. {SUPPORTED}."
            ));
        }
        let value = value.trim().to_lowercase();
        let needle = if value.contains('@') {
            if value.contains(char::is_whitespace) {
                return Err(format!("{value:?} is not an SMTP address. {SUPPORTED}."));
            }
            Needle::Address(value)
        } else {
            Needle::Words(words(&value))
        };
        if matches!(&needle, Needle::Words(w) if w.is_empty()) {
            return Err(format!(
                "The $search restriction {text:?} has no word to match. {SUPPORTED}."
            ));
        }
        return Ok(Term::Party {
            fields,
            value: needle,
        });
    }
    let sent = match property.as_str() {
        "received" => false,
        "sent" => true,
        "attachment" | "body" | "hasattachment" | "hasattachments" | "importance" | "kind"
        | "size" | "subject" => {
            return Err(format!(
                "microsoft-sim does not support the {property:?} property in $search. {SUPPORTED}."
            ));
        }
        _ => {
            return Err(format!(
                "{property:?} is not a searchable message property (or not one microsoft-sim supports). {SUPPORTED}."
            ));
        }
    };
    let op = match op {
        ":" => DateOp::On,
        ">=" => DateOp::Ge,
        "<=" => DateOp::Le,
        ">" => DateOp::Gt,
        "<" => DateOp::Lt,
        _ => {
            return Err(format!(
                "microsoft-sim does not support {op:?} with {property} in $search. {SUPPORTED}."
            ));
        }
    };
    let day = parse_day(value.trim()).ok_or_else(|| {
        format!("{value:?} is not a date microsoft-sim understands (YYYY-MM-DD or MM/DD/YYYY). {SUPPORTED}.")
    })?;
    Ok(Term::Date { sent, op, day })
}

/// `YYYY-MM-DD`, or `M/D/YYYY` (Microsoft's example form, `received:07/23/2018`).
fn parse_day(value: &str) -> Option<Date> {
    let numbers = |parts: Vec<&str>| -> Option<Vec<i32>> {
        parts
            .iter()
            .map(|p| {
                (!p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
            })
            .collect()
    };
    let (year, month, day) = if value.contains('-') {
        let parts: Vec<&str> = value.split('-').collect();
        if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
            return None;
        }
        let n = numbers(parts)?;
        (n[0], n[1], n[2])
    } else {
        let parts: Vec<&str> = value.split('/').collect();
        if parts.len() != 3 || parts[2].len() != 4 || parts[0].len() > 2 || parts[1].len() > 2 {
            return None;
        }
        let n = numbers(parts)?;
        (n[2], n[0], n[1])
    };
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()
}

/// Lower-cased words of a display name or a value: split at white space and the punctuation names are quoted or
/// listed with (`,;()<>"[]`), outer dots and quotes dropped.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || ",;()<>\"[]".contains(c))
        .map(|w| w.trim_matches(|c: char| c == '.' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl Expr {
    fn needs_text(&self) -> bool {
        match self {
            Expr::Or(parts) | Expr::And(parts) => parts.iter().any(Expr::needs_text),
            Expr::Term(Term::Text(_)) => true,
            Expr::Term(_) => false,
        }
    }

    fn eval(&self, facts: &Facts) -> bool {
        match self {
            Expr::Or(parts) => parts.iter().any(|p| p.eval(facts)),
            Expr::And(parts) => parts.iter().all(|p| p.eval(facts)),
            Expr::Term(term) => term.eval(facts),
        }
    }
}

impl Term {
    fn eval(&self, facts: &Facts) -> bool {
        match self {
            Term::Party { fields, value } => facts
                .parties
                .iter()
                .filter(|(field, _, _)| field & fields != 0)
                .any(|(_, name, address)| party_matches(value, name, address)),
            Term::Date { sent, op, day } => {
                let at = if *sent { facts.sent } else { facts.received };
                let Some(at) = time::OffsetDateTime::from_unix_timestamp(at).ok() else {
                    return false;
                };
                let d = at.date();
                match op {
                    DateOp::On => d == *day,
                    DateOp::Ge => d >= *day,
                    DateOp::Le => d <= *day,
                    DateOp::Gt => d > *day,
                    DateOp::Lt => d < *day,
                }
            }
            Term::Text(needle) => facts
                .text
                .as_deref()
                .is_some_and(|t| t.contains(needle.as_str())),
        }
    }
}

fn party_matches(needle: &Needle, name: &str, address: &str) -> bool {
    match needle {
        Needle::Address(a) => address.eq_ignore_ascii_case(a) || address.to_lowercase() == *a,
        Needle::Words(want) => {
            let local = address.split('@').next().unwrap_or_default().to_lowercase();
            if want.len() == 1 && local == want[0] {
                return true;
            }
            let have = words(name);
            have.windows(want.len()).any(|w| w == want.as_slice())
        }
    }
}

/// What a search reads of one message.
struct Facts {
    /// (field bit, display name, address)
    parties: Vec<(u8, String, String)>,
    sent: i64,
    received: i64,
    /// Lower-cased from name and address, subject and body text, when a bare word needs them.
    text: Option<String>,
}

fn recipients(value: &Value, field: u8, out: &mut Vec<(u8, String, String)>) {
    let mut push = |r: &Value| {
        let email = r.get("emailAddress").unwrap_or(&Value::Null);
        let name = email
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let address = email
            .get("address")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !name.is_empty() || !address.is_empty() {
            out.push((field, name.to_owned(), address.to_owned()));
        }
    };
    match value {
        Value::Array(items) => items.iter().for_each(&mut push),
        Value::Object(_) => push(value),
        _ => {}
    }
}

fn facts(rec: &MessageRecord, owner: &Owner, with_text: bool) -> Facts {
    let mut parties = Vec::new();
    let from = content_property(rec, "from", owner);
    recipients(&from, FROM, &mut parties);
    for (prop, bit) in [
        ("toRecipients", TO),
        ("ccRecipients", CC),
        ("bccRecipients", BCC),
    ] {
        recipients(&content_property(rec, prop, owner), bit, &mut parties);
    }
    // A message without a sentDateTime (a draft that never left) sorts and matches by its received time.
    let sent = content_property(rec, "sentDateTime", owner)
        .as_str()
        .and_then(super::query::parse_datetime_literal)
        .map(|t| t.unix_timestamp())
        .unwrap_or(rec.received);
    let text = with_text.then(|| {
        let mut text = String::new();
        if let Some((_, name, address)) = parties.iter().find(|(f, _, _)| *f == FROM) {
            text.push_str(name);
            text.push(' ');
            text.push_str(address);
            text.push('\n');
        }
        if let Some(subject) = content_property(rec, "subject", owner).as_str() {
            text.push_str(subject);
            text.push('\n');
        }
        let body = content_property(rec, "body", owner);
        let content = body
            .get("content")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let html = body
            .get("contentType")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("html"));
        if html {
            text.push_str(&html_to_text(content));
        } else {
            text.push_str(content);
        }
        text.to_lowercase()
    });
    Facts {
        parties,
        sent,
        received: rec.received,
        text,
    }
}

/// The keys of the messages in `keys` that `expr` matches, newest sent first (ties: newest key first), at most
/// [`MAX_RESULTS`].
pub fn run<'a>(
    expr: &Expr,
    keys: impl Iterator<Item = (u32, &'a MessageRecord)>,
    owner: &Owner,
) -> Vec<u32> {
    let with_text = expr.needs_text();
    let mut hits: Vec<(i64, u32)> = keys
        .filter_map(|(key, rec)| {
            let facts = facts(rec, owner, with_text);
            expr.eval(&facts).then_some((facts.sent, key))
        })
        .collect();
    hits.sort_unstable_by(|a, b| b.cmp(a));
    hits.truncate(MAX_RESULTS);
    hits.into_iter().map(|(_, key)| key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(v: &[&str]) -> Needle {
        Needle::Words(v.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn and_binds_tighter_than_or_and_adjacency_is_and() {
        let e = parse("\"participants:jane@acme.com OR participants:Bob@Initech.com AND received>=2026-06-01\"")
            .unwrap();
        let jane = Expr::Term(Term::Party {
            fields: FROM | TO | CC | BCC,
            value: Needle::Address("jane@acme.com".into()),
        });
        let bob = Expr::Term(Term::Party {
            fields: FROM | TO | CC | BCC,
            value: Needle::Address("bob@initech.com".into()),
        });
        let june = Expr::Term(Term::Date {
            sent: false,
            op: DateOp::Ge,
            day: Date::from_calendar_date(2026, time::Month::June, 1).unwrap(),
        });
        assert_eq!(
            e,
            Expr::Or(vec![
                jane.clone(),
                Expr::And(vec![bob.clone(), june.clone()])
            ])
        );
        let grouped = parse(
            "(Participants:jane@acme.com OR participants:bob@initech.com) received>=2026-06-01",
        )
        .unwrap();
        assert_eq!(grouped, Expr::And(vec![Expr::Or(vec![jane, bob]), june]));
    }

    #[test]
    fn values_and_dates() {
        assert_eq!(
            parse("\"from:randiw\"").unwrap(),
            Expr::Term(Term::Party {
                fields: FROM,
                value: words_of(&["randiw"])
            })
        );
        assert_eq!(
            parse("\"to:\\\"Jane Doe\\\"\"").unwrap(),
            Expr::Term(Term::Party {
                fields: TO,
                value: words_of(&["jane", "doe"])
            })
        );
        assert_eq!(
            parse("\"received:07/23/2018\"").unwrap(),
            Expr::Term(Term::Date {
                sent: false,
                op: DateOp::On,
                day: Date::from_calendar_date(2018, time::Month::July, 23).unwrap()
            })
        );
        assert_eq!(
            parse("pizza").unwrap(),
            Expr::Term(Term::Text("pizza".into()))
        );
        assert_eq!(
            parse("\"\\\"Re: Pricing\\\"\"").unwrap(),
            Expr::Term(Term::Text("re: pricing".into()))
        );
    }

    #[test]
    fn refusals() {
        for bad in [
            "\"\"",
            "\"subject:has\"",
            "\"participants>=jane@acme.com\"",
            "\"received:2026-13-01\"",
            "\"received:2026-6-1\"",
            "\"received:2026-06-01..2026-07-01\"",
            "\"NOT from:jane\"",
            "\"from:jane OR\"",
            "\"(from:jane\"",
            "\"from:jane)\"",
            "\"from:ja*\"",
            "\"from:\"jane\"\"",
            "\"participants:jane@acme.com",
            "\"nosuch:thing\"",
            "\"received=2026-06-01\"",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn party_matching() {
        let alias = words_of(&["danas"]);
        assert!(party_matches(&alias, "Dana Swope", "DanaS@contoso.com"));
        assert!(!party_matches(&alias, "Dana Swope", "dana@contoso.com"));
        assert!(party_matches(
            &words_of(&["swope"]),
            "Dana Swope",
            "dana@contoso.com"
        ));
        assert!(!party_matches(
            &words_of(&["swop"]),
            "Dana Swope",
            "dana@contoso.com"
        ));
        assert!(party_matches(
            &words_of(&["dana", "swope"]),
            "Swope, Dana Swope",
            "x@y"
        ));
        assert!(!party_matches(
            &words_of(&["swope", "x"]),
            "Dana Swope",
            "x@y"
        ));
        let exact = Needle::Address("jane@acme.com".into());
        assert!(party_matches(&exact, "", "Jane@ACME.com"));
        assert!(!party_matches(&exact, "", "jane@acme.com.au"));
    }
}
