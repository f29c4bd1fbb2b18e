//! Live updates of the resources that follow the running stack (its status,
//! its health, each service): subscribers are told when they change, through
//! `resources/subscribe` + `notifications/resources/updated` (2025-11-25) or
//! `subscriptions/listen` (2026-07-28).
//!
//! The changes come from the engine's own event stream (`Engine::watch`),
//! pushed, never polled, and only while someone listens: the watcher starts
//! with the first subscriber and stops with the last. Bursts are debounced
//! (one notification per URI per [`DEBOUNCE`]).
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::app::App;
use crate::domain::error::ToolError;
use crate::mcp::resources::{HEALTH, STATUS};

/// Changes within this window become one notification per URI.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The URI of one service's resource.
pub fn service_uri(service: &str) -> String {
    format!("stackpilot://stack/services/{service}")
}

/// Whether a URI follows the running stack (and so can be subscribed to).
pub fn is_live(uri: &str) -> bool {
    uri == STATUS || uri == HEALTH || uri.starts_with("stackpilot://stack/services/")
}

/// A URI a client may subscribe to, or why not (naming the ones it may).
pub fn subscribable(uri: &str) -> Result<String, ToolError> {
    let ok = match uri.strip_prefix("stackpilot://stack/services/") {
        Some(service) => {
            !service.is_empty()
                && service.len() <= 128
                && service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        }
        None => is_live(uri),
    };
    if ok {
        Ok(uri.to_string())
    } else {
        Err(ToolError::invalid(
            "uri",
            format!(
                "`{}` does not change with the running stack; only these can be subscribed to",
                crate::domain::redact::cap(uri, 200)
            ),
        )
        .allowed([
            STATUS.to_string(),
            HEALTH.to_string(),
            "stackpilot://stack/services/{service}".to_string(),
        ]))
    }
}

struct Sub {
    uris: BTreeSet<String>,
    tx: mpsc::UnboundedSender<String>,
}

#[derive(Default)]
struct Inner {
    subs: HashMap<u64, Sub>,
    next: u64,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

/// The subscriptions of one server process.
pub struct Live {
    app: Arc<App>,
    inner: Mutex<Inner>,
}

impl Live {
    pub fn new(app: Arc<App>) -> Arc<Self> {
        Arc::new(Self {
            app,
            inner: Mutex::new(Inner::default()),
        })
    }

    /// Registers interest in `uris`; what changes arrives on `tx`. Starts
    /// the engine watcher with the first subscriber.
    pub fn subscribe(
        self: &Arc<Self>,
        uris: BTreeSet<String>,
        tx: mpsc::UnboundedSender<String>,
    ) -> u64 {
        let Ok(mut inner) = self.inner.lock() else {
            return 0;
        };
        inner.next += 1;
        let id = inner.next;
        inner.subs.insert(id, Sub { uris, tx });
        if inner.watcher.as_ref().is_none_or(|w| w.is_finished()) {
            let me = self.clone();
            inner.watcher = Some(tokio::spawn(async move { me.watch().await }));
        }
        id
    }

    /// Adds or removes URIs of a subscription (a 2025-11-25 session
    /// subscribes one URI at a time).
    pub fn update(&self, id: u64, f: impl FnOnce(&mut BTreeSet<String>)) {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(s) = inner.subs.get_mut(&id) {
                f(&mut s.uris);
            }
        }
        self.prune();
    }

    pub fn unsubscribe(&self, id: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.subs.remove(&id);
        }
        self.prune();
    }

    /// Drops subscriptions whose receiver is gone or that want nothing, and
    /// stops the watcher when none is left.
    fn prune(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner
                .subs
                .retain(|_, s| !s.tx.is_closed() && !s.uris.is_empty());
            if inner.subs.is_empty() {
                if let Some(w) = inner.watcher.take() {
                    w.abort();
                }
            }
        }
    }

    /// Whether a subscription is still registered.
    pub fn has(&self, id: u64) -> bool {
        self.inner
            .lock()
            .map(|i| i.subs.contains_key(&id))
            .unwrap_or(false)
    }

    pub fn listening(&self) -> bool {
        self.inner
            .lock()
            .map(|i| !i.subs.is_empty())
            .unwrap_or(false)
    }

    /// Tells every subscriber of an affected URI.
    fn notify(&self, services: &BTreeSet<String>) {
        let mut changed: BTreeSet<String> = [STATUS.to_string(), HEALTH.to_string()].into();
        changed.extend(services.iter().map(|s| service_uri(s)));
        if let Ok(inner) = self.inner.lock() {
            for s in inner.subs.values() {
                for uri in changed.intersection(&s.uris) {
                    let _ = s.tx.send(uri.clone());
                }
            }
        }
        self.prune();
    }

    /// Follows the engine's events while anyone listens; reconnects after a
    /// second when the stream ends (an engine restart).
    async fn watch(self: Arc<Self>) {
        while self.listening() {
            let stream = match self.app.engine().watch().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %e.message, "no engine event stream; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut stream = stream;
            loop {
                let first = tokio::select! {
                    e = stream.next() => e,
                    // Notice listeners that went away even when nothing happens.
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        self.prune();
                        if !self.listening() { return; }
                        continue;
                    }
                };
                let Some(first) = first else { break };
                let mut services: BTreeSet<String> = [first].into();
                let window = tokio::time::sleep(DEBOUNCE);
                tokio::pin!(window);
                loop {
                    tokio::select! {
                        _ = &mut window => break,
                        e = stream.next() => match e {
                            Some(s) => { services.insert(s); }
                            None => break,
                        },
                    }
                }
                self.notify(&services);
                if !self.listening() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}
