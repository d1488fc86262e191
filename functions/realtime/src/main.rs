//! `wa-realtime`: the realtime function (a standalone JetStream consumer, or a Lambda handler).

use std::process::ExitCode;

fn main() -> ExitCode {
    wa_shared::startup::main(&wa_shared::functions::REALTIME)
}
