//! The confirmation guard. Fail closed: a plan with a destructive step runs
//! only when a person confirmed it (elicitation, or a confirm token the agent
//! got by showing them the plan), or when the server was started with
//! `--allow-destructive` for scripted CI. There is no other path.
//!
//! Tokens are `base64url(claims).hex(hmac_sha256(key, base64url(claims)))`;
//! claims pin the plan digest, the stack and an expiry, and carry a nonce that
//! is spent on first use.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::plan::Plan;

/// How long a confirm token stays valid.
pub const TOKEN_TTL_SECS: i64 = 600;

/// How a mutating call was allowed to run; recorded in the audit log.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConfirmedBy {
    /// Nothing destructive in the plan.
    NotNeeded,
    /// A person accepted an `elicitation/create` request.
    Elicitation,
    /// A person accepted an elicitation carried by an input-required result (2026-07-28).
    InputRequired,
    /// The agent came back with the confirm token of an unchanged plan.
    Token,
    /// The server runs with `--allow-destructive`.
    AllowDestructive,
    /// The CLI was given `--yes`.
    CliYes,
}

/// What a person answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Accept,
    Decline,
    Cancel,
}

/// Returned instead of running a destructive plan: nothing was changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationRequired {
    /// Always true.
    pub confirmation_required: bool,
    /// Why confirmation is needed now (destructive plan, or the plan changed).
    pub reason: String,
    pub plan: Plan,
    /// Pass back as `confirm_token` (same arguments) to run exactly this plan.
    pub confirm_token: String,
    /// RFC 3339; the token is single use and valid 10 minutes.
    pub expires_at: String,
}

/// Returned when a person declined or dismissed the plan: nothing was changed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Declined {
    /// Always true.
    pub declined: bool,
    /// `decline` or `cancel`.
    pub answer: Answer,
    pub plan: Plan,
    pub message: String,
}

/// The output of every mutating tool: its result, or why it did not run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Guarded<T> {
    Done(T),
    ConfirmationRequired(ConfirmationRequired),
    Declined(Declined),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// Plan digest.
    pub d: String,
    /// Stack id.
    pub s: String,
    /// Expiry, Unix seconds.
    pub e: i64,
    /// Nonce, spent on use.
    pub n: String,
}

fn mac(key: &[u8], payload: &str) -> Result<Hmac<Sha256>, ToolError> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .map_err(|e| ToolError::internal(format!("hmac key: {e}")))?;
    m.update(payload.as_bytes());
    Ok(m)
}

/// Issues a token for `digest` on `stack_id`, valid until `now + TTL`.
pub fn issue_token(
    key: &[u8],
    digest: &str,
    stack_id: &str,
    now: i64,
) -> Result<(String, Claims), ToolError> {
    let nonce: [u8; 16] = rand::random();
    let claims = Claims {
        d: digest.to_string(),
        s: stack_id.to_string(),
        e: now + TOKEN_TTL_SECS,
        n: hex::encode(nonce),
    };
    let payload = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).map_err(|e| ToolError::internal(e.to_string()))?);
    let sig = hex::encode(mac(key, &payload)?.finalize().into_bytes());
    Ok((format!("{payload}.{sig}"), claims))
}

fn refused(message: &str) -> ToolError {
    ToolError::new(ErrorKind::Confirmation, message.to_string()).next_step(
        "call the tool again without confirm_token to get the current plan and a fresh token",
    )
}

/// Checks signature, stack and expiry. Whether the digest still matches, and
/// whether the nonce was spent, are the caller's next checks.
pub fn verify_token(
    key: &[u8],
    token: &str,
    stack_id: &str,
    now: i64,
) -> Result<Claims, ToolError> {
    if token.len() > 1024 {
        return Err(refused(
            "confirm_token is not a token issued by this stack (too long)",
        ));
    }
    let (payload, sig) = token
        .split_once('.')
        .ok_or_else(|| refused("confirm_token is malformed"))?;
    let sig = hex::decode(sig).map_err(|_| refused("confirm_token is malformed"))?;
    mac(key, payload)?.verify_slice(&sig).map_err(|_| {
        refused("confirm_token was not issued by this stack's stackpilot (bad signature)")
    })?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| refused("confirm_token is malformed"))?;
    if claims.s != stack_id {
        return Err(refused("confirm_token was issued for another stack"));
    }
    if claims.e < now {
        return Err(refused(
            "confirm_token expired (tokens are valid 10 minutes)",
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn token_round_trip() {
        let (t, c) = issue_token(KEY, "dig", "stack", 1000).expect("issue");
        let back = verify_token(KEY, &t, "stack", 1000 + TOKEN_TTL_SECS).expect("verify");
        assert_eq!(back, c);
    }

    #[test]
    fn token_refusals() {
        let (t, _) = issue_token(KEY, "dig", "stack", 1000).expect("issue");
        let expired =
            verify_token(KEY, &t, "stack", 1000 + TOKEN_TTL_SECS + 1).expect_err("expired");
        assert!(expired.message.contains("expired"));
        assert!(verify_token(KEY, &t, "other", 1000)
            .expect_err("stack")
            .message
            .contains("another stack"));
        assert!(
            verify_token(b"another key another key another k", &t, "stack", 1000)
                .expect_err("sig")
                .message
                .contains("signature")
        );
        // A forged payload with the old signature fails.
        let (_, sig) = t.split_once('.').expect("dot");
        let forged_claims = Claims {
            d: "other".into(),
            s: "stack".into(),
            e: 99999,
            n: "x".into(),
        };
        let forged = format!(
            "{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).expect("json"))
        );
        assert!(verify_token(KEY, &forged, "stack", 1000).is_err());
        assert!(verify_token(KEY, "garbage", "stack", 1000).is_err());
    }
}
