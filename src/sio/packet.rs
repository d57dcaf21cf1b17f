//! Socket.IO 5 packets: `<type>[<attachments>-][<nsp>,][<ack id>][<json>]`.
//! No I/O here.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

/// A packet as read, before its binary attachments arrive.
#[derive(Debug, PartialEq)]
pub struct Packet {
    pub kind: Kind,
    pub nsp: String,
    /// Binary attachments that follow (types 5 and 6).
    pub attachments: usize,
    pub id: Option<u64>,
    pub data: Option<Value>,
}

/// The most attachments one packet may announce.
const MAX_ATTACHMENTS: usize = 10;

#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

pub fn decode(s: &str) -> Result<Packet, Invalid> {
    let b = s.as_bytes();
    let kind = match b.first() {
        Some(b'0') => Kind::Connect,
        Some(b'1') => Kind::Disconnect,
        Some(b'2') => Kind::Event,
        Some(b'3') => Kind::Ack,
        Some(b'4') => Kind::ConnectError,
        Some(b'5') => Kind::BinaryEvent,
        Some(b'6') => Kind::BinaryAck,
        _ => return Err(Invalid("unknown packet type")),
    };
    let mut i = 1;
    let mut attachments = 0;
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || b.get(i) != Some(&b'-') {
            return Err(Invalid("illegal attachments"));
        }
        attachments = s[start..i]
            .parse()
            .map_err(|_| Invalid("illegal attachments"))?;
        if attachments > MAX_ATTACHMENTS {
            return Err(Invalid("too many attachments"));
        }
        i += 1;
    }
    let mut nsp = "/".to_string();
    if b.get(i) == Some(&b'/') {
        let end = s[i..].find(',').map(|n| i + n).unwrap_or(b.len());
        nsp = s[i..end].to_string();
        i = (end + 1).min(b.len());
    }
    let mut id = None;
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i > start {
        id = Some(s[start..i].parse().map_err(|_| Invalid("invalid ack id"))?);
    }
    let rest = &s[i..];
    let data = if rest.is_empty() {
        None
    } else {
        Some(serde_json::from_str::<Value>(rest).map_err(|_| Invalid("invalid payload"))?)
    };
    let ok = match kind {
        Kind::Connect => matches!(data, None | Some(Value::Object(_))),
        Kind::Disconnect => data.is_none(),
        Kind::Event | Kind::BinaryEvent => {
            matches!(&data, Some(Value::Array(a)) if matches!(a.first(), Some(Value::String(_))))
        }
        Kind::Ack | Kind::BinaryAck => matches!(data, Some(Value::Array(_))) && id.is_some(),
        Kind::ConnectError => false,
    };
    if !ok {
        return Err(Invalid("invalid payload"));
    }
    Ok(Packet {
        kind,
        nsp,
        attachments,
        id,
        data,
    })
}

/// Writes a packet whose JSON is already serialized.
pub fn encode(kind: Kind, nsp: &str, attachments: usize, id: Option<u64>, json: &str) -> String {
    let mut s = String::with_capacity(json.len() + nsp.len() + 8);
    s.push(char::from(b'0' + kind as u8));
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        s.push_str(&attachments.to_string());
        s.push('-');
    }
    if nsp != "/" {
        s.push_str(nsp);
        s.push(',');
    }
    if let Some(id) = id {
        s.push_str(&id.to_string());
    }
    s.push_str(json);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_what_the_protocol_shows() {
        let p = decode("0").unwrap();
        assert_eq!((p.kind, p.nsp.as_str(), p.data), (Kind::Connect, "/", None));
        let p = decode(r#"0/admin,{"token":"123"}"#).unwrap();
        assert_eq!(p.nsp, "/admin");
        assert_eq!(p.data, Some(json!({"token":"123"})));
        assert_eq!(decode("0/custom").unwrap().nsp, "/custom");
        let p = decode(r#"2456["message",1]"#).unwrap();
        assert_eq!((p.kind, p.id), (Kind::Event, Some(456)));
        let p = decode(r#"52-789["m",{"_placeholder":true,"num":0}]"#).unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (Kind::BinaryEvent, 2, Some(789))
        );
        let p = decode(r#"3/admin,13["bar"]"#).unwrap();
        assert_eq!(
            (p.kind, p.nsp.as_str(), p.id),
            (Kind::Ack, "/admin", Some(13))
        );
        assert_eq!(decode("1/admin,").unwrap().kind, Kind::Disconnect);
    }

    #[test]
    fn refuses_what_the_protocol_forbids() {
        for bad in [
            "abc",
            "",
            "2{}",
            "2[]",
            "2[1]",
            r#"2abc["m"]"#,
            "0[1]",
            "4{}",
            "3[1]",
            "5-[\"m\"]",
            "599-[\"m\"]",
            r#"2["m""#,
            "2999999999999999999999[\"m\"]",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_what_it_reads() {
        assert_eq!(
            encode(Kind::Connect, "/", 0, None, r#"{"sid":"x"}"#),
            r#"0{"sid":"x"}"#
        );
        assert_eq!(
            encode(Kind::Event, "/custom", 0, None, r#"["a"]"#),
            r#"2/custom,["a"]"#
        );
        assert_eq!(encode(Kind::BinaryAck, "/", 2, Some(789), "[]"), "62-789[]");
        assert_eq!(encode(Kind::Disconnect, "/", 0, None, ""), "1");
    }
}
