//! What the HTTP and WebSocket edges share: the client's address, the
//! request bodies both accept (validated into the app's input), and the
//! contract's error body. Both edges depend on this; it depends on neither.

use std::net::SocketAddr;

use serde::Deserialize;
use serde_json::{Value, json};
use warp::Filter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use crate::app::{App, AppError, Result, SendInput, Target};
use crate::domain::{ClientMsgId, RoomName, Topic, Visibility};
use crate::protocol::ErrorCode;

/// The peer's address, put in each request's extensions by the server's
/// accept loop.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// The client's socket address, set by the server's accept loop.
pub fn peer()
-> impl Filter<Extract = (Option<SocketAddr>,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<Peer>().map(|p: Option<Peer>| p.map(|p| p.0))
}

pub fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut resp = Response::new(v.to_string().into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The contract's error body: `{"error": {"code", "message"}}`.
pub fn error_body(code: ErrorCode, message: &str) -> Value {
    json!({"error": {"code": code.as_str(), "message": message}})
}

/// The error answer of the contract, with its status and headers.
pub fn error_response(e: &AppError) -> Response {
    let code = e.code();
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = error_body(code, &e.client_message());
    if let AppError::Banned { ban, .. } = e {
        body["error"]["ban"] = json!(ban);
    }
    let mut resp = json_response(status, &body);
    if let AppError::Throttled { retry_after, .. } = e
        && let Ok(v) = HeaderValue::from_str(&retry_after.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    if code == ErrorCode::Timeout {
        // The rest of a late request is not waited for, so the connection
        // cannot carry another one.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if code == ErrorCode::Unauthorized {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

#[derive(Deserialize)]
pub struct CreateRoomBody {
    pub name: String,
    pub visibility: Option<String>,
    pub topic: Option<String>,
}

pub fn validate_new_room(
    app: &App,
    input: &CreateRoomBody,
) -> Result<(RoomName, Visibility, Option<Topic>)> {
    let name = RoomName::parse(&input.name)?;
    let vis = match &input.visibility {
        Some(v) => Visibility::parse(v)?,
        None => Visibility::Public,
    };
    let topic = input
        .topic
        .as_deref()
        .map(|t| Topic::parse(t, app.config.limits.max_topic_chars))
        .transpose()?;
    Ok((name, vis, topic))
}

/// `null` read as the field's default, as clients send for "none".
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
pub struct MessageBody {
    pub text: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub attachments: Vec<String>,
    pub client_msg_id: Option<String>,
}

impl MessageBody {
    pub fn into_input(self, target: Target) -> Result<SendInput> {
        Ok(SendInput {
            target,
            text: self.text.unwrap_or_default(),
            attachments: self.attachments,
            client_msg_id: self
                .client_msg_id
                .as_deref()
                .map(ClientMsgId::parse)
                .transpose()?,
        })
    }
}
