//! The streaming response body every endpoint shares: routed events are
//! turned into the client protocol's SSE frames by an [`Encode`] and
//! written as they arrive.
//!
//! The body is pulled by hyper (no task, no channel): each poll waits for
//! the next event, then also takes every event that is already decoded or
//! already received from the upstream (giving hyper's client connection up
//! to two scheduler turns to hand over chunks it has read — no timer), and
//! hands the lot to hyper as one frame; the first frame goes out with the
//! first event. Nothing is ever held back waiting for more data, yet a burst of
//! upstream chunks costs one write instead of one write per chunk (most of
//! the gateway's CPU on streams was in `writev`). When the client goes
//! away hyper drops the body, which drops the routed stream and closes the
//! upstream connection (WIRE-7).

use std::task::Poll;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use clawgate_router::{RoutedStream, StreamFailure};
use clawgate_wire::{Collected, Event};

use crate::errors::ApiError;

/// Above this many bytes a frame is handed out even if more is ready.
const FRAME_LIMIT: usize = 16 * 1024;

/// Scheduler turns without a new event before a frame is handed out.
const YIELDS: usize = 2;

/// While the upstream is silent (a model loading, a long prompt processed
/// on a CPU) the client gets a keep-alive this often, so it does not give
/// up on a server that is working (LOC-2).
pub(crate) const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// One client protocol's streaming encoder.
pub(crate) trait Encode: Send + 'static {
    /// What goes before the first event (role chunk, `message_start`, …).
    fn start(&mut self, out: &mut Vec<u8>);
    /// One event; `false` ends the stream (a terminal error was written).
    fn event(&mut self, ev: Result<Event, StreamFailure>, out: &mut Vec<u8>) -> bool;
    /// The answer is complete.
    fn finish(&mut self, out: &mut Vec<u8>);
    /// Nothing to say yet: a frame clients ignore (an SSE comment unless
    /// the protocol has its own, like Anthropic's `ping`).
    fn keepalive(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b": keep-alive\n\n");
    }
    /// Routing failed after the 200 was committed (see [`routed`]): the
    /// failure as the protocol's error event, ending the stream.
    fn refuse(&mut self, e: &ApiError, out: &mut Vec<u8>);
}

/// The keep-alive clock of one stream: one timer, armed once and re-armed
/// only when it fires, so waiting for the next event costs no timer
/// registration (a keep-alive may then follow data by less than the
/// interval; clients ignore it either way).
pub(crate) struct Ticker {
    every: std::time::Duration,
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Ticker {
    pub(crate) fn new(every: std::time::Duration) -> Self {
        Self { every, sleep: None }
    }

    /// Completes when a keep-alive is due (cancel-safe).
    async fn due(&mut self) {
        let every = self.every;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
        sleep.as_mut().await;
        sleep.as_mut().reset(tokio::time::Instant::now() + every);
    }
}

/// What routing a streamed request yields: the answer's response headers,
/// its stream and the session commit hook.
pub(crate) type Routing = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<(HeaderMap, RoutedStream, Option<OnEnd>), ApiError>>
            + Send,
    >,
>;

/// Awaited before the last frame of a session-mode stream, with the
/// whole answer and whether it failed after output: the turn is stored
/// before the client sees the end. `Err` is told to the client instead of
/// a normal end.
pub(crate) type OnEnd = Box<
    dyn FnOnce(
            Collected,
            bool,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send,
>;

/// Gives the other ready tasks on this worker one turn. Unlike
/// `tokio::task::yield_now`, which defers the task until the runtime has
/// polled the I/O driver (an `epoll_wait` per turn: fifty per fifty-chunk
/// burst), the task goes to the back of the run queue and the driver is
/// polled on the runtime's own schedule.
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

struct Pump<E> {
    stream: RoutedStream,
    ticker: Ticker,
    enc: E,
    started: bool,
    done: bool,
    /// Session mode: the answer so far, and the commit to await at the end.
    record: Option<(Collected, OnEnd)>,
}

impl<E: Encode> Pump<E> {
    /// The failure told to the client when a finished answer could not be
    /// stored.
    fn unsaved(&self, msg: String) -> StreamFailure {
        StreamFailure {
            reference: self.stream.reference().to_string(),
            class: clawgate_router::ErrorClass::ServerError,
            error: clawgate_wire::WireError::new(clawgate_wire::WireErrorKind::StreamError, msg),
        }
    }

    /// The next frame: at least one event (or the end), plus everything
    /// that is ready without waiting.
    async fn frame(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut out = Vec::with_capacity(1024);
        // The first frame goes out at once: time to first token is the
        // number that matters there.
        let first = !self.started;
        if first {
            self.started = true;
            self.enc.start(&mut out);
        }
        // Turns given to the upstream connection since the last event.
        let mut yields = 0;
        loop {
            // Wait only when nothing is ready yet.
            let next = match self.stream.next_ready() {
                Poll::Ready(n) => n,
                Poll::Pending if out.is_empty() => {
                    tokio::select! {
                        biased;
                        n = self.stream.next() => n,
                        () = self.ticker.due() => {
                            self.enc.keepalive(&mut out);
                            return Some(out);
                        }
                    }
                }
                Poll::Pending if first || yields >= YIELDS => return Some(out),
                Poll::Pending => {
                    // hyper's client connection task hands over one body
                    // chunk per turn; give it a turn or two so chunks it
                    // has already read join this frame. No timer: when a
                    // turn brings nothing, the frame goes out.
                    yields += 1;
                    YieldOnce(false).await;
                    continue;
                }
            };
            yields = 0;
            match next {
                None => {
                    self.done = true;
                    if let Some((answer, on_end)) = self.record.take() {
                        if let Err(msg) = on_end(answer, false).await {
                            self.enc.event(Err(self.unsaved(msg)), &mut out);
                            return Some(out);
                        }
                    }
                    self.enc.finish(&mut out);
                    return Some(out);
                }
                Some(ev) => {
                    let failed = ev.is_err();
                    if let (Some((answer, _)), Ok(ev)) = (&mut self.record, &ev) {
                        answer.apply(ev);
                    }
                    if !self.enc.event(ev, &mut out) || failed {
                        self.done = true;
                        if let Some((answer, on_end)) = self.record.take() {
                            // Kept, marked incomplete (FO-5); the client
                            // already has the failure in this frame.
                            let _ = on_end(answer, true).await;
                        }
                        return Some(out);
                    }
                }
            }
            if out.len() >= FRAME_LIMIT {
                return Some(out);
            }
        }
    }
}

impl<E: Encode> Pump<E> {
    fn new(stream: RoutedStream, ticker: Ticker, on_end: Option<OnEnd>, enc: E) -> Self {
        Pump {
            stream,
            ticker,
            enc,
            started: false,
            done: false,
            record: on_end.map(|f| (Collected::default(), f)),
        }
    }
}

fn sse_headers(headers: &mut HeaderMap) {
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
}

/// A `200 text/event-stream` response fed by `enc` from `stream`.
fn response<E: Encode>(
    mut headers: HeaderMap,
    ticker: Ticker,
    stream: RoutedStream,
    on_end: Option<OnEnd>,
    enc: E,
) -> Response {
    sse_headers(&mut headers);
    let pump = Pump::new(stream, ticker, on_end, enc);
    let body = futures_util::stream::unfold(pump, |mut p| async move {
        let frame = p.frame().await.filter(|f| !f.is_empty())?;
        Some((Ok::<_, std::io::Error>(bytes::Bytes::from(frame)), p))
    });
    (StatusCode::OK, headers, axum::body::Body::from_stream(body)).into_response()
}

/// A streamed answer (LOC-2). Routing that ends within one keep-alive
/// interval is answered as usual (a failure keeps its status code). Routing
/// that takes longer — a local server starting, a model loading, a long
/// prompt processed before the first token — commits the 200 at once so
/// the client does not give up: the body carries keep-alives until routing
/// ends, then the answer, or the failure as the protocol's error event.
pub(crate) async fn routed<E: Encode>(
    keepalive: std::time::Duration,
    mut routing: Routing,
    enc: E,
) -> Result<Response, ApiError> {
    let mut ticker = Ticker::new(keepalive);
    tokio::select! {
        biased;
        r = &mut routing => {
            let (headers, stream, on_end) = r?;
            return Ok(response(headers, ticker, stream, on_end, enc));
        }
        () = ticker.due() => {}
    }
    tracing::info!("routing is slow: the stream is committed now and kept alive");
    let mut headers = HeaderMap::new();
    sse_headers(&mut headers);
    let state = Early::Waiting {
        routing,
        enc,
        ticker,
        first: true,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let (frame, next) = match st {
                Early::Done => return None,
                Early::Pumping(mut p) => {
                    let f = p.frame().await.filter(|f| !f.is_empty())?;
                    (f, Early::Pumping(p))
                }
                Early::Waiting {
                    routing,
                    mut enc,
                    ticker,
                    first: true,
                } => {
                    let mut out = Vec::new();
                    enc.keepalive(&mut out);
                    let next = Early::Waiting {
                        routing,
                        enc,
                        ticker,
                        first: false,
                    };
                    (out, next)
                }
                Early::Waiting {
                    mut routing,
                    mut enc,
                    mut ticker,
                    first: false,
                } => {
                    let mut out = Vec::new();
                    tokio::select! {
                        biased;
                        r = &mut routing => match r {
                            Ok((_, stream, on_end)) => {
                                st = Early::Pumping(Box::new(Pump::new(stream, ticker, on_end, enc)));
                                continue;
                            }
                            Err(e) => {
                                enc.refuse(&e, &mut out);
                                (out, Early::Done)
                            }
                        },
                        () = ticker.due() => {
                            enc.keepalive(&mut out);
                            (out, Early::Waiting { routing, enc, ticker, first: false })
                        }
                    }
                }
            };
            return Some((Ok::<_, std::io::Error>(bytes::Bytes::from(frame)), next));
        }
    });
    Ok((StatusCode::OK, headers, axum::body::Body::from_stream(body)).into_response())
}

/// The body of an early-committed stream (see [`routed`]).
enum Early<E> {
    Waiting {
        routing: Routing,
        enc: E,
        ticker: Ticker,
        first: bool,
    },
    Pumping(Box<Pump<E>>),
    Done,
}

/// Appends `s` as a JSON string literal.
pub(crate) fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends any serialisable value as JSON.
pub(crate) fn json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Appends an unsigned integer in decimal.
pub(crate) fn num(out: &mut Vec<u8>, n: u64) {
    let _ = std::io::Write::write_fmt(out, format_args!("{n}"));
}
