//! Many statements in one round trip: a batch's writes to all its tenants are sent as one
//! multi-statement query per step, so a batch costs the same few round trips whether it spans
//! one tenant or a thousand.
//!
//! A multi-statement query has no parameters, so each [`Statement`]'s values are rendered as
//! SQL literals: an escape string (`E'…'`, read the same whatever `standard_conforming_strings`
//! says) holding an array literal, cast to the parameter's type. Every character that means
//! something to either is escaped, and a string holding NUL (which Postgres text cannot hold
//! and which would end the query text) is refused before anything is sent.
//!
//! Postgres runs the statements of such a query one after the other and stops at the first
//! that fails; [`Script::run`] returns the rows of each statement, or the failing statement's
//! tag, so the caller knows whose write it was.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use sqlx::postgres::PgRow;
use sqlx::{Either, PgConnection};
use tracing::Instrument;

use super::failure::sqlstate;
use super::prepared::Session;
use super::tenant_tx::switch_statement;
use crate::model::TenantId;
use crate::telemetry::spans;

/// The values of one `$n` parameter: a column of an `unnest(…)`, or one scalar.
#[derive(Debug, Clone)]
pub enum Param<'a> {
    Text(Vec<Option<&'a str>>),
    Bool(Vec<Option<bool>>),
    Int2(Vec<Option<i16>>),
    Int4(Vec<Option<i32>>),
    Int8(Vec<Option<i64>>),
    Date(Vec<Option<NaiveDate>>),
    Timestamptz(Vec<Option<DateTime<Utc>>>),
    /// One `text` value.
    Scalar(&'a str),
}

/// What a parameter can be made from (the column types the store's statements bind).
pub trait IntoParam<'a> {
    fn into_param(self) -> Param<'a>;
}

macro_rules! into_param {
    ($variant:ident, $t:ty) => {
        impl<'a> IntoParam<'a> for Vec<Option<$t>> {
            fn into_param(self) -> Param<'a> {
                Param::$variant(self)
            }
        }
        impl<'a> IntoParam<'a> for Vec<$t> {
            fn into_param(self) -> Param<'a> {
                Param::$variant(self.into_iter().map(Some).collect())
            }
        }
    };
}

into_param!(Text, &'a str);
into_param!(Bool, bool);
into_param!(Int2, i16);
into_param!(Int4, i32);
into_param!(Int8, i64);
into_param!(Date, NaiveDate);
into_param!(Timestamptz, DateTime<Utc>);

impl<'a> IntoParam<'a> for &'a str {
    fn into_param(self) -> Param<'a> {
        Param::Scalar(self)
    }
}

/// A statement of the store with its parameters (`$1` is the first bound).
#[derive(Debug, Clone)]
pub struct Statement<'a> {
    sql: &'static str,
    params: Vec<Param<'a>>,
}

/// A value that cannot be sent as SQL text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a text value holds a NUL character, which Postgres cannot store")]
pub struct Unrenderable;

impl<'a> Statement<'a> {
    pub fn new(sql: &'static str) -> Self {
        Statement {
            sql,
            params: Vec::new(),
        }
    }

    /// Binds the next parameter.
    pub fn bind(mut self, value: impl IntoParam<'a>) -> Self {
        self.params.push(value.into_param());
        self
    }

    /// The statement's text, with its `$n` parameters.
    pub fn sql(&self) -> &'static str {
        self.sql
    }

    /// The types of its parameters, in order (for a `PREPARE`).
    pub fn param_types(&self) -> Vec<&'static str> {
        self.params.iter().map(Param::type_name).collect()
    }

    /// `EXECUTE name(…)` of this statement prepared as `name`, its parameters as literals.
    pub fn render_execute(&self, name: &str, out: &mut String) -> Result<(), Unrenderable> {
        out.push_str("EXECUTE ");
        out.push_str(name);
        out.push('(');
        for (k, param) in self.params.iter().enumerate() {
            if k > 0 {
                out.push(',');
            }
            literal(param, out, true)?;
        }
        out.push(')');
        Ok(())
    }

    /// The statement with its parameters replaced by literals.
    pub fn render(&self, out: &mut String) -> Result<(), Unrenderable> {
        let sql = self.sql;
        let bytes = sql.as_bytes();
        let mut from = 0;
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                let start = i + 1;
                let mut end = start;
                while bytes.get(end).is_some_and(u8::is_ascii_digit) {
                    end += 1;
                }
                let n: usize = sql[start..end].parse().expect("digits");
                let param = n
                    .checked_sub(1)
                    .and_then(|n| self.params.get(n))
                    .unwrap_or_else(|| panic!("statement uses ${n}, which is not bound"));
                out.push_str(&sql[from..i]);
                literal(param, out, !sql[end..].starts_with("::"))?;
                from = end;
                i = end;
            } else {
                i += 1;
            }
        }
        out.push_str(&sql[from..]);
        Ok(())
    }
}

impl Param<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Param::Scalar(_) => "text",
            Param::Text(_) => "text[]",
            Param::Bool(_) => "bool[]",
            Param::Int2(_) => "int2[]",
            Param::Int4(_) => "int4[]",
            Param::Int8(_) => "int8[]",
            Param::Date(_) => "date[]",
            Param::Timestamptz(_) => "timestamptz[]",
        }
    }
}

/// Appends `param` as a literal of its type; `cast` adds the type (left out when the statement
/// casts the parameter itself, so the type is looked up once).
fn literal(param: &Param<'_>, out: &mut String, cast: bool) -> Result<(), Unrenderable> {
    match param {
        Param::Scalar(s) => {
            if s.contains('\0') {
                return Err(Unrenderable);
            }
            quoted(out, s);
        }
        Param::Text(values) => {
            let mut content = String::with_capacity(
                2 + values
                    .iter()
                    .map(|v| v.map_or(5, |s| s.len() + 3))
                    .sum::<usize>(),
            );
            content.push('{');
            for (k, v) in values.iter().enumerate() {
                if k > 0 {
                    content.push(',');
                }
                match v {
                    None => content.push_str("NULL"),
                    Some(s) => {
                        content.push('"');
                        for c in s.chars() {
                            match c {
                                '\0' => return Err(Unrenderable),
                                '\\' => content.push_str("\\\\"),
                                '"' => content.push_str("\\\""),
                                c => content.push(c),
                            }
                        }
                        content.push('"');
                    }
                }
            }
            content.push('}');
            quoted(out, &content);
        }
        Param::Bool(v) => array(out, v, |o, b| o.push(if *b { 't' } else { 'f' })),
        Param::Int2(v) => array(out, v, |o, n| write!(o, "{n}").expect("write")),
        Param::Int4(v) => array(out, v, |o, n| write!(o, "{n}").expect("write")),
        Param::Int8(v) => array(out, v, |o, n| write!(o, "{n}").expect("write")),
        Param::Date(v) => array(out, v, |o, d| {
            write!(o, "{}", d.format("%Y-%m-%d")).expect("write")
        }),
        Param::Timestamptz(v) => array(out, v, |o, t| {
            write!(o, "\"{}\"", t.format("%Y-%m-%d %H:%M:%S%.6f+00")).expect("write")
        }),
    }
    if cast {
        out.push_str("::");
        out.push_str(param.type_name());
    }
    Ok(())
}

/// The delimiter of the dollar-quoted strings values are sent in.
const DOLLAR: &str = "$v$";

/// `s` as a string constant: dollar-quoted (read as is, so long JSON costs the server no
/// escape processing), or as an escape string when `s` could end the quote early.
fn quoted(out: &mut String, s: &str) {
    // The string ends at the first delimiter in `s` followed by the closing one, so `s` may
    // neither hold it nor end with a beginning of it. A space keeps the quote from joining a
    // preceding identifier.
    if !s.contains(DOLLAR) && !s.ends_with('$') && !s.ends_with("$v") {
        out.push(' ');
        out.push_str(DOLLAR);
        out.push_str(s);
        out.push_str(DOLLAR);
        return;
    }
    out.push_str(" E'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// An array literal of values whose text needs no escaping.
fn array<T>(out: &mut String, values: &[Option<T>], item: impl Fn(&mut String, &T)) {
    out.push_str(" '{");
    for (k, v) in values.iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        match v {
            None => out.push_str("NULL"),
            Some(v) => item(out, v),
        }
    }
    out.push_str("}'");
}

/// Statements sent as one query, each tagged with whose it is.
pub struct Script<T> {
    sql: String,
    tags: Vec<T>,
    prepares: Vec<Prepare<T>>,
    /// What the round trip does, as its trace span names it (never the SQL).
    operation: &'static str,
}

/// A statement to prepare before a script runs, in a query of its own that switches to its
/// tenant's schema and prepares it (see [`super::prepared`]).
pub struct Prepare<T> {
    pub tag: T,
    pub switch: String,
    pub prepare: String,
    pub name: String,
}

/// The statement of a script that failed, and why.
#[derive(Debug)]
pub struct ScriptError<T> {
    /// The failing statement's tag; `None` when the query as a whole failed (connection lost).
    pub tag: Option<T>,
    pub error: sqlx::Error,
}

impl<T> ScriptError<T> {
    /// A failure of statement `tag` found after its script ran.
    pub fn after(tag: Option<T>, error: sqlx::Error) -> Self {
        ScriptError { tag, error }
    }
}

impl<T: Copy> Default for Script<T> {
    fn default() -> Self {
        Script::named("script")
    }
}

impl<T: Copy> Script<T> {
    /// An empty script whose round trip traces name `operation` (`claim`, `write`, …).
    pub fn named(operation: &'static str) -> Self {
        Script {
            sql: String::new(),
            tags: Vec::new(),
            prepares: Vec::new(),
            operation,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Statements so far.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Adds a statement of the store with its values.
    pub fn push(&mut self, tag: T, statement: &Statement<'_>) -> Result<(), Unrenderable> {
        let mark = self.sql.len();
        if let Err(e) = statement.render(&mut self.sql) {
            self.sql.truncate(mark);
            return Err(e);
        }
        self.sql.push_str(";\n");
        self.tags.push(tag);
        Ok(())
    }

    /// Adds a statement of the store for `tenant` (whose schema the script has switched to),
    /// as an `EXECUTE` of its prepared form when `session` keeps the tenant's statements
    /// prepared, else as literal text. A statement to prepare first is added to
    /// [`Script::prepares`], to run before the script.
    pub fn push_in(
        &mut self,
        tag: T,
        statement: &Statement<'_>,
        session: Option<&mut Session>,
        tenant: &TenantId,
    ) -> Result<(), Unrenderable> {
        let schema = tenant.schema_name();
        let Some(prepared) = session.and_then(|s| s.prepared(&schema, statement)) else {
            return self.push(tag, statement);
        };
        let mark = self.sql.len();
        if let Err(e) = statement.render_execute(&prepared.name, &mut self.sql) {
            // The PREPARE stays pending and is dropped unconfirmed with the attempt.
            self.sql.truncate(mark);
            return Err(e);
        }
        self.sql.push_str(";\n");
        self.tags.push(tag);
        if let Some(prepare) = prepared.prepare {
            self.prepares.push(Prepare {
                tag,
                switch: switch_statement(tenant),
                prepare,
                name: prepared.name,
            });
        }
        Ok(())
    }

    /// The statements to prepare, each in a query of its own, before the script runs.
    pub fn prepares(&self) -> &[Prepare<T>] {
        &self.prepares
    }

    /// Adds one statement written by the store itself (no values from events in it).
    pub(crate) fn push_sql(&mut self, tag: T, sql: &str) {
        self.sql.push_str(sql);
        self.sql.push_str(";\n");
        self.tags.push(tag);
    }

    /// Whether the last statement is the commit of the transaction.
    pub(crate) fn ends_with_commit(&self) -> bool {
        self.sql.ends_with("COMMIT;\n")
    }

    /// Runs every statement in one round trip; returns each statement's rows, in order.
    pub async fn run(&self, conn: &mut PgConnection) -> Result<Vec<Vec<PgRow>>, ScriptError<T>> {
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let span = spans::db_statement(self.operation, self.tags.len());
        let result = self.send(conn).instrument(span.clone()).await;
        if let Err(e) = &result {
            spans::db_failed(&span, sqlstate(&e.error).as_deref());
        }
        result
    }

    async fn send(&self, conn: &mut PgConnection) -> Result<Vec<Vec<PgRow>>, ScriptError<T>> {
        let mut results: Vec<Vec<PgRow>> = Vec::with_capacity(self.tags.len() + 1);
        results.push(Vec::new());
        let mut stream = sqlx::raw_sql(&self.sql).fetch_many(conn);
        while let Some(next) = stream.next().await {
            match next {
                Ok(Either::Left(_done)) => results.push(Vec::new()),
                Ok(Either::Right(row)) => results.last_mut().expect("a statement").push(row),
                Err(error) => {
                    let done = results.len() - 1;
                    let tag = match error {
                        sqlx::Error::Database(_) => self.tags.get(done).copied(),
                        _ => None,
                    };
                    return Err(ScriptError { tag, error });
                }
            }
        }
        results.pop();
        if results.len() != self.tags.len() {
            return Err(ScriptError {
                tag: None,
                error: sqlx::Error::Protocol(format!(
                    "{} statements sent, {} completed",
                    self.tags.len(),
                    results.len()
                )),
            });
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(s: &Statement<'_>) -> String {
        let mut out = String::new();
        s.render(&mut out).expect("renders");
        out
    }

    #[test]
    fn parameters_become_typed_literals_and_ten_is_not_one() {
        let mut s = Statement::new("SELECT $1, $10, $2::bool[]");
        s = s.bind(vec!["a"]).bind(vec![Some(true), None]);
        for _ in 3..=9 {
            s = s.bind(vec![1i64]);
        }
        s = s.bind("x");
        assert_eq!(
            rendered(&s),
            r#"SELECT  $v${"a"}$v$::text[],  $v$x$v$::text,  '{t,NULL}'::bool[]"#
        );
    }

    #[test]
    fn quotes_and_backslashes_are_escaped_for_the_array_and_the_delimiter_never_ends_early() {
        let s = Statement::new("$1").bind(vec![Some(r#"a'b"c\d"#), None]);
        assert_eq!(rendered(&s), r#" $v${"a'b\"c\\d",NULL}$v$::text[]"#);
        for tricky in ["it's $v$ \\x", "ends in $", "ends in $v"] {
            let s = Statement::new("$1").bind(tricky);
            let want = format!(
                " E'{}'::text",
                tricky.replace('\\', "\\\\").replace('\'', "''")
            );
            assert_eq!(rendered(&s), want);
        }
    }

    #[test]
    fn nul_is_refused_and_leaves_the_script_as_it_was() {
        let mut script: Script<u8> = Script::default();
        script.push_sql(0, "SELECT 1");
        let bad = Statement::new("SELECT $1").bind(vec!["a\0b"]);
        assert_eq!(script.push(1, &bad), Err(Unrenderable));
        assert_eq!(script.len(), 1);
        assert_eq!(script.sql, "SELECT 1;\n");
    }

    #[test]
    fn dates_and_times_are_written_as_postgres_reads_them() {
        let t = DateTime::from_timestamp(1_718_400_000, 123_456_000).expect("time");
        let s = Statement::new("$1 $2")
            .bind(vec![t.date_naive()])
            .bind(vec![Some(t), None]);
        assert_eq!(
            rendered(&s),
            " '{2024-06-14}'::date[]  '{\"2024-06-14 21:20:00.123456+00\",NULL}'::timestamptz[]"
        );
    }
}
