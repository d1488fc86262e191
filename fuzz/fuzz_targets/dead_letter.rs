//! Any bytes read as a dead letter, as dlq-retry reads the DLQ stream: an envelope that parses
//! gives its original bytes without panicking, and writes JSON that reads back to the same
//! envelope (and so the same JSON again).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wa_shared::model::DeadLetterEnvelope;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<DeadLetterEnvelope>(data) else {
        return;
    };
    let bytes = envelope.original_bytes();
    let json = envelope.to_json();
    let back: DeadLetterEnvelope = serde_json::from_slice(&json).unwrap_or_else(|e| {
        panic!(
            "an envelope's JSON does not read back: {e}: {}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(back.original_bytes(), bytes, "original bytes changed");
    assert_eq!(back.error_type, envelope.error_type);
    assert_eq!(back.item_index, envelope.item_index);
    assert_eq!(
        back.to_json(),
        json,
        "an envelope read back writes other JSON"
    );
});
