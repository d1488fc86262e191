//! What the tests and the benchmarks share, written once (like zero-to-production's
//! `spawn_app`): the real function binaries started as child processes ([`Function`]), the
//! one poller every wait goes through ([`poll`]), a private Postgres cluster
//! ([`PrivatePostgres`]), and the small pieces they need (a free port, a temporary folder, an
//! HTTP GET).
//!
//! Everything here returns [`Result`]: the benchmark reports errors, the tests unwrap them.

mod error;
mod function;
mod net;
mod poll;
mod postgres;
mod temp;

pub use error::{Error, Result};
pub use function::{bin_dir, Function, Launch};
pub use net::{free_port, http_get};
pub use poll::poll;
pub use postgres::PrivatePostgres;
pub use temp::TempDir;
