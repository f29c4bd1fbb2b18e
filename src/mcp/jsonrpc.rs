//! The JSON-RPC edge: every frame a client sends is checked here before rmcp
//! sees it, so a malformed one gets the answer JSON-RPC 2.0 prescribes
//! instead of silence (rmcp drops frames it cannot decode, and answers an
//! envelope it cannot type without the request's id):
//! - not JSON (truncated, plain text, invalid UTF-8, NaN, two objects on one
//!   line, nesting past serde_json's 128 levels): -32700 with id null;
//! - JSON but not a request, notification or response (a batch, a scalar,
//!   `"jsonrpc":"1.0"`, a method that is not a string, params that are not an
//!   object): -32600, with the id when one can be read;
//! - `tools/call` whose params do not name a tool by a string, or whose
//!   `arguments` are not an object: -32602 naming the field.
//!
//! Both transports use it: stdio line by line, HTTP per request body.
use serde_json::{json, Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;

/// What to do with one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Well formed: hand it to rmcp.
    Forward,
    /// Answer with this JSON-RPC error response; rmcp never sees the frame.
    Reply(Value),
    /// A malformed notification or response: JSON-RPC sends nothing back for
    /// those (nobody waits for an answer), so it is dropped and logged.
    Drop(String),
}

fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message.into()},
    })
}

/// The id when it is one JSON-RPC allows (a string or an integer).
fn usable_id(obj: &Map<String, Value>) -> Option<Value> {
    match obj.get("id") {
        Some(Value::String(s)) => Some(Value::String(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n.clone())),
        _ => None,
    }
}

/// Checks one frame (a stdio line, or an HTTP request body).
pub fn check(bytes: &[u8]) -> Frame {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Frame::Reply(error(
                Value::Null,
                PARSE_ERROR,
                format!("parse error: the frame is not UTF-8 ({e})"),
            ))
        }
    };
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Frame::Reply(error(Value::Null, PARSE_ERROR, format!("parse error: {e}")))
        }
    };
    let obj = match value {
        Value::Object(obj) => obj,
        Value::Array(_) => {
            return Frame::Reply(error(
                Value::Null,
                INVALID_REQUEST,
                "invalid request: batches are not supported (MCP sends one message per frame)",
            ))
        }
        _ => {
            return Frame::Reply(error(
                Value::Null,
                INVALID_REQUEST,
                "invalid request: a JSON-RPC message is an object",
            ))
        }
    };
    let id = usable_id(&obj);
    let has_id = obj.contains_key("id");
    let is_response =
        !obj.contains_key("method") && (obj.contains_key("result") || obj.contains_key("error"));
    // Who gets an answer: a request (it has an id); an id that is not a
    // string or integer makes the request invalid, answered with id null.
    let invalid = |message: String| -> Frame {
        if is_response || (!has_id && obj.contains_key("method")) {
            Frame::Drop(message)
        } else {
            Frame::Reply(error(
                id.clone().unwrap_or(Value::Null),
                INVALID_REQUEST,
                format!("invalid request: {message}"),
            ))
        }
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid("`jsonrpc` must be \"2.0\"".into());
    }
    if has_id && id.is_none() {
        return Frame::Reply(error(
            Value::Null,
            INVALID_REQUEST,
            "invalid request: `id` must be a string or an integer",
        ));
    }
    if is_response {
        return Frame::Forward;
    }
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => return invalid("`method` must be a string".into()),
        None => return invalid("a request needs `method`".into()),
    };
    let params = match obj.get("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(p)) => Some(p),
        Some(_) => return invalid("`params` must be an object".into()),
    };
    if method == "tools/call" {
        if let Some(id) = id {
            if let Some(message) = tools_call_params(params) {
                return Frame::Reply(error(id, INVALID_PARAMS, message));
            }
        }
    }
    Frame::Forward
}

/// Why a `tools/call`'s params are unusable, naming the field.
fn tools_call_params(params: Option<&Map<String, Value>>) -> Option<String> {
    let Some(params) = params else {
        return Some("invalid params: `params.name` is missing: name the tool to call".into());
    };
    match params.get("name") {
        Some(Value::String(n)) if !n.is_empty() => {}
        Some(Value::String(_)) => {
            return Some("invalid params: `params.name` is empty: name the tool to call".into())
        }
        Some(other) => {
            return Some(format!(
                "invalid params: `params.name` must be a string naming a tool, not {}",
                kind(other)
            ))
        }
        None => {
            return Some("invalid params: `params.name` is missing: name the tool to call".into())
        }
    }
    match params.get("arguments") {
        None | Some(Value::Null) | Some(Value::Object(_)) => None,
        Some(other) => Some(format!(
            "invalid params: `params.arguments` must be an object, not {}",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(bytes: &[u8]) -> (Value, i64) {
        match check(bytes) {
            Frame::Reply(v) => {
                let code = v["error"]["code"].as_i64().expect("code");
                (v["id"].clone(), code)
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn frames_that_are_not_json_get_a_parse_error_with_id_null() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for frame in [
            &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\""[..],
            b"hello there",
            b"\xff\xfe{}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\0",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} {\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\",\"params\":{\"x\":NaN}}",
            deep.as_bytes(),
            b"",
        ] {
            assert_eq!(reply(frame), (Value::Null, PARSE_ERROR), "{:?}", String::from_utf8_lossy(frame));
        }
    }

    #[test]
    fn bad_envelopes_are_invalid_requests_with_their_id() {
        for (frame, id) in [
            (r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#, json!(7)),
            (
                r#"{"jsonrpc":"2.0","id":"a","method":"ping","params":[1]}"#,
                json!("a"),
            ),
            (
                r#"{"jsonrpc":"2.0","id":8,"method":"ping","params":"x"}"#,
                json!(8),
            ),
            (r#"{"jsonrpc":"2.0","id":9,"method":5}"#, json!(9)),
            (
                r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#,
                Value::Null,
            ),
            (r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#, Value::Null),
            (r#"5"#, Value::Null),
        ] {
            assert_eq!(reply(frame.as_bytes()), (id, INVALID_REQUEST), "{frame}");
        }
    }

    #[test]
    fn bad_tools_call_params_name_the_field() {
        for (frame, field) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"health","arguments":[]}}"#,
                "params.arguments",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"health","arguments":"x"}}"#,
                "params.arguments",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"health","arguments":5}}"#,
                "params.arguments",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
                "params.name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
                "params.name",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
                "params.name",
            ),
        ] {
            match check(frame.as_bytes()) {
                Frame::Reply(v) => {
                    assert_eq!(v["id"], 1);
                    assert_eq!(v["error"]["code"], INVALID_PARAMS);
                    let m = v["error"]["message"].as_str().expect("message");
                    assert!(m.contains(field), "{m}");
                }
                other => panic!("{frame}: {other:?}"),
            }
        }
    }

    #[test]
    fn good_frames_pass_and_bad_notifications_are_dropped() {
        for frame in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"health"}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"health","arguments":{"deep":true}}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ] {
            assert_eq!(check(frame.as_bytes()), Frame::Forward, "{frame}");
        }
        assert!(matches!(
            check(br#"{"jsonrpc":"1.0","method":"notifications/initialized"}"#),
            Frame::Drop(_)
        ));
    }
}
