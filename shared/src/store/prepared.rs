//! Statements kept prepared on a connection, for the tenants it writes most.
//!
//! A batch's statements go to the server as literal text ([`super::script`]), and the server
//! parses, analyses and plans each one against its tenant's tables every time: at a few
//! tenants that is a fifth of the server's work per event, at hundreds of tenants with a few
//! events each, half of it. A statement prepared in a tenant's schema (`PREPARE … AS`, while
//! `search_path` is the tenant's) is planned once, and each later `EXECUTE` with the batch's
//! values as arguments skips all of that: the batch transaction asks for generic plans, which
//! the index-only planner settings of every write make the same as the custom ones.
//!
//! A prepared statement lives in its server session, so what is prepared is known per
//! connection: every connection of the pools is given a token when it opens (the setting
//! [`TOKEN_SETTING`]), which the first script of a batch transaction reads back (a lane's kept
//! connection is known before: even its first script's statements are prepared), and the
//! [`Session`] of that token says which of its tenants' statements exist and under which
//! names. Each `PREPARE` runs in a query of its own, with the switch to its tenant's schema:
//! the server keeps two copies of the text of the query a statement was prepared in, and a
//! batch's script is hundreds of kilobytes (prepared inside it, 64 tenants took 375 MB of one
//! server process). A tenant's statements take about 1 MB of the server's memory, so a
//! connection prepares those of at most [`TENANTS_PER_CONNECTION`] tenants
//! (`DB_PREPARED_TENANTS`), the first it writes (the busy ones, in practice); the others'
//! statements are sent as literal text. The lanes of a batch write ([`super::batch_tx`]) send
//! each tenant to the same kept connection batch after batch, so a connection prepares only
//! its lane's share of the tenants: with two lanes, the default covers 512 busy tenants. A
//! connection's statements go with it when the pool retires it.
//!
//! A name is recorded only once its `PREPARE` ran, and names are never reused in a process (a
//! counter), so a `PREPARE` never collides with one a dropped record forgot. When an `EXECUTE`
//! finds no statement (SQLSTATE `26000`: the session was reset behind the pool's back), the
//! record is dropped and the batch runs again, preparing anew.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::script::Statement;

/// The custom setting holding a connection's token (set when it opens, for the session).
pub const TOKEN_SETTING: &str = "wa.connection";

/// Tenants whose statements one connection keeps prepared, at most, unless set otherwise
/// ([`set_tenants_per_connection`], `DB_PREPARED_TENANTS`).
pub const TENANTS_PER_CONNECTION: usize = 256;

static TENANTS_CAP: AtomicUsize = AtomicUsize::new(TENANTS_PER_CONNECTION);

/// Sets how many tenants' statements a connection keeps prepared (0: none, every statement is
/// sent as literal text).
pub fn set_tenants_per_connection(tenants: usize) {
    TENANTS_CAP.store(tenants, Ordering::Relaxed);
}

fn tenants_cap() -> usize {
    TENANTS_CAP.load(Ordering::Relaxed)
}

/// SQLSTATE invalid_sql_statement_name: an `EXECUTE` of a statement the session does not hold.
pub const NO_SUCH_STATEMENT: &str = "26000";

/// Whether `error` is an `EXECUTE` of a statement the session does not hold.
pub fn is_missing_statement(error: &sqlx::Error) -> bool {
    super::failure::sqlstate(error).as_deref() == Some(NO_SUCH_STATEMENT)
}

/// A session record not used for this long belongs to a connection that is gone.
const FORGOTTEN_AFTER: Duration = Duration::from_secs(3600);

/// The statement that gives a new connection its token.
pub fn token_statement() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let token = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("SELECT set_config('{TOKEN_SETTING}', '{token}', false)")
}

/// The statement (of a batch transaction's first script) that reads the connection's token
/// back and asks for generic plans for the rest of the transaction.
pub const READ_TOKEN: &str = "SELECT current_setting('wa.connection', true), \
     set_config('plan_cache_mode', 'force_generic_plan', true)";

/// The token a [`READ_TOKEN`] row holds (`None`: a connection opened without one).
pub fn token_of(rows: &[sqlx::postgres::PgRow]) -> Option<u64> {
    use sqlx::Row;
    let text: Option<String> = rows.first()?.try_get(0).ok()?;
    text?.parse().ok()
}

/// What is prepared on one connection (see the module).
#[derive(Default)]
pub struct Session {
    token: u64,
    /// Schema → statement text → number.
    tenants: HashMap<String, HashMap<&'static str, u64>>,
    /// Prepared by the script being built or run: (statement index in it, schema, text, number).
    pending: Vec<(String, &'static str, u64)>,
    used: Option<Instant>,
}

/// How a statement is sent on a connection that keeps it prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The `PREPARE` to run first, in its own query, when it is not prepared yet.
    pub prepare: Option<String>,
    /// The name to `EXECUTE`.
    pub name: String,
}

impl Session {
    /// How `statement` should be sent for `schema`; `None` when the tenant's statements stay
    /// literal on this connection. A `PREPARE` returned is pending until [`Session::confirm`]ed.
    pub fn prepared(&mut self, schema: &str, statement: &Statement<'_>) -> Option<Prepared> {
        let sql = statement.sql();
        let known = self
            .tenants
            .get(schema)
            .and_then(|s| s.get(sql).copied())
            .or_else(|| {
                self.pending
                    .iter()
                    .find(|(s, q, _)| s == schema && *q == sql)
                    .map(|&(_, _, n)| n)
            });
        if let Some(n) = known {
            return Some(Prepared {
                prepare: None,
                name: name(n),
            });
        }
        let admitted = self.tenants.contains_key(schema)
            || self.pending.iter().any(|(s, _, _)| s == schema)
            || self.tenant_count() < tenants_cap();
        if !admitted {
            return None;
        }
        // Numbers are unique in the process, so a name is never used twice on a connection,
        // whatever its record forgot.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        self.pending.push((schema.to_owned(), sql, n));
        Some(Prepared {
            prepare: Some(format!(
                "PREPARE {}({}) AS {}",
                name(n),
                statement.param_types().join(", "),
                sql
            )),
            name: name(n),
        })
    }

    /// Records that the `PREPARE` of statement `name` ran.
    pub fn confirm(&mut self, prepared: &str) {
        if let Some(i) = self
            .pending
            .iter()
            .position(|(_, _, n)| name(*n) == prepared)
        {
            let (schema, sql, n) = self.pending.swap_remove(i);
            self.tenants.entry(schema).or_default().insert(sql, n);
        }
    }

    /// Forgets the `PREPARE`s that were not confirmed (they never ran).
    pub fn drop_pending(&mut self) {
        self.pending.clear();
    }

    fn tenant_count(&self) -> usize {
        let mut new: Vec<&str> = self
            .pending
            .iter()
            .map(|(s, _, _)| s.as_str())
            .filter(|s| !self.tenants.contains_key(*s))
            .collect();
        new.sort_unstable();
        new.dedup();
        self.tenants.len() + new.len()
    }

    /// Statements prepared on this connection.
    pub fn statements(&self) -> usize {
        self.tenants.values().map(HashMap::len).sum()
    }
}

fn name(n: u64) -> String {
    format!("wa_p{n}")
}

fn sessions() -> &'static Mutex<HashMap<u64, Session>> {
    static SESSIONS: OnceLock<Mutex<HashMap<u64, Session>>> = OnceLock::new();
    SESSIONS.get_or_init(Default::default)
}

/// The record of the connection with `token`, while a transaction uses it (give it back with
/// [`checkin`]; one dropped instead is forgotten, and the connection starts afresh).
pub fn checkout(token: u64) -> Session {
    let mut map = sessions().lock().expect("sessions");
    let mut session = map.remove(&token).unwrap_or_default();
    session.token = token;
    session
}

/// Gives a session record back once its script ran and was settled.
pub fn checkin(mut session: Session) {
    let now = Instant::now();
    session.used = Some(now);
    session.pending.clear();
    let mut map = sessions().lock().expect("sessions");
    map.retain(|_, s| {
        s.used
            .is_some_and(|u| now.duration_since(u) < FORGOTTEN_AFTER)
    });
    map.insert(session.token, session);
}

/// What each connection of this process keeps prepared, by its token: schema → the texts of
/// the statements. Connections inside a transaction at the moment are left out.
pub fn held() -> Vec<(u64, HashMap<String, Vec<&'static str>>)> {
    let map = sessions().lock().expect("sessions");
    map.iter()
        .map(|(token, s)| {
            let schemas = s
                .tenants
                .iter()
                .map(|(schema, statements)| (schema.clone(), statements.keys().copied().collect()))
                .collect();
            (*token, schemas)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Statement<'static> {
        Statement::new("SELECT $1::text[], $2")
            .bind(vec!["a"])
            .bind("x")
    }

    #[test]
    fn a_statement_is_prepared_once_per_schema_and_only_once_it_ran() {
        let s = statement();
        let mut session = Session::default();
        let first = session.prepared("t1", &s).expect("admitted");
        assert_eq!(
            first.prepare.as_deref(),
            Some(
                format!(
                    "PREPARE {}(text[], text) AS SELECT $1::text[], $2",
                    first.name
                )
                .as_str()
            )
        );
        assert!(first.name.starts_with("wa_p"), "{first:?}");
        // Used again before it ran: no second PREPARE.
        let again = session.prepared("t1", &s).expect("admitted");
        assert_eq!(again.prepare, None);
        assert_eq!(again.name, first.name);
        // Another schema: its own statement.
        let other = session.prepared("t2", &s).expect("admitted");
        assert!(other.prepare.is_some());
        assert_ne!(other.name, first.name);
        // t1's PREPARE ran, t2's did not.
        session.confirm(&first.name);
        session.drop_pending();
        assert_eq!(session.statements(), 1);
        assert_eq!(session.prepared("t1", &s).expect("kept").prepare, None);
        let anew = session.prepared("t2", &s).expect("admitted");
        assert!(anew.prepare.is_some(), "prepared anew");
        assert_ne!(anew.name, other.name, "names are never reused");
    }

    #[test]
    fn a_connection_prepares_for_a_bounded_number_of_tenants() {
        let s = statement();
        let mut session = Session::default();
        let mut names = Vec::new();
        for t in 0..TENANTS_PER_CONNECTION {
            names.push(
                session
                    .prepared(&format!("t{t}"), &s)
                    .expect("admitted")
                    .name,
            );
        }
        assert_eq!(session.prepared("late", &s), None, "stays literal");
        for n in &names {
            session.confirm(n);
        }
        assert_eq!(session.statements(), TENANTS_PER_CONNECTION);
        assert_eq!(session.prepared("late", &s), None);
        assert!(session.prepared("t0", &s).is_some());
    }

    #[test]
    fn a_session_is_kept_between_transactions_by_its_token() {
        let s = statement();
        let mut session = checkout(u64::MAX);
        let p = session.prepared("t1", &s).expect("admitted");
        session.confirm(&p.name);
        checkin(session);
        let mut again = checkout(u64::MAX);
        assert_eq!(again.statements(), 1);
        assert_eq!(again.prepared("t1", &s).map(|p| p.prepare), Some(None));
        drop(again);
        assert_eq!(
            checkout(u64::MAX).statements(),
            0,
            "a dropped record is gone"
        );
    }
}
