//! The server's own metrics, served at `GET /metrics` (HTTP mode) in the
//! OpenMetrics text format that Prometheus scrapes (`prometheus-client`).
//!
//! What is counted, and where:
//! - `stackpilot_tool_calls_total{tool, outcome}` and the latency histogram
//!   `stackpilot_tool_call_duration_seconds{tool}`: in `server::run_tool`, so
//!   MCP and the CLI face count alike. `outcome` is `ok`, `error`,
//!   `confirmation_required`, `declined` or `input_required`.
//! - `stackpilot_confirmations_total{outcome, via}`: where the guard decides
//!   (call.rs). `outcome`: `asked` (a person was asked: elicitation sent,
//!   input-required returned, or a plan with a confirm token returned),
//!   `accepted`, `declined`, `cancelled`, `bypassed` (`--allow-destructive`).
//!   `via`: `elicitation`, `input_required`, `token`, `cli_yes`, `allow_destructive`.
//! - `stackpilot_service_health{service, verdict}`: a state set set by the
//!   health tool: 1 on the service's last verdict, 0 on the others.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of `encode`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every verdict the health tool gives; each service has one series per verdict.
pub const VERDICTS: [&str; 5] = ["healthy", "degraded", "unhealthy", "stopped", "missing"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfirmLabels {
    outcome: String,
    via: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
    verdict: String,
}

/// 1 ms to about 33 s, doubling: tool calls range from a cached read to a
/// minutes-long pull, and a doubling scale keeps the series count small.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    tool_calls: Family<CallLabels, Counter>,
    tool_latency: Family<ToolLabel, Histogram, fn() -> Histogram>,
    confirmations: Family<ConfirmLabels, Counter>,
    service_health: Family<ServiceLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stackpilot");
        let tool_calls = Family::<CallLabels, Counter>::default();
        let tool_latency = Family::<ToolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let confirmations = Family::<ConfirmLabels, Counter>::default();
        let service_health = Family::<ServiceLabels, Gauge>::default();
        registry.register(
            "tool_calls",
            "Tool calls by tool and outcome",
            tool_calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call latency by tool",
            tool_latency.clone(),
        );
        registry.register(
            "confirmations",
            "Confirmations of destructive plans: asked, accepted, declined, cancelled, bypassed",
            confirmations.clone(),
        );
        registry.register(
            "service_health",
            "Last health verdict per service (1 on the current verdict, 0 on the others)",
            service_health.clone(),
        );
        Self {
            registry,
            tool_calls,
            tool_latency,
            confirmations,
            service_health,
        }
    }

    /// One finished tool call.
    pub fn tool_call(&self, tool: &str, outcome: &str, seconds: f64) {
        self.tool_calls
            .get_or_create(&CallLabels {
                tool: tool.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.tool_latency
            .get_or_create(&ToolLabel {
                tool: tool.to_string(),
            })
            .observe(seconds);
    }

    /// One decision of the confirmation guard (see the module docs for the values).
    pub fn confirmation(&self, outcome: &str, via: &str) {
        self.confirmations
            .get_or_create(&ConfirmLabels {
                outcome: outcome.to_string(),
                via: via.to_string(),
            })
            .inc();
    }

    /// Records a service's latest verdict as a state set.
    pub fn service_verdict(&self, service: &str, verdict: &str) {
        for v in VERDICTS {
            self.service_health
                .get_or_create(&ServiceLabels {
                    service: service.to_string(),
                    verdict: v.to_string(),
                })
                .set(i64::from(v == verdict));
        }
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_encodes() {
        let m = Metrics::new();
        m.tool_call("health", "ok", 0.004);
        m.tool_call("health", "ok", 0.002);
        m.tool_call("recover", "error", 0.5);
        m.confirmation("asked", "token");
        m.service_verdict("db", "stopped");
        m.service_verdict("db", "healthy");
        let text = m.encode();
        assert!(text.contains("stackpilot_tool_calls_total{tool=\"health\",outcome=\"ok\"} 2"));
        assert!(text.contains("stackpilot_tool_calls_total{tool=\"recover\",outcome=\"error\"} 1"));
        assert!(text.contains("stackpilot_tool_call_duration_seconds_count{tool=\"health\"} 2"));
        assert!(text.contains("stackpilot_confirmations_total{outcome=\"asked\",via=\"token\"} 1"));
        assert!(text.contains("stackpilot_service_health{service=\"db\",verdict=\"healthy\"} 1"));
        assert!(text.contains("stackpilot_service_health{service=\"db\",verdict=\"stopped\"} 0"));
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
