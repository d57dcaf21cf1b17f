//! Wire frames of the WebSocket protocol: parsing what clients send and
//! building what the server sends. No I/O here.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::domain::now_ms;

/// The protocol's error codes, shared by HTTP and WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    TooLarge,
    UnsupportedMediaType,
    RateLimited,
    Timeout,
    Internal,
    /// Cluster mode: the write could not be committed in time (no quorum,
    /// the engine out of reach). Never an acknowledgement.
    Unavailable,
    /// A count limit was reached (reactions on a message, pins in a room).
    LimitReached,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::LimitReached => "limit_reached",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::RateLimited => 429,
            ErrorCode::Timeout => 408,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::LimitReached => 409,
        }
    }
}

/// WebSocket close codes.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const TOO_BIG: u16 = 1009;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const KICKED: u16 = 4003;
    pub const POLICY: u16 = 4008;
    pub const TOO_SLOW: u16 = 4009;
}

/// A client frame whose envelope parsed: `type`, optional `id`, `data`.
#[derive(Debug)]
pub struct ClientFrame {
    pub kind: String,
    pub id: Option<String>,
    pub data: Value,
}

/// Why a frame could not be read; `id` is set when the envelope had a
/// usable one, so the error can answer it.
#[derive(Debug)]
pub struct FrameError {
    pub id: Option<String>,
    pub message: String,
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let value: Value = serde_json::from_str(text).map_err(|e| FrameError {
            id: None,
            message: format!("malformed JSON: {e}"),
        })?;
        let Value::Object(mut obj) = value else {
            return Err(FrameError {
                id: None,
                message: "a frame must be a JSON object".into(),
            });
        };
        let id = match obj.remove("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() <= 64 => Some(s),
            Some(_) => {
                return Err(FrameError {
                    id: None,
                    message: "id: must be a string of at most 64 characters".into(),
                });
            }
        };
        let kind = match obj.remove("type") {
            Some(Value::String(s)) => s,
            _ => {
                return Err(FrameError {
                    id,
                    message: "type: missing or not a string".into(),
                });
            }
        };
        let data = match obj.remove("data") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v @ Value::Object(_)) => v,
            Some(_) => {
                return Err(FrameError {
                    id,
                    message: "data: must be an object".into(),
                });
            }
        };
        Ok(ClientFrame { kind, id, data })
    }

    /// The frame's data as `T`; the error names the field at fault.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(&self.data).map_err(|e| e.to_string())
    }
}

#[derive(Serialize)]
struct Out<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    data: T,
    ts: i64,
}

/// Serializes a server frame once; the result is shared by every
/// recipient of a fan-out.
pub fn frame<T: Serialize>(kind: &str, id: Option<&str>, data: &T) -> Arc<str> {
    let out = Out {
        kind,
        id,
        data,
        ts: now_ms(),
    };
    // Every payload is a plain struct or a serde_json value: no failure.
    Arc::from(serde_json::to_string(&out).unwrap_or_default())
}

pub fn error_frame(id: Option<&str>, code: ErrorCode, message: &str) -> Arc<str> {
    frame(
        "error",
        id,
        &serde_json::json!({"code": code.as_str(), "message": message}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes() {
        let f = ClientFrame::parse(r#"{"type":"ping","id":"c-1"}"#).unwrap();
        assert_eq!(f.kind, "ping");
        assert_eq!(f.id.as_deref(), Some("c-1"));
        assert!(f.data.is_object());
        let e = ClientFrame::parse("{nope").unwrap_err();
        assert!(e.id.is_none());
        let e = ClientFrame::parse(r#"{"id":"x"}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("x"));
        let e = ClientFrame::parse(r#"{"type":"ping","id":"x","data":5}"#).unwrap_err();
        assert_eq!(e.id.as_deref(), Some("x"));
        let long = "x".repeat(65);
        assert!(ClientFrame::parse(&format!(r#"{{"type":"ping","id":"{long}"}}"#)).is_err());
        assert!(ClientFrame::parse("[1]").is_err());
    }

    #[test]
    fn frames_carry_type_data_ts_and_id() {
        let f = frame("ack", Some("c-2"), &serde_json::json!({}));
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "ack");
        assert_eq!(v["id"], "c-2");
        assert!(v["ts"].as_i64().unwrap() > 0);
        let f = frame("pong", None, &serde_json::json!({}));
        assert!(!f.contains("\"id\""));
    }
}
