//! What a message says: the `message_obj` varieties the producer sends (text, quote, image,
//! voice note, document, reaction, ephemeral), with realistic sizes.

use serde_json::{json, Value};

use crate::rng::Rng;

pub const TEXTS: [&str; 10] = [
    "Halo kak, pesanan saya sudah dikirim?",
    "Pesanan sudah dikirim ya kak",
    "Oke terima kasih",
    "Siap",
    "Berapa ongkirnya ke Bandung?",
    "Stok warna hitam masih ada kak?",
    "Sama-sama kak 🙏",
    "Baik, saya tunggu kabarnya",
    "Sudah saya transfer ya, mohon dicek",
    "Bisa COD tidak kak?",
];

pub const NAMES: [&str; 8] = [
    "Budi Santoso",
    "Sari",
    "Andi",
    "Dewi Lestari",
    "Rina",
    "Agus Pratama",
    "Putri",
    "Tim Gudang",
];

/// A message's `message_obj`, `message_type` and `message_text`.
pub struct Content {
    pub obj: Value,
    pub message_type: &'static str,
    pub text: Option<&'static str>,
    /// Media is stored by the producer and linked by `message_url`.
    pub media: bool,
}

fn device_info() -> Value {
    json!({"deviceListMetadataVersion": 2})
}

/// A random message content; `quoted_id` is the id of a message it may quote or react to.
pub fn content(rng: &mut Rng, remote_jid: &str, quoted_id: Option<&str>) -> Content {
    let text = *rng.pick(&TEXTS);
    let roll = rng.below(100);
    let (obj, message_type, text, media) = match (roll, quoted_id) {
        (0..=44, _) => (
            json!({"conversation": text, "messageContextInfo": device_info()}),
            "conversation",
            Some(text),
            false,
        ),
        (45..=59, Some(q)) => (
            json!({"extendedTextMessage": {"text": text, "previewType": "NONE", "contextInfo": {
                "stanzaId": q, "participant": remote_jid, "quotedMessage": {"conversation": rng.pick(&TEXTS)}}},
                "messageContextInfo": device_info()}),
            "extendedTextMessage",
            Some(text),
            false,
        ),
        (60..=69, _) => {
            let path = format!("/o1/v/t62.7118-24/f1/m232/{}.enc", rng.hex(24));
            let thumbnail = rng.between(600, 3000) as usize;
            (
                json!({"imageMessage": {"url": format!("https://mmg.whatsapp.net{path}"),
                    "mimetype": "image/jpeg", "caption": "Bukti transfer",
                    "fileSha256": rng.base64(44), "fileLength": rng.between(20_000, 400_000).to_string(),
                    "height": 1280, "width": 960, "mediaKey": rng.base64(44),
                    "fileEncSha256": rng.base64(44), "directPath": path,
                    "mediaKeyTimestamp": "1718358119",
                    "jpegThumbnail": rng.base64(thumbnail)},
                    "messageContextInfo": device_info()}),
                "imageMessage",
                Some("Bukti transfer"),
                true,
            )
        }
        (70..=79, _) => (
            json!({"audioMessage": {"url": "https://mmg.whatsapp.net/v/t62.7117-24/aud.enc",
                "mimetype": "audio/ogg; codecs=opus", "fileSha256": rng.base64(44),
                "fileLength": rng.between(3_000, 60_000).to_string(), "seconds": rng.between(1, 60),
                "ptt": true, "mediaKey": rng.base64(44), "fileEncSha256": rng.base64(44),
                "directPath": "/v/t62.7117-24/aud.enc", "mediaKeyTimestamp": "1718358299",
                "waveform": rng.base64(24)}}),
            "audioMessage",
            None,
            true,
        ),
        (80..=84, _) => (
            json!({"documentWithCaptionMessage": {"message": {"documentMessage": {
                "url": "https://mmg.whatsapp.net/v/t62.7119-24/doc.enc",
                "mimetype": "application/pdf", "title": "invoice.pdf", "fileSha256": rng.base64(44),
                "fileLength": rng.between(10_000, 900_000).to_string(), "pageCount": rng.between(1, 9),
                "mediaKey": rng.base64(44), "fileName": "invoice.pdf", "fileEncSha256": rng.base64(44),
                "directPath": "/v/t62.7119-24/doc.enc", "mediaKeyTimestamp": "1718358329",
                "caption": "Invoice Juni"}}}}),
            "documentWithCaptionMessage",
            Some("Invoice Juni"),
            true,
        ),
        (85..=94, Some(q)) => (
            json!({"reactionMessage": {"key": {"remoteJid": remote_jid, "fromMe": true, "id": q},
                "text": "👍", "senderTimestampMs": "1718358150123"}}),
            "reactionMessage",
            None,
            false,
        ),
        _ => (
            json!({"ephemeralMessage": {"message": {"extendedTextMessage": {"text": text,
                "contextInfo": {"expiration": 604800}}}}}),
            "ephemeralMessage",
            None,
            false,
        ),
    };
    Content {
        obj,
        message_type,
        text,
        media,
    }
}

/// The `messages.update` body of an edit: the new content wrapped in `{"message": …}`.
pub fn edit(rng: &mut Rng) -> Value {
    json!({"message": {"conversation": rng.pick(&TEXTS)}})
}
