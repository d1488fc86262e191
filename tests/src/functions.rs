//! The real function binaries, spawned as child processes with their own environment: the
//! shared spawner of `wa-testkit`, with what the tests add (binaries next to the test
//! executable, logs at `TEST_LOG`, the deadlines of the tests).

use std::path::PathBuf;
use std::time::Duration;

pub use wa_testkit::{http_get, Function};

/// How long a started function may take to answer `/ready`.
pub const READY_WITHIN: Duration = Duration::from_secs(30);

/// How long a function may take to hold a batch once its database goes away.
pub const HOLDING_WITHIN: Duration = Duration::from_secs(120);

/// Where cargo put the workspace's binaries (next to the directory of this test executable).
pub fn binary(name: &str) -> PathBuf {
    let path = wa_testkit::bin_dir().expect("target dir").join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// Starts `bin` (e.g. `wa-realtime`) with these variables (plus logs at `TEST_LOG`, default
/// `info`, and a free HTTP port); killed on drop, its logs printed if the test fails.
pub fn start(bin: &str, env: &[(&str, String)]) -> Function {
    let level = std::env::var("TEST_LOG");
    wa_testkit::Launch::new(binary(bin))
        .log_level(level.clone().unwrap_or_else(|_| "info".into()))
        .echo_logs(level.is_ok())
        .env(env.iter().map(|(k, v)| (*k, v.as_str())))
        .start()
        .unwrap()
}
