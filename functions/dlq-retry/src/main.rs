//! `wa-dlq-retry`: the dlq-retry function (standalone JetStream consumer).

use std::process::ExitCode;

fn main() -> ExitCode {
    wa_shared::app::main(&wa_shared::app::DLQ_RETRY)
}
