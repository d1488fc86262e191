//! How database failures are classified: the one place that looks inside `sqlx::Error`.

/// What a failed write means for the events in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// The database is unreachable, shutting down, out of resources or locked: hold the whole
    /// batch and retry without spending deliveries.
    Unavailable,
    /// Serialization failure or deadlock: run the same transaction again.
    Conflict,
    /// A data or constraint error caused by the events themselves.
    Permanent,
    /// The tenant's schema is fenced on this database (paused, or moved or being moved to
    /// another placement, SPEC §17): what is known of its placement is stale; its events wait,
    /// spending no attempt.
    Fenced,
    /// Anything else: retry with redeliveries.
    Transient,
}

/// The SQLSTATE `wa_system.enter_tenant` raises for a fenced schema (see
/// [`super::placement`]).
pub const FENCED: &str = "WAF01";

pub fn classify(err: &sqlx::Error) -> DbFailure {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => DbFailure::Unavailable,
        sqlx::Error::Database(db) => classify_code(db.code().as_deref().unwrap_or("")),
        _ => DbFailure::Transient,
    }
}

/// The connection itself failed or was ended by the server (its socket, a protocol error,
/// SQLSTATE class 08, or a backend terminated: `57P01`–`57P03`), as opposed to a statement
/// refused on a live connection.
pub fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

/// The error's SQLSTATE, when the database raised it.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// A row was refused because no partition of its table takes it: a monthly `messages`
/// partition was detached or dropped after it was cached as present.
pub fn is_missing_partition(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23514") && db.message().starts_with("no partition of")
        }
        _ => false,
    }
}

/// Classifies a SQLSTATE code.
pub fn classify_code(code: &str) -> DbFailure {
    match code {
        // lock_not_available (lock_timeout), query_canceled (statement_timeout)
        "55P03" | "57014" => DbFailure::Unavailable,
        "40001" | "40P01" => DbFailure::Conflict,
        FENCED => DbFailure::Fenced,
        _ => match code.get(..2).unwrap_or("") {
            // connection exceptions, insufficient resources, operator intervention, system errors
            "08" | "53" | "57" | "58" => DbFailure::Unavailable,
            // data exceptions, integrity constraint violations, and limits one event's data
            // exceeds (54000 an index row too big, 54001 JSON nested too deep): that event's
            // own fault, never a failure of its neighbours
            "22" | "23" | "54" => DbFailure::Permanent,
            _ => DbFailure::Transient,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(classify_code("57P01"), DbFailure::Unavailable);
        assert_eq!(classify_code("55P03"), DbFailure::Unavailable);
        assert_eq!(classify_code("08006"), DbFailure::Unavailable);
        assert_eq!(classify_code("53300"), DbFailure::Unavailable);
        assert_eq!(classify_code("40P01"), DbFailure::Conflict);
        assert_eq!(classify_code("22P05"), DbFailure::Permanent);
        assert_eq!(classify_code("23505"), DbFailure::Permanent);
        assert_eq!(classify_code("54000"), DbFailure::Permanent);
        assert_eq!(classify_code("54001"), DbFailure::Permanent);
        assert_eq!(classify_code("42P01"), DbFailure::Transient);
        assert_eq!(classify_code("WAF01"), DbFailure::Fenced);
        assert_eq!(classify(&sqlx::Error::PoolTimedOut), DbFailure::Unavailable);
        assert_eq!(classify(&sqlx::Error::RowNotFound), DbFailure::Transient);
    }

    #[test]
    fn a_lost_connection_is_told_from_a_busy_pool_or_a_refused_statement() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(connection_lost(&sqlx::Error::Io(reset)));
        assert!(connection_lost(&sqlx::Error::Protocol(
            "unexpected end".into()
        )));
        // Waiting for a connection, or a statement's own failure, is not a lost connection.
        assert!(!connection_lost(&sqlx::Error::PoolTimedOut));
        assert!(!connection_lost(&sqlx::Error::RowNotFound));
    }
}
