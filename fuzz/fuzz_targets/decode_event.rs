//! A realtime event: the first byte picks the subject (fuzz/subjects.txt), the rest is its body.
//! Decoding never panics, refuses with one of the decoding error types, and the event's dead
//! letter reads back with the body's bytes (see `wa_fuzz::check_event`).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wa_shared::model::{Category, Subject};

static SUBJECTS: OnceLock<Vec<Subject>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let subjects = SUBJECTS.get_or_init(|| wa_fuzz::subjects("decode_event", Category::Realtime));
    if let Some((subject, body)) = wa_fuzz::split(subjects, data) {
        let _ = wa_fuzz::check_event(subject, body);
    }
});
