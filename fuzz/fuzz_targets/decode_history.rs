//! A history sync: the first byte picks the subject (fuzz/subjects.txt), the rest is the batch.
//! The checks of a whole event (see `wa_fuzz::check_event`), and for a batch that decodes, the
//! dead letter of each item on its own: a one-item batch that reads back and decodes again.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wa_shared::model::{Category, Payload, Subject};

static SUBJECTS: OnceLock<Vec<Subject>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let subjects =
        SUBJECTS.get_or_init(|| wa_fuzz::subjects("decode_history", Category::Historical));
    let Some((subject, body)) = wa_fuzz::split(subjects, data) else {
        return;
    };
    if let Ok(Payload::History(items)) = wa_fuzz::check_event(subject, body) {
        for (index, item) in items.iter().enumerate() {
            wa_fuzz::check_history_item(subject, body, index, item);
        }
    }
});
