//! `wa-onboarding`: the onboarding function (standalone JetStream consumer).

use std::process::ExitCode;

fn main() -> ExitCode {
    wa_shared::app::main(&wa_shared::app::ONBOARDING)
}
