//! Streamable HTTP sessions (2025-11-25 era), bounded: a cap on live
//! sessions (503 past it) and on sessions per client address (429), and an
//! idle expiry that shrinks as the table fills, so a flood of `initialize`
//! calls can neither exhaust memory nor keep real clients out for long.
//!
//! rmcp's `LocalSessionManager` keeps the sessions; [`TrackedSessions`]
//! wraps it to hear when one closes. The HTTP edge admits new sessions,
//! registers them with the client's address, and marks each session busy
//! while one of its requests (or its GET stream) is open; a reaper closes
//! sessions that are idle past the current limit.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::{
    ServerSseMessage, SessionId, SessionManager,
};

/// The bounds, set by `serve --http` flags.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Live sessions at most; past it `initialize` gets 503.
    pub max_sessions: usize,
    /// Live sessions per client address at most; past it 429.
    pub max_per_client: usize,
    /// Idle expiry while the table is at most a quarter full.
    pub idle: Duration,
    /// Idle expiry when the table is full (it shrinks linearly in between).
    pub idle_min: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 256,
            max_per_client: 64,
            idle: Duration::from_secs(300),
            idle_min: Duration::from_secs(10),
        }
    }
}

/// Why a new session was refused, with how long to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every session slot is taken (503).
    Full { retry_after: Duration },
    /// This client address holds its share (429).
    ClientFull { retry_after: Duration },
    /// This session has [`MAX_IN_FLIGHT`] requests open already (429).
    SessionBusy { retry_after: Duration },
    /// A request reuses the id of one of the session's requests that is still
    /// open (JSON-RPC -32600): rmcp routes a response by its id, so the two
    /// would share one answer and the other would wait for good.
    DuplicateId,
}

/// Requests (and GET streams) one session may have open at once; past it a
/// request gets 429. rmcp 3.11's session worker passes messages through
/// bounded channels in both directions and its loop waits on each send, so
/// with both full the worker would wait for the handler to take a request
/// while the handler waits for the worker to take a response (read from its
/// source, not seen happen). With at most this many requests open and
/// channels of [`SESSION_CHANNEL`], neither can fill.
pub const MAX_IN_FLIGHT: usize = 128;

/// The capacity of rmcp's per-session channels (its default is 16).
pub const SESSION_CHANNEL: usize = 1024;

// Room in each channel for every open request, its response and progress.
const _: () = assert!(MAX_IN_FLIGHT * 4 <= SESSION_CHANNEL);

#[derive(Debug)]
struct Meta {
    client: IpAddr,
    last_seen: Instant,
    in_flight: usize,
    /// The ids (as JSON text) of the session's requests still open.
    open_ids: std::collections::HashSet<String>,
}

/// The live sessions as the HTTP edge sees them.
#[derive(Debug)]
pub struct SessionTable {
    limits: SessionLimits,
    live: Mutex<HashMap<String, Meta>>,
}

impl SessionTable {
    pub fn new(limits: SessionLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            live: Mutex::new(HashMap::new()),
        })
    }

    pub fn limits(&self) -> SessionLimits {
        self.limits
    }

    pub fn len(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The idle expiry now: `idle` up to a quarter full, then shrinking
    /// linearly to `idle_min` at the cap.
    pub fn idle_limit(&self) -> Duration {
        idle_limit(self.limits, self.len())
    }

    /// May `client` open a new session now?
    pub fn admit(&self, client: IpAddr) -> Result<(), Refusal> {
        let live = match self.live.lock() {
            Ok(l) => l,
            Err(_) => return Ok(()),
        };
        let retry_after = idle_limit(self.limits, live.len()).max(Duration::from_secs(1));
        if live.len() >= self.limits.max_sessions {
            return Err(Refusal::Full { retry_after });
        }
        let mine = live.values().filter(|m| m.client == client).count();
        if mine >= self.limits.max_per_client {
            return Err(Refusal::ClientFull { retry_after });
        }
        Ok(())
    }

    /// A session was created for `client`.
    pub fn register(&self, id: &str, client: IpAddr) {
        if let Ok(mut live) = self.live.lock() {
            live.insert(
                id.to_string(),
                Meta {
                    client,
                    last_seen: Instant::now(),
                    in_flight: 0,
                    open_ids: Default::default(),
                },
            );
        }
    }

    pub fn knows(&self, id: &str) -> bool {
        self.live.lock().is_ok_and(|l| l.contains_key(id))
    }

    /// Marks the session busy until the guard is dropped (the response, or
    /// the GET stream, has ended). None when the session is unknown.
    /// A session with [`MAX_IN_FLIGHT`] requests open is refused, and so is a
    /// request whose id (`request_id`, as JSON text) one of its open requests
    /// already has.
    pub fn busy(
        self: &Arc<Self>,
        id: &str,
        request_id: Option<String>,
    ) -> Result<Option<Busy>, Refusal> {
        let Ok(mut live) = self.live.lock() else {
            return Ok(None);
        };
        let Some(meta) = live.get_mut(id) else {
            return Ok(None);
        };
        if meta.in_flight >= MAX_IN_FLIGHT {
            return Err(Refusal::SessionBusy {
                retry_after: Duration::from_secs(1),
            });
        }
        if let Some(rid) = &request_id {
            if !meta.open_ids.insert(rid.clone()) {
                return Err(Refusal::DuplicateId);
            }
        }
        meta.in_flight += 1;
        meta.last_seen = Instant::now();
        Ok(Some(Busy {
            table: self.clone(),
            id: id.to_string(),
            request_id,
        }))
    }

    pub fn forget(&self, id: &str) {
        if let Ok(mut live) = self.live.lock() {
            live.remove(id);
        }
    }

    /// Sessions idle (nothing open) past the current limit.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        let Ok(live) = self.live.lock() else {
            return Vec::new();
        };
        let limit = idle_limit(self.limits, live.len());
        live.iter()
            .filter(|(_, m)| m.in_flight == 0 && now.duration_since(m.last_seen) >= limit)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn idle_limit(limits: SessionLimits, live: usize) -> Duration {
    let cap = limits.max_sessions.max(1);
    let quarter = cap / 4;
    if live <= quarter {
        return limits.idle;
    }
    let span = (cap - quarter).max(1) as f64;
    let load = ((live - quarter) as f64 / span).min(1.0);
    let idle = limits.idle.as_secs_f64();
    let min = limits.idle_min.as_secs_f64().min(idle);
    Duration::from_secs_f64(idle - (idle - min) * load)
}

/// Keeps a session busy while it lives.
#[derive(Debug)]
pub struct Busy {
    table: Arc<SessionTable>,
    id: String,
    request_id: Option<String>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        if let Ok(mut live) = self.table.live.lock() {
            if let Some(meta) = live.get_mut(&self.id) {
                meta.in_flight = meta.in_flight.saturating_sub(1);
                meta.last_seen = Instant::now();
                if let Some(rid) = &self.request_id {
                    meta.open_ids.remove(rid);
                }
            }
        }
    }
}

/// rmcp's in-memory sessions, with the table told when one closes (a DELETE,
/// the reaper, or the session's worker ending).
pub struct TrackedSessions {
    pub inner: LocalSessionManager,
    pub table: Arc<SessionTable>,
}

impl SessionManager for TrackedSessions {
    type Error = <LocalSessionManager as SessionManager>::Error;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        self.inner.create_session().await
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        self.inner.initialize_session(id, message).await
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        self.inner.has_session(id).await
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        self.table.forget(id);
        self.inner.close_session(id).await
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_stream(id, message).await
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        self.inner.accept_message(id, message).await
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.create_standalone_stream(id).await
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        self.inner.resume(id, last_event_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    fn limits() -> SessionLimits {
        SessionLimits {
            max_sessions: 8,
            max_per_client: 5,
            idle: Duration::from_secs(300),
            idle_min: Duration::from_secs(10),
        }
    }

    #[test]
    fn caps_refuse_with_the_right_status() {
        let t = SessionTable::new(limits());
        for i in 0..5 {
            assert_eq!(t.admit(A), Ok(()));
            t.register(&format!("a{i}"), A);
        }
        assert!(matches!(t.admit(A), Err(Refusal::ClientFull { .. })));
        for i in 0..3 {
            assert_eq!(t.admit(B), Ok(()));
            t.register(&format!("b{i}"), B);
        }
        assert!(matches!(t.admit(B), Err(Refusal::Full { .. })));
        t.forget("a0");
        assert_eq!(t.admit(B), Ok(()));
    }

    #[test]
    fn idle_expiry_shrinks_with_load() {
        let l = limits();
        assert_eq!(idle_limit(l, 0), Duration::from_secs(300));
        assert_eq!(idle_limit(l, 2), Duration::from_secs(300));
        assert_eq!(idle_limit(l, 8), Duration::from_secs(10));
        let mid = idle_limit(l, 5);
        assert!(
            mid < Duration::from_secs(300) && mid > Duration::from_secs(10),
            "{mid:?}"
        );
    }

    #[test]
    fn busy_sessions_never_expire_and_idle_ones_do() {
        let t = SessionTable::new(SessionLimits {
            idle: Duration::from_millis(0),
            idle_min: Duration::from_millis(0),
            ..limits()
        });
        t.register("x", A);
        t.register("y", A);
        let guard = t.busy("x", None).expect("not full").expect("known");
        let expired = t.expired(Instant::now() + Duration::from_secs(1));
        assert_eq!(expired, vec!["y".to_string()]);
        drop(guard);
        let mut expired = t.expired(Instant::now() + Duration::from_secs(1));
        expired.sort();
        assert_eq!(expired, vec!["x".to_string(), "y".to_string()]);
        assert!(t.busy("unknown", None).expect("not full").is_none());
    }

    #[test]
    fn a_session_with_too_many_requests_open_is_refused_until_one_ends() {
        let t = SessionTable::new(limits());
        t.register("x", A);
        let guards: Vec<Busy> = (0..MAX_IN_FLIGHT)
            .map(|n| {
                t.busy("x", Some(n.to_string()))
                    .expect("under the cap")
                    .expect("known")
            })
            .collect();
        assert!(matches!(
            t.busy("x", None),
            Err(Refusal::SessionBusy { .. })
        ));
        // Other sessions are not affected.
        t.register("y", A);
        assert!(t.busy("y", None).expect("y").is_some());
        drop(guards);
        assert!(t.busy("x", None).expect("room again").is_some());
    }

    #[test]
    fn an_id_still_open_in_the_session_is_refused_and_free_again_once_answered() {
        let t = SessionTable::new(limits());
        t.register("x", A);
        t.register("y", A);
        let first = t.busy("x", Some("1".into())).expect("free").expect("known");
        assert!(matches!(
            t.busy("x", Some("1".into())),
            Err(Refusal::DuplicateId)
        ));
        // `"1"` is another id than `1`; another session has its own ids.
        assert!(t.busy("x", Some("\"1\"".into())).expect("free").is_some());
        assert!(t.busy("y", Some("1".into())).expect("free").is_some());
        drop(first);
        assert!(t.busy("x", Some("1".into())).expect("free again").is_some());
    }
}
