//! Lambda mode in tests: the Lambda Runtime API served locally by `cargo lambda watch
//! --only-lambda-apis`, a function binary polling it, and `wa-bridge` invoking it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::functions::{self, Function};
use crate::servers::{free_port, NatsServers, TempDir};
use crate::stack::Stack;

/// How long `cargo lambda watch` may take to serve the Runtime API.
const EMULATOR_WITHIN: Duration = Duration::from_secs(60);

/// A local Lambda Runtime API with one function binary serving it.
pub struct LocalLambda {
    pub port: u16,
    emulator: Child,
    pub function: Function,
    _logs: TempDir,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

impl LocalLambda {
    /// Starts the emulator and `bin` in Lambda mode with the stack's database and `extra` variables.
    pub fn start<N: NatsServers>(s: &Stack<N>, bin: &str, extra: &[(&'static str, &str)]) -> Self {
        let port = free_port();
        let logs = TempDir::new("wa-lambda-emulator");
        let log = std::fs::File::create(logs.path().join("emulator.log")).expect("log");
        let emulator = Command::new("cargo")
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &port.to_string(),
            ])
            .current_dir(workspace_root())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn `cargo lambda watch` (pip install cargo-lambda)");
        let mut emulator = emulator;
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            let log =
                || std::fs::read_to_string(logs.path().join("emulator.log")).unwrap_or_default();
            if let Ok(Some(status)) = emulator.try_wait() {
                panic!(
                    "the Lambda emulator exited ({status}); run `just tools`?\n{}",
                    log()
                );
            }
            assert!(
                start.elapsed() < EMULATOR_WITHIN,
                "the Lambda emulator did not open port {port} within {EMULATOR_WITHIN:?}:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut env: Vec<(&str, String)> = vec![
            (
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME", "_".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("DATABASE_URL", s.database_url.clone()),
            ("LOG_FORMAT", "json".into()),
        ];
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k, v.to_string()));
        }
        let function = functions::start(bin, &env);
        LocalLambda {
            port,
            emulator,
            function,
            _logs: logs,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LocalLambda {
    fn drop(&mut self) {
        let _ = self.emulator.kill();
        let _ = self.emulator.wait();
    }
}

/// Starts `wa-bridge` for one route (`realtime`, `historical`, …) invoking `lambda`.
pub async fn start_bridge<N: NatsServers>(
    s: &Stack<N>,
    route: &str,
    lambda: &LocalLambda,
    extra: &[(&'static str, &str)],
) -> Function {
    let mut env: Vec<(&'static str, String)> = vec![
        ("BRIDGE_ROUTES", format!("{route}=_")),
        ("LAMBDA_ENDPOINT", lambda.endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "local".into()),
        ("AWS_SECRET_ACCESS_KEY", "local".into()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let extra: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.start("wa-bridge", &extra).await
}
