//! The rule filter language (`when = "..."`).
//!
//! Small on purpose: comparisons, `contains`, `in`, `exists`, `and` / `or` / `not`, parentheses,
//! over paths into the event (`event.payload.project_id`, `event.payload.tags[0]`).
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | "exists" path | path op literal
//!          | path "contains" literal | path "in" "[" literal ("," literal)* "]"
//! op      := "==" | "!=" | "<" | "<=" | ">" | ">="
//! path    := name ("." name | "[" digits "]")*
//! literal := "string" | 'string' | number | true | false | null
//! ```
//!
//! Semantics: a path that does not exist reads as `null`. `==`/`!=` compare JSON values, with
//! numbers compared by value (`1 == 1.0`). Ordering works between two numbers or two strings;
//! anything else is false (never an error at run time: a rule must not crash on odd data).
//! `contains` is substring on strings and membership on arrays.

use std::fmt;

use serde_json::Value;

/// A parse error with the 1-based column in the filter text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct FilterError {
    /// 1-based character column where the problem is.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// A parsed filter, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
    /// Either holds.
    Or(Box<Filter>, Box<Filter>),
    /// The inner filter does not hold.
    Not(Box<Filter>),
    /// The path exists and is not null.
    Exists(Path),
    /// `path op literal`.
    Compare(Path, Op, Value),
    /// `path contains literal`.
    Contains(Path, Value),
    /// `path in [literals]`.
    In(Path, Vec<Value>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// An object key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path into the evaluation context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<Segment>);

impl Path {
    /// Reads the value at this path; `None` when any step is missing.
    pub fn lookup<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(root, |v, seg| match seg {
            Segment::Key(k) => v.get(k.as_str()),
            Segment::Index(i) => v.get(*i),
        })
    }

    /// Parses a path on its own (`event.payload.tags[0]`), as used inside template placeholders.
    pub fn parse(text: &str) -> Result<Path, FilterError> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            end: text.chars().count() + 1,
        };
        let path = p.path()?;
        match p.peek() {
            None => Ok(path),
            Some(t) => Err(p.err_at(
                t.column,
                format!("unexpected {} after the path", t.kind.describe()),
            )),
        }
    }

    /// The first key (`event`, `steps`): used to check paths against what a rule can see.
    pub fn root(&self) -> Option<&str> {
        match self.0.first()? {
            Segment::Key(k) => Some(k),
            Segment::Index(_) => None,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Key(k) if i == 0 => write!(f, "{k}")?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Filter {
    /// Parses filter text.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            end: text.chars().count() + 1,
        };
        let f = p.or()?;
        match p.peek() {
            None => Ok(f),
            Some(t) => Err(p.err_at(t.column, format!("unexpected {}", t.kind.describe()))),
        }
    }

    /// Every path the filter reads.
    pub fn paths(&self) -> Vec<&Path> {
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => {
                let mut v = a.paths();
                v.extend(b.paths());
                v
            }
            Filter::Not(a) => a.paths(),
            Filter::Exists(p)
            | Filter::Compare(p, _, _)
            | Filter::Contains(p, _)
            | Filter::In(p, _) => vec![p],
        }
    }

    /// Evaluates against `context` (e.g. `{"event": {...}}`).
    pub fn matches(&self, context: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(context) && b.matches(context),
            Filter::Or(a, b) => a.matches(context) || b.matches(context),
            Filter::Not(a) => !a.matches(context),
            Filter::Exists(p) => p.lookup(context).is_some_and(|v| !v.is_null()),
            Filter::Compare(p, op, lit) => {
                let v = p.lookup(context).unwrap_or(&Value::Null);
                compare(v, *op, lit)
            }
            Filter::Contains(p, lit) => match p.lookup(context) {
                Some(Value::String(s)) => lit.as_str().is_some_and(|needle| s.contains(needle)),
                Some(Value::Array(items)) => items.iter().any(|i| json_eq(i, lit)),
                _ => false,
            },
            Filter::In(p, list) => {
                let v = p.lookup(context).unwrap_or(&Value::Null);
                list.iter().any(|l| json_eq(v, l))
            }
        }
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

fn compare(v: &Value, op: Op, lit: &Value) -> bool {
    use std::cmp::Ordering;
    match op {
        Op::Eq => return json_eq(v, lit),
        Op::Ne => return !json_eq(v, lit),
        _ => {}
    }
    let ord: Option<Ordering> = match (v, lit) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => Some(i.cmp(&j)),
            _ => x
                .as_f64()
                .zip(y.as_f64())
                .and_then(|(a, b)| a.partial_cmp(&b)),
        },
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    ord.is_some_and(|o| match op {
        Op::Lt => o.is_lt(),
        Op::Le => o.is_le(),
        Op::Gt => o.is_gt(),
        Op::Ge => o.is_ge(),
        Op::Eq | Op::Ne => unreachable!("handled above"),
    })
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Name(String),
    Literal(Value),
    Op(Op),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Name(n) => format!("`{n}`"),
            Kind::Literal(v) => format!("literal {v}"),
            Kind::Op(_) => "operator".into(),
            Kind::LParen => "`(`".into(),
            Kind::RParen => "`)`".into(),
            Kind::LBracket => "`[`".into(),
            Kind::RBracket => "`]`".into(),
            Kind::Comma => "`,`".into(),
            Kind::Dot => "`.`".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    column: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let err = |message: String| FilterError { column, message };
        match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' | ')' | '[' | ']' | ',' | '.' => {
                let kind = match c {
                    '(' => Kind::LParen,
                    ')' => Kind::RParen,
                    '[' => Kind::LBracket,
                    ']' => Kind::RBracket,
                    ',' => Kind::Comma,
                    _ => Kind::Dot,
                };
                tokens.push(Token { kind, column });
                i += 1;
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', _) => (Op::Gt, 1),
                    ('=', _) => return Err(err("use `==` to compare".into())),
                    _ => return Err(err("use `!=` or `not`".into())),
                };
                tokens.push(Token {
                    kind: Kind::Op(op),
                    column,
                });
                i += len;
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err("unterminated string".into())),
                        Some('\\') => {
                            let esc = chars
                                .get(i + 1)
                                .ok_or_else(|| err("unterminated string".into()))?;
                            s.push(match esc {
                                'n' => '\n',
                                't' => '\t',
                                other => *other,
                            });
                            i += 2;
                        }
                        Some(ch) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token {
                    kind: Kind::Literal(Value::String(s)),
                    column,
                });
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|ch| ch.is_ascii_digit() || *ch == '.' || *ch == 'e' || *ch == 'E')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let value: Value =
                    serde_json::from_str(&text).map_err(|_| err(format!("bad number `{text}`")))?;
                tokens.push(Token {
                    kind: Kind::Literal(value),
                    column,
                });
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|ch| ch.is_alphanumeric() || *ch == '_')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let kind = match word.as_str() {
                    "true" => Kind::Literal(Value::Bool(true)),
                    "false" => Kind::Literal(Value::Bool(false)),
                    "null" => Kind::Literal(Value::Null),
                    _ => Kind::Name(word),
                };
                tokens.push(Token { kind, column });
            }
            other => return Err(err(format!("unexpected character `{other}`"))),
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    end: usize,
}

const KEYWORDS: [&str; 6] = ["and", "or", "not", "exists", "contains", "in"];

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }
    fn err_at(&self, column: usize, message: String) -> FilterError {
        FilterError { column, message }
    }
    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.column)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: Kind::Name(n), .. }) if n == word)
    }
    fn expect(&mut self, kind: &Kind, what: &str) -> Result<(), FilterError> {
        match self.peek() {
            Some(t) if &t.kind == kind => {
                self.pos += 1;
                Ok(())
            }
            Some(t) => Err(self.err_at(
                t.column,
                format!("expected {what}, found {}", t.kind.describe()),
            )),
            None => Err(self.err_at(self.end, format!("expected {what} at the end"))),
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while self.is_word("or") {
            self.pos += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.unary()?;
        while self.is_word("and") {
            self.pos += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.is_word("not") {
            self.pos += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if matches!(
            self.peek(),
            Some(Token {
                kind: Kind::LParen,
                ..
            })
        ) {
            self.pos += 1;
            let inner = self.or()?;
            self.expect(&Kind::RParen, "`)`")?;
            return Ok(inner);
        }
        if self.is_word("exists") {
            self.pos += 1;
            return Ok(Filter::Exists(self.path()?));
        }
        let path = self.path()?;
        let column = self.here();
        match self.next() {
            Some(Token { kind: Kind::Op(op), .. }) => Ok(Filter::Compare(path, op, self.literal()?)),
            Some(Token { kind: Kind::Name(w), .. }) if w == "contains" => Ok(Filter::Contains(path, self.literal()?)),
            Some(Token { kind: Kind::Name(w), .. }) if w == "in" => {
                self.expect(&Kind::LBracket, "`[`")?;
                let mut items = vec![self.literal()?];
                while matches!(self.peek(), Some(Token { kind: Kind::Comma, .. })) {
                    self.pos += 1;
                    items.push(self.literal()?);
                }
                self.expect(&Kind::RBracket, "`]`")?;
                Ok(Filter::In(path, items))
            }
            Some(t) => Err(self.err_at(
                t.column,
                format!("expected `==`, `!=`, `<`, `<=`, `>`, `>=`, `contains` or `in` after `{path}`, found {}", t.kind.describe()),
            )),
            None => Err(self.err_at(column, format!("expected a comparison after `{path}`"))),
        }
    }

    fn literal(&mut self) -> Result<Value, FilterError> {
        let column = self.here();
        match self.next() {
            Some(Token {
                kind: Kind::Literal(v),
                ..
            }) => Ok(v),
            Some(t) => Err(self.err_at(
                t.column,
                format!(
                    "expected a value (string, number, true, false, null), found {}",
                    t.kind.describe()
                ),
            )),
            None => Err(self.err_at(column, "expected a value at the end".into())),
        }
    }

    fn path(&mut self) -> Result<Path, FilterError> {
        let column = self.here();
        let first = match self.next() {
            Some(Token {
                kind: Kind::Name(n),
                ..
            }) if !KEYWORDS.contains(&n.as_str()) => n,
            Some(t) => {
                return Err(self.err_at(
                    t.column,
                    format!(
                        "expected a field path such as `event.payload.id`, found {}",
                        t.kind.describe()
                    ),
                ));
            }
            None => return Err(self.err_at(column, "expected a field path at the end".into())),
        };
        let mut segs = vec![Segment::Key(first)];
        loop {
            match self.peek().map(|t| t.kind.clone()) {
                Some(Kind::Dot) => {
                    self.pos += 1;
                    let column = self.here();
                    match self.next() {
                        Some(Token {
                            kind: Kind::Name(n),
                            ..
                        }) => segs.push(Segment::Key(n)),
                        _ => {
                            return Err(
                                self.err_at(column, "expected a field name after `.`".into())
                            );
                        }
                    }
                }
                Some(Kind::LBracket) => {
                    self.pos += 1;
                    let column = self.here();
                    match self.next() {
                        Some(Token {
                            kind: Kind::Literal(Value::Number(n)),
                            ..
                        }) if n.as_u64().is_some() => {
                            let i = usize::try_from(n.as_u64().expect("checked"))
                                .map_err(|_| self.err_at(column, "index too large".into()))?;
                            segs.push(Segment::Index(i));
                        }
                        Some(Token {
                            kind: Kind::Literal(Value::String(s)),
                            ..
                        }) => segs.push(Segment::Key(s)),
                        _ => {
                            return Err(self.err_at(
                                column,
                                "expected an index or a quoted key inside `[...]`".into(),
                            ));
                        }
                    }
                    self.expect(&Kind::RBracket, "`]`")?;
                }
                _ => break,
            }
        }
        Ok(Path(segs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx() -> Value {
        json!({"event": {"trigger": "time_entry_stopped", "payload": {
            "id": 5, "project_id": null, "duration": 3600, "description": "Weekly sync",
            "tags": ["meeting", "internal"], "billable": false, "workspace_id": 9}}})
    }

    fn check(text: &str) -> bool {
        Filter::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .matches(&ctx())
    }

    #[test]
    fn comparisons_and_logic() {
        assert!(check("event.payload.project_id == null"));
        assert!(check("not exists event.payload.project_id"));
        assert!(check(
            "event.payload.duration >= 3600 and event.payload.duration < 7200"
        ));
        assert!(check("event.payload.duration == 3600.0"));
        assert!(check("event.payload.description contains 'sync'"));
        assert!(check("event.payload.tags contains \"meeting\""));
        assert!(check("event.payload.tags[1] == 'internal'"));
        assert!(check("event.payload.workspace_id in [1, 9]"));
        assert!(check(
            "event.trigger == 'x' or (event.payload.billable == false and not event.payload.id != 5)"
        ));
        assert!(!check("event.payload.missing.deeper > 3"));
        assert!(!check("event.payload.description > 3"));
    }

    #[test]
    fn errors_point_at_the_column() {
        let e = Filter::parse("event.payload.id = 3").expect_err("single =");
        assert_eq!(e.column, 18);
        let e = Filter::parse("event.payload.id == ").expect_err("missing value");
        assert!(e.message.contains("expected a value"), "{e}");
        let e = Filter::parse("(event.a == 1").expect_err("unclosed");
        assert!(e.message.contains("`)`"), "{e}");
        let e = Filter::parse("event.a == 'x").expect_err("unterminated");
        assert_eq!(e.column, 12);
        let e = Filter::parse("event.a == 1 extra").expect_err("trailing");
        assert_eq!(e.column, 14);
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = Filter::parse("event.a == 1 or event.b == 2 and event.c == 3").expect("parses");
        assert!(matches!(f, Filter::Or(_, _)));
    }

    proptest! {
        #[test]
        fn parser_never_panics(text in ".{0,64}") {
            let _ = Filter::parse(&text);
        }

        #[test]
        fn string_literals_round_trip(s in "[^\\\\']{0,32}") {
            let f = Filter::parse(&format!("event.x == '{s}'")).expect("quoted string parses");
            let ctx = json!({"event": {"x": s}});
            prop_assert!(f.matches(&ctx));
        }
    }
}
