//! One service's rollout, shared by deploy and rollback: bring up its new
//! container through compose (a second replica beside the old one, or a
//! recreate), wait for health (compose's `--wait`), and when that fails put
//! the previous image back (remove the new replica, or recreate from the
//! pinned previous image) and say what happened, with the failed container's
//! health-check outputs and log tail.
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::domain::deploy::RolloutMode;
use crate::domain::error::ToolError;
use crate::domain::instance::Instance;
use crate::domain::redact;
use crate::engine::compose::cli::{StreamEnd, StreamEvent, Streamed};
use crate::engine::compose::rollout::UpOne;
use crate::engine::compose::ComposeEngine;
use crate::engine::{service_instances, Engine};
use crate::guard::Call;
use crate::tools::stack::report as stack_report;

pub const DEFAULT_HEALTH_TIMEOUT_S: u64 = 120;
pub const MAX_HEALTH_TIMEOUT_S: u64 = 3600;
/// How long a failed new container gets to stop before it is removed.
const FAILED_STOP_S: i32 = 2;

/// An image as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct ImageOut {
    /// The reference (`app:1.2`), when known.
    pub image: Option<String>,
    /// The local image id.
    pub image_id: Option<String>,
}

/// What happened to one service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct ServiceOutcome {
    pub service: String,
    /// `deployed`, `rolled_back`, `unchanged`, or `skipped`.
    pub outcome: String,
    /// Why, in one line (the plan's reason, or why it was left alone).
    pub detail: String,
    /// How the new container replaced the old one (absent when nothing was replaced).
    pub mode: Option<RolloutMode>,
    /// Why that mode.
    pub mode_reason: Option<String>,
    pub from: Option<ImageOut>,
    pub to: Option<ImageOut>,
    /// Containers before and after.
    pub containers_before: Vec<String>,
    pub containers_after: Vec<String>,
    /// The new container's Docker health (`healthy`, or absent without a health check).
    pub health: Option<String>,
    pub duration_s: f64,
}

/// One rollout to run.
pub struct Target<'a> {
    pub service: &'a str,
    pub mode: RolloutMode,
    /// Create from this image (a pin) instead of the compose files' image.
    pub image: Option<&'a str>,
    /// The pin to go back to when a recreate fails health.
    pub back_to: &'a str,
    pub wait_timeout_s: u64,
}

/// A finished rollout.
pub struct Rolled {
    pub before: Vec<Instance>,
    pub after: Vec<Instance>,
    pub to: ImageOut,
    pub health: Option<String>,
    pub duration_s: f64,
}

/// A failed rollout, after the previous image was put back (or not).
pub struct Failed {
    /// One line: what failed.
    pub cause: String,
    /// The failed attempt (health outputs, log tail: untrusted, redacted),
    /// compose's last lines, and what the restore did.
    pub evidence: Vec<String>,
    /// The previous image serves again.
    pub restored: bool,
    pub cancelled: bool,
}

/// Progress for a multi-step call: one counter, every event numbered.
pub struct Ticker<'a> {
    call: &'a Call,
    seq: AtomicU64,
}

impl<'a> Ticker<'a> {
    pub fn new(call: &'a Call) -> Self {
        Self {
            call,
            seq: AtomicU64::new(0),
        }
    }

    pub fn say(&self, message: String) {
        let n = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.call.progress.report(n as f64, None, Some(message));
    }

    /// A compose stream's events as progress, prefixed by `phase`.
    pub fn on_event<'b>(&'b self, phase: &'b str) -> impl FnMut(StreamEvent<'_>) + 'b {
        move |ev| match ev {
            StreamEvent::Line(l) => self.say(format!("{phase}: {}", redact::cap(l.trim(), 300))),
            StreamEvent::Tick(t) => self.say(format!("{phase}: running for {} s", t.as_secs())),
        }
    }
}

fn succeeded(s: &Streamed) -> bool {
    s.end
        == StreamEnd::Exited {
            success: true,
            code: Some(0),
        }
}

fn cause_of(s: &Streamed, wait: u64) -> String {
    match &s.end {
        StreamEnd::Cancelled => "the call was cancelled".into(),
        StreamEnd::TimedOut => "the compose CLI did not finish in time and was stopped".into(),
        StreamEnd::Exited { code, .. } => {
            let last = s
                .lines
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| redact::cap(l.trim(), 300))
                .unwrap_or_default();
            format!(
                "docker compose up exited with {} within the {wait} s health wait{}",
                code.map(|c| c.to_string())
                    .unwrap_or_else(|| "a signal".into()),
                if last.is_empty() {
                    String::new()
                } else {
                    format!(": {last}")
                }
            )
        }
    }
}

fn compose_tail(s: &Streamed) -> String {
    let tail: Vec<&str> = s
        .lines
        .iter()
        .rev()
        .take(20)
        .rev()
        .map(String::as_str)
        .collect();
    redact::cap(
        &format!("docker compose output (last lines):\n{}", tail.join("\n")),
        4096,
    )
}

/// The container's Docker health after it was brought up.
async fn health_of(engine: &dyn Engine, id: &str) -> (Option<String>, Option<String>) {
    match engine.inspect(id).await {
        Ok(Some(d)) => (d.instance.health.clone(), d.instance.image_id.clone()),
        _ => (None, None),
    }
}

/// Rolls one service out; on failure puts the previous image back.
pub async fn roll_out(
    call: &Call,
    compose: &ComposeEngine,
    target: &Target<'_>,
    ticker: &Ticker<'_>,
) -> Result<Rolled, Failed> {
    let started = Instant::now();
    let engine = call.app.engine();
    let svc = target.service;
    let list = |what: &'static str| async move {
        service_instances(engine, svc).await.map_err(|e| Failed {
            cause: format!("listing `{svc}`'s containers {what} failed: {}", e.message),
            evidence: e.evidence,
            restored: false,
            cancelled: false,
        })
    };
    let before = list("before the rollout").await?;
    let before_ids: BTreeSet<String> = before.iter().map(|i| i.id.clone()).collect();
    let second = target.mode == RolloutMode::ZeroDowntime;
    ticker.say(format!(
        "{svc}: {}",
        if second {
            "starting a second container beside the running one"
        } else {
            "recreating its container"
        }
    ));
    let phase = format!("{svc} up");
    let up = UpOne {
        service: svc,
        second_replica: second,
        image: target.image,
        wait_timeout_s: target.wait_timeout_s,
    };
    let streamed = compose
        .up_one(&up, &call.ct, ticker.on_event(&phase))
        .await
        .map_err(|e| Failed {
            cause: format!("docker compose up could not run for `{svc}`: {}", e.message),
            evidence: e.evidence.clone(),
            restored: true,
            cancelled: false,
        })?;
    let after = list("after the rollout").await?;
    let new: Vec<&Instance> = after
        .iter()
        .filter(|i| !before_ids.contains(&i.id))
        .collect();

    if succeeded(&streamed) {
        if second {
            for old in &before {
                ticker.say(format!(
                    "{svc}: removing the replaced container {}",
                    old.name
                ));
                if let Err(e) = compose.remove_container(&old.id, None).await {
                    // The new one serves; the old one is left for a person to remove.
                    return Err(Failed {
                        cause: format!(
                            "the new container of `{svc}` is healthy, but removing the old one ({}) failed: {}",
                            old.name, e.message
                        ),
                        evidence: vec![format!(
                            "both containers run behind the alias `{svc}`; remove {} (docker rm -f) once you have checked the new one",
                            old.name
                        )],
                        restored: false,
                        cancelled: false,
                    });
                }
            }
        }
        let after = service_instances(engine, svc).await.unwrap_or_default();
        let (health, image_id) = match after.iter().find(|i| !before_ids.contains(&i.id)) {
            Some(n) => health_of(engine, &n.id).await,
            None => (None, None),
        };
        let to = ImageOut {
            image: target
                .image
                .map(str::to_string)
                .or_else(|| after.first().and_then(|i| i.image.clone())),
            image_id,
        };
        return Ok(Rolled {
            before,
            after,
            to,
            health,
            duration_s: secs(started),
        });
    }

    // Failed: keep the evidence, then put the previous image back.
    let cancelled = streamed.end == StreamEnd::Cancelled;
    let cause = cause_of(&streamed, target.wait_timeout_s);
    let mut evidence = vec![compose_tail(&streamed)];
    for n in &new {
        if let Ok(Some(d)) = engine.inspect(&n.id).await {
            evidence.extend(stack_report::failure_evidence(engine, &d).await);
        }
    }
    let restore_ct = CancellationToken::new();
    let untouched = new.is_empty()
        && !before.is_empty()
        && after.len() == before.len()
        && after.iter().all(|a| before_ids.contains(&a.id));
    let restored = if untouched {
        evidence.push(format!(
            "rollback: not needed: compose created no new container, and the old one ({}) was left as it was",
            before.iter().map(|b| b.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        true
    } else if second {
        let mut ok = true;
        for n in &new {
            if let Err(e) = compose.remove_container(&n.id, Some(FAILED_STOP_S)).await {
                ok = false;
                evidence.push(format!(
                    "rollback: removing the failed new container {} failed: {}",
                    n.name, e.message
                ));
            }
        }
        let mut serving = Vec::new();
        for old in &before {
            match engine.inspect(&old.id).await {
                Ok(Some(d)) if d.serving => serving.push(format!(
                    "{} ({}{})",
                    old.name,
                    d.instance.state,
                    d.instance
                        .health
                        .as_deref()
                        .map(|h| format!(", {h}"))
                        .unwrap_or_default()
                )),
                _ => ok = false,
            }
        }
        evidence.push(format!(
            "rollback: the new container was removed; {}",
            if serving.is_empty() {
                "the old container is not running either: call health, then recover".to_string()
            } else {
                format!(
                    "the old container kept serving throughout: {}",
                    serving.join(", ")
                )
            }
        ));
        ok && !serving.is_empty()
    } else {
        ticker.say(format!(
            "{svc}: health failed; recreating from the previous image {}",
            target.back_to
        ));
        let back = UpOne {
            service: svc,
            second_replica: false,
            image: Some(target.back_to),
            wait_timeout_s: target.wait_timeout_s,
        };
        let rphase = format!("{svc} rollback");
        match compose
            .up_one(&back, &restore_ct, ticker.on_event(&rphase))
            .await
        {
            Ok(s) if succeeded(&s) => {
                let now = service_instances(engine, svc).await.unwrap_or_default();
                let mut lines = Vec::new();
                for i in &now {
                    let (h, _) = health_of(engine, &i.id).await;
                    lines.push(format!(
                        "{} ({}{})",
                        i.name,
                        i.state,
                        h.map(|h| format!(", {h}")).unwrap_or_default()
                    ));
                }
                evidence.push(format!(
                    "rollback: `{svc}` was recreated from the previous image {} and serves again: {}",
                    target.back_to,
                    lines.join(", ")
                ));
                true
            }
            Ok(s) => {
                evidence.push(format!(
                    "rollback FAILED: recreating `{svc}` from {} did not become healthy either ({})",
                    target.back_to,
                    cause_of(&s, target.wait_timeout_s)
                ));
                evidence.push(compose_tail(&s));
                false
            }
            Err(e) => {
                evidence.push(format!(
                    "rollback FAILED: docker compose up from {} could not run: {}",
                    target.back_to, e.message
                ));
                false
            }
        }
    };
    Err(Failed {
        cause,
        evidence,
        restored,
        cancelled,
    })
}

pub fn secs(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// The checked `health_timeout_s`.
pub fn health_timeout(v: Option<u64>) -> Result<u64, ToolError> {
    let t = v.unwrap_or(DEFAULT_HEALTH_TIMEOUT_S);
    if !(1..=MAX_HEALTH_TIMEOUT_S).contains(&t) {
        return Err(ToolError::invalid(
            "health_timeout_s",
            format!("{t} is out of range 1..={MAX_HEALTH_TIMEOUT_S} seconds"),
        ));
    }
    Ok(t)
}

/// `sha256:0123456789ab...` -> `0123456789ab`.
pub fn short_id(id: &str) -> String {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    h[..h.len().min(12)].to_string()
}

/// A bounded engine call.
pub async fn within<T>(
    what: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, ToolError>>,
) -> Result<T, ToolError> {
    tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| {
        Err(ToolError::external(format!(
            "the engine did not finish {what} within {} s",
            limit.as_secs()
        )))
    })
}
