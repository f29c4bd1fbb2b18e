//! The guard: one tool call as a tool sees it (the shared app, a progress sink
//! and a confirmer supplied by the face, cancellation), and the one gate in
//! front of every mutation: plan digest, confirmation (elicitation,
//! input-required, token, `--allow-destructive`, CLI `--yes`), the stack
//! lock and the facts for the audit line. Tools know nothing of MCP; they
//! call `guard` and `lock_stack`.
pub mod token;

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use self::token::{Answer, ConfirmationRequired, ConfirmedBy, Declined};
use crate::adapters::clock;
use crate::adapters::store::{self, StackLock};
use crate::app::App;
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::plan::Plan;

/// Where progress goes: MCP progress notifications, or stderr for the CLI.
pub trait Progress: Send + Sync {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<String>);
}

/// A progress sink that drops everything (no progress token was given).
pub struct NoProgress;
impl Progress for NoProgress {
    fn report(&self, _: f64, _: Option<f64>, _: Option<String>) {}
}

/// How this face can reach a person for a confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmMode {
    /// Ask now and wait (2025-11-25 `elicitation/create`).
    Elicit,
    /// Return an input-required result; the client asks and retries (2026-07-28).
    InputRequired,
    /// No way to ask: return a plan and a confirm token.
    TokenOnly,
    /// The person already said yes (CLI `--yes`).
    Yes,
}

pub trait Confirmer: Send + Sync {
    fn mode(&self) -> ConfirmMode;
    /// Asks the person; `Err` means asking failed (the guard then falls back to a token).
    fn ask(&self, text: String) -> BoxFuture<'_, Result<Answer, String>>;
}

/// The answer carried by a 2026-07-28 retry: the echoed request state (our
/// token) and what the person said.
#[derive(Debug, Clone)]
pub struct InputRetry {
    pub state: String,
    pub answer: Option<Answer>,
}

/// What a tool hands back to its face.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Structured output (also the confirmation_required / declined forms).
    Done(Value),
    /// 2026-07-28: ask the person through the client, then retry with `state`.
    InputRequired { state: String, message: String },
}

/// Facts the face writes to the audit log after the call.
#[derive(Debug, Clone, Default)]
pub struct AuditFacts {
    pub plan_digest: Option<String>,
    pub confirmed_by: Option<ConfirmedBy>,
    pub outcome: Option<String>,
}

pub struct Call {
    pub app: Arc<App>,
    pub tool: &'static str,
    pub progress: Arc<dyn Progress>,
    pub confirmer: Arc<dyn Confirmer>,
    pub ct: CancellationToken,
    pub retry: Option<InputRetry>,
    audit: Mutex<AuditFacts>,
    lock: tokio::sync::Mutex<Option<StackLock>>,
    /// The digest of a plan a person accepted while the lock was released;
    /// the re-planned call proceeds only when its plan has this digest.
    accepted: Mutex<Option<String>>,
    /// What the face adds beside the result (an ignored argument, say).
    notices: Mutex<Vec<String>>,
    /// How many times a person was asked in this call.
    asks: std::sync::atomic::AtomicUsize,
}

/// How many times a person may be asked in one call before the plan is
/// handed back with a token instead (it kept changing while they decided).
pub const MAX_ASKS: usize = 3;

/// Where a guarded operation goes next.
pub enum Gate {
    /// Run the plan.
    Proceed(ConfirmedBy),
    /// Do not run; hand this back (nothing was changed).
    Halt(Reply),
    /// A person accepted while the stack lock was released: the lock is
    /// held again; compute the plan afresh and call `guard` with it. It runs
    /// only if it is the plan the person accepted.
    Replan,
}

impl Call {
    pub fn new(
        app: Arc<App>,
        tool: &'static str,
        progress: Arc<dyn Progress>,
        confirmer: Arc<dyn Confirmer>,
        ct: CancellationToken,
        retry: Option<InputRetry>,
    ) -> Self {
        Self {
            app,
            tool,
            progress,
            confirmer,
            ct,
            retry,
            audit: Mutex::new(AuditFacts::default()),
            lock: tokio::sync::Mutex::new(None),
            accepted: Mutex::new(None),
            notices: Mutex::new(Vec::new()),
            asks: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A note the face shows beside the result (not part of the output schema).
    pub fn notice(&self, text: impl Into<String>) {
        if let Ok(mut n) = self.notices.lock() {
            n.push(text.into());
        }
    }

    pub fn notices(&self) -> Vec<String> {
        self.notices.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Releases the stack lock (while a person decides, say).
    pub async fn unlock_stack(&self) {
        self.lock.lock().await.take();
    }

    pub fn audit_facts(&self) -> AuditFacts {
        self.audit.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Names the outcome for the audit log when it is not plain `applied`.
    pub fn set_outcome(&self, outcome: &str) {
        if let Ok(mut a) = self.audit.lock() {
            a.outcome = Some(outcome.to_string());
        }
    }

    fn record(&self, plan: &Plan, by: Option<ConfirmedBy>) {
        if let Ok(mut a) = self.audit.lock() {
            a.plan_digest = Some(plan.digest.clone());
            a.confirmed_by = by;
        }
    }

    /// Takes the stack lock for the rest of this call (idempotent).
    pub async fn lock_stack(&self) -> Result<(), ToolError> {
        let mut slot = self.lock.lock().await;
        if slot.is_none() {
            let lock = store::acquire_lock(
                &self.app.stack.coord_dir,
                self.tool,
                self.app.mode.lock_timeout,
            )
            .await?;
            if let Some(dead) = &lock.stale {
                for line in self.app.engine().reap_leftovers(dead.pid) {
                    tracing::warn!(%line, "stopped a process a dead lock holder left running");
                    self.notice(format!("stopped before acting: {line}"));
                }
            }
            *slot = Some(lock);
        }
        Ok(())
    }

    fn key(&self) -> Result<Vec<u8>, ToolError> {
        store::confirm_key(&self.app.stack.state_dir).map_err(ToolError::from)
    }

    /// Counts one guard decision for /metrics (see server::metrics for the values).
    fn count(&self, outcome: &str, via: &str) {
        self.app.metrics.confirmation(outcome, via);
    }

    fn confirmation_required(&self, plan: &Plan, reason: &str) -> Result<Reply, ToolError> {
        self.count("asked", "token");
        let now = clock::now_unix();
        let (token, claims) =
            self::token::issue_token(&self.key()?, &plan.digest, &self.app.stack.id, now)?;
        self.set_outcome("confirmation_required");
        let out = ConfirmationRequired {
            confirmation_required: true,
            reason: reason.to_string(),
            plan: plan.clone(),
            confirm_token: token,
            expires_at: clock::unix_to_rfc3339(claims.e),
        };
        serde_json::to_value(out)
            .map(Reply::Done)
            .map_err(|e| ToolError::internal(e.to_string()))
    }

    fn declined(&self, plan: &Plan, answer: Answer, via: &str) -> Result<Reply, ToolError> {
        let outcome = match answer {
            Answer::Cancel => "cancelled",
            _ => "declined",
        };
        self.count(outcome, via);
        self.set_outcome(outcome);
        let out = Declined {
            declined: true,
            answer,
            plan: plan.clone(),
            message: "not confirmed: nothing was changed".into(),
        };
        serde_json::to_value(out)
            .map(Reply::Done)
            .map_err(|e| ToolError::internal(e.to_string()))
    }

    /// Verifies a token against the current plan and spends it. `Ok(None)`:
    /// valid and the plan is unchanged. `Ok(Some(reply))`: the plan drifted.
    fn redeem(&self, token: &str, plan: &Plan) -> Result<Option<Reply>, ToolError> {
        let now = clock::now_unix();
        let claims = self::token::verify_token(&self.key()?, token, &self.app.stack.id, now)?;
        if !store::spend_token(&self.app.stack.coord_dir, &claims.n, claims.e, now)? {
            return Err(ToolError::new(
                ErrorKind::Confirmation,
                "confirm_token was already used (tokens are single use)",
            )
            .next_step("call the tool again without confirm_token to get the current plan and a fresh token"));
        }
        if claims.d != plan.digest {
            return Ok(Some(self.confirmation_required(
                plan,
                "the plan changed since the token was issued: review this plan; the old token is spent",
            )?));
        }
        Ok(None)
    }

    /// The one gate in front of every mutation. Takes the stack lock first so
    /// the plan cannot change between the check and the apply.
    pub async fn guard(&self, plan: &Plan, confirm_token: Option<&str>) -> Result<Gate, ToolError> {
        self.lock_stack().await?;
        self.record(plan, None);
        if !plan.destructive {
            if confirm_token.is_some() {
                self.notice(
                    "confirm_token was ignored: this plan changes nothing destructive, so it needs no confirmation",
                );
            }
            self.record(plan, Some(ConfirmedBy::NotNeeded));
            return Ok(Gate::Proceed(ConfirmedBy::NotNeeded));
        }
        let accepted = self.accepted.lock().ok().and_then(|mut a| a.take());
        if let Some(digest) = accepted {
            if digest == plan.digest {
                self.count("accepted", "elicitation");
                self.record(plan, Some(ConfirmedBy::Elicitation));
                return Ok(Gate::Proceed(ConfirmedBy::Elicitation));
            }
            // The plan changed while the person decided: it is asked about
            // again below (they never confirmed this one).
            self.notice("the plan changed while you decided; you are asked about the new one");
        }
        if self.app.mode.allow_destructive {
            self.count("bypassed", "allow_destructive");
            self.record(plan, Some(ConfirmedBy::AllowDestructive));
            return Ok(Gate::Proceed(ConfirmedBy::AllowDestructive));
        }
        if let Some(retry) = &self.retry {
            if let Some(drift) = self.redeem(&retry.state, plan)? {
                return Ok(Gate::Halt(drift));
            }
            return match retry.answer {
                Some(Answer::Accept) => {
                    self.count("accepted", "input_required");
                    self.record(plan, Some(ConfirmedBy::InputRequired));
                    Ok(Gate::Proceed(ConfirmedBy::InputRequired))
                }
                Some(other) => Ok(Gate::Halt(self.declined(plan, other, "input_required")?)),
                None => Ok(Gate::Halt(self.declined(
                    plan,
                    Answer::Cancel,
                    "input_required",
                )?)),
            };
        }
        if let Some(token) = confirm_token {
            if let Some(drift) = self.redeem(token, plan)? {
                return Ok(Gate::Halt(drift));
            }
            self.count("accepted", "token");
            self.record(plan, Some(ConfirmedBy::Token));
            return Ok(Gate::Proceed(ConfirmedBy::Token));
        }
        match self.confirmer.mode() {
            ConfirmMode::Yes => {
                self.count("accepted", "cli_yes");
                self.record(plan, Some(ConfirmedBy::CliYes));
                Ok(Gate::Proceed(ConfirmedBy::CliYes))
            }
            ConfirmMode::Elicit => {
                let asked = self.asks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if asked >= MAX_ASKS {
                    return Ok(Gate::Halt(self.confirmation_required(
                        plan,
                        "the plan kept changing while the person decided: show them this one and confirm with the token",
                    )?));
                }
                self.count("asked", "elicitation");
                // Nobody waits for a person with the stack locked: the lock
                // is released while they decide, taken again after, and the
                // plan computed afresh under it (Gate::Replan).
                self.unlock_stack().await;
                let answer = self.confirmer.ask(plan.confirmation_text()).await;
                match answer {
                    Ok(Answer::Accept) => {
                        self.lock_stack().await?;
                        if let Ok(mut a) = self.accepted.lock() {
                            *a = Some(plan.digest.clone());
                        }
                        Ok(Gate::Replan)
                    }
                    Ok(other) => Ok(Gate::Halt(self.declined(plan, other, "elicitation")?)),
                    Err(why) => {
                        tracing::warn!(%why, "elicitation failed; falling back to a confirm token");
                        Ok(Gate::Halt(self.confirmation_required(plan, "destructive plan: confirm with the token (asking the person failed)")?))
                    }
                }
            }
            ConfirmMode::InputRequired => {
                self.count("asked", "input_required");
                let (token, _) = self::token::issue_token(&self.key()?, &plan.digest, &self.app.stack.id, clock::now_unix())?;
                self.set_outcome("input_required");
                Ok(Gate::Halt(Reply::InputRequired {
                    state: token,
                    message: plan.confirmation_text(),
                }))
            }
            ConfirmMode::TokenOnly => Ok(Gate::Halt(self.confirmation_required(
                plan,
                "destructive plan: show it to the person; if they agree, call again with confirm_token",
            )?)),
        }
    }
}
