//! Any bytes a client can send as a WebSocket text frame: the envelope
//! parser and every validating constructor must answer, never panic.
#![no_main]

use confab::domain::{ClientMsgId, Id, MessageText, Password, RoomName, Topic, Username};
use confab::protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The raw string through every validator, as a field value would go.
    let _ = Username::parse(text);
    let _ = RoomName::parse(text);
    let _ = Password::parse(text);
    let _ = MessageText::parse(text, 4000, false);
    let _ = Topic::parse(text, 256);
    let _ = ClientMsgId::parse(text);
    let _ = Id::parse("id", text);
    if let Ok(frame) = ClientFrame::parse(text)
        && let serde_json::Value::Object(fields) = &frame.data
    {
        for value in fields.values() {
            if let Some(s) = value.as_str() {
                let _ = Username::parse(s);
                let _ = RoomName::parse(s);
                let _ = MessageText::parse(s, 4000, true);
                let _ = Id::parse("id", s);
            }
        }
        let _ = frame.data::<serde_json::Value>();
    }
});
