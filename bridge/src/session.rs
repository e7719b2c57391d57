//! A session (2025-06-18 / 2025-11-25): its child, its SSE streams and the bounded replay buffer
//! behind `Last-Event-ID`. Stream 0 is the session's GET stream; every POST that turns into an SSE
//! response gets a stream of its own. Event ids are `<stream>-<seq>`, so a resumed GET knows which
//! stream to continue. HTTP status decisions live in [`crate::http`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use mcpgw_core::session::SessionOwner;

use crate::child::{Child, Owner};
use crate::lock;

/// The GET stream's number.
pub const GET_STREAM: u64 = 0;
/// Frames buffered per open HTTP connection before the sender waits.
const CONN_BUFFER: usize = 64;

/// Why a `Last-Event-ID` or GET cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The id is not one this bridge hands out.
    #[error("malformed Last-Event-ID")]
    BadEventId,
    /// The session is closed.
    #[error("session closed")]
    Closed,
}

#[derive(Debug)]
struct Event {
    stream: u64,
    seq: u64,
    frame: Bytes,
}

#[derive(Debug, Default)]
struct Streams {
    next_stream: u64,
    next_seq: u64,
    replay: VecDeque<Event>,
    conns: HashMap<u64, mpsc::Sender<Bytes>>,
    open: HashSet<u64>,
    closed: bool,
}

/// One MCP session.
#[derive(Debug)]
pub struct Session {
    /// The `Mcp-Session-Id`.
    pub id: String,
    /// The caller that opened it: the only one who may use it.
    pub owner: SessionOwner,
    /// The child serving this session (shared in shared mode).
    pub child: Arc<Child>,
    /// The negotiated protocol version.
    pub protocol_version: String,
    /// The bridge initialised the child itself: the client's `notifications/initialized` is not
    /// forwarded a second time.
    pub pre_initialised: bool,
    /// Whether the session owns its child (stop it when the session ends).
    pub owns_child: bool,
    streams: Mutex<Streams>,
    created: Instant,
    last_activity_ms: AtomicU64,
    replay_cap: usize,
    slow: Duration,
}

impl Session {
    /// A new session around `child`.
    #[allow(clippy::too_many_arguments)] // reason: each is a distinct property of the session, set once
    pub fn new(
        id: String,
        owner: SessionOwner,
        child: Arc<Child>,
        protocol_version: String,
        pre_initialised: bool,
        owns_child: bool,
        replay_cap: usize,
        slow: Duration,
    ) -> Arc<Session> {
        let streams = Streams {
            next_stream: GET_STREAM + 1,
            open: HashSet::from([GET_STREAM]),
            ..Streams::default()
        };
        Arc::new(Session {
            id,
            owner,
            child,
            protocol_version,
            pre_initialised,
            owns_child,
            streams: Mutex::new(streams),
            created: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            replay_cap,
            slow,
        })
    }

    /// Records activity (for the idle timeout).
    pub fn touch(&self) {
        let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the last request.
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last)
    }

    /// Opens a new POST stream and attaches a connection to it; returns its number and the body.
    pub fn open_stream(&self) -> (u64, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(CONN_BUFFER);
        let mut s = lock(&self.streams);
        let n = s.next_stream;
        s.next_stream += 1;
        s.open.insert(n);
        if !s.closed {
            s.conns.insert(n, tx);
        }
        (n, rx)
    }

    /// Attaches the GET stream. A new GET replaces the previous one (which ends): a client whose
    /// connection died unnoticed must be able to reconnect at once, not get 409 until the bridge
    /// next writes to the dead connection.
    pub fn open_get(&self) -> Result<mpsc::Receiver<Bytes>, StreamError> {
        let (tx, rx) = mpsc::channel(CONN_BUFFER);
        let mut s = lock(&self.streams);
        if s.closed {
            return Err(StreamError::Closed);
        }
        s.conns.insert(GET_STREAM, tx);
        Ok(rx)
    }

    /// Resumes the stream named by `last_event_id`: the buffered events after it, and the stream's
    /// continuation if it is still open.
    pub fn resume(
        &self,
        last_event_id: &str,
    ) -> Result<(Vec<Bytes>, Option<mpsc::Receiver<Bytes>>), StreamError> {
        let (stream, seq) = parse_event_id(last_event_id).ok_or(StreamError::BadEventId)?;
        let mut s = lock(&self.streams);
        if s.closed {
            return Err(StreamError::Closed);
        }
        let backlog: Vec<Bytes> = s
            .replay
            .iter()
            .filter(|e| e.stream == stream && e.seq > seq)
            .map(|e| e.frame.clone())
            .collect();
        let live = if s.open.contains(&stream) {
            let (tx, rx) = mpsc::channel(CONN_BUFFER);
            s.conns.insert(stream, tx);
            Some(rx)
        } else {
            None
        };
        Ok((backlog, live))
    }

    /// Whether a client is listening on the GET stream.
    pub fn has_get(&self) -> bool {
        lock(&self.streams)
            .conns
            .get(&GET_STREAM)
            .is_some_and(|c| !c.is_closed())
    }

    /// Sends `msg` as an SSE event on `stream`, buffering it for replay. `last` ends the stream.
    /// A connection that cannot take the event within the slow-client timeout is dropped; the
    /// client can resume from the buffer.
    pub async fn emit(&self, stream: u64, msg: &Value, last: bool) {
        let conn = {
            let mut s = lock(&self.streams);
            let seq = s.next_seq;
            s.next_seq += 1;
            let frame = sse_frame(&format!("{stream}-{seq}"), msg);
            s.replay.push_back(Event {
                stream,
                seq,
                frame: frame.clone(),
            });
            while s.replay.len() > self.replay_cap {
                s.replay.pop_front();
            }
            let conn = if last {
                s.open.remove(&stream);
                s.conns.remove(&stream)
            } else {
                s.conns.get(&stream).cloned()
            };
            conn.map(|c| (c, frame))
        };
        if let Some((conn, frame)) = conn {
            let sent = tokio::time::timeout(self.slow, conn.send(frame)).await;
            if !matches!(sent, Ok(Ok(()))) && !last {
                let mut s = lock(&self.streams);
                if s.conns.get(&stream).is_some_and(|c| c.same_channel(&conn)) {
                    s.conns.remove(&stream);
                }
            }
        }
    }

    /// Ends the GET stream; later requests find no session. POST streams stay attached: each
    /// still gets its request's final message (the response, or the error the child's death or
    /// the timeout produces) and then ends by itself.
    pub fn close(&self) {
        let mut s = lock(&self.streams);
        s.closed = true;
        s.conns.remove(&GET_STREAM);
        s.open.clear();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        lock(&self.streams).closed
    }

    async fn deliver(&self, msg: Value) {
        // Server-initiated messages go to the GET stream when a client listens there; otherwise to
        // the latest request in flight (whose POST then answers with SSE), else they wait in the
        // GET stream's replay buffer.
        if !self.has_get()
            && let Some(sink) = self.child.latest_pending()
            && tokio::time::timeout(self.slow, sink.send(msg.clone()))
                .await
                .is_ok()
        {
            return;
        }
        self.emit(GET_STREAM, &msg, false).await;
    }
}

impl Owner for Session {
    fn server_message(
        &self,
        msg: Value,
    ) -> Pin<Box<dyn Future<Output = Option<Value>> + Send + '_>> {
        Box::pin(async move {
            self.deliver(msg).await;
            None
        })
    }
}

/// One SSE event carrying a JSON-RPC message.
pub fn sse_frame(id: &str, msg: &Value) -> Bytes {
    let json = serde_json::to_string(msg).unwrap_or_default();
    Bytes::from(format!("id: {id}\nevent: message\ndata: {json}\n\n"))
}

/// An SSE event without an id.
pub fn sse_frame_plain(msg: &Value) -> Bytes {
    let json = serde_json::to_string(msg).unwrap_or_default();
    Bytes::from(format!("event: message\ndata: {json}\n\n"))
}

fn parse_event_id(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.trim().split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        assert_eq!(parse_event_id("3-17"), Some((3, 17)));
        assert_eq!(parse_event_id("x"), None);
        assert_eq!(parse_event_id("1-"), None);
    }
}
