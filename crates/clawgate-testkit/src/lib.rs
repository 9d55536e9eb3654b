//! A scripted HTTP/1.1 upstream for tests, listening on 127.0.0.1 only.
//!
//! Each request is answered by a handler that returns a [`Reply`]: a status,
//! headers and a list of [`Step`]s — bytes to send, pauses, a wait on a
//! signal, or an abrupt close. That is enough to replay recorded traffic of
//! real servers and to inject every transport fault failover must survive.
//! Requests are recorded for assertions, and a client that hangs up is
//! noticed ([`FakeServer::disconnects`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A request as the fake server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One step of a reply body.
#[derive(Debug, Clone)]
pub enum Step {
    Bytes(Vec<u8>),
    Sleep(Duration),
    /// Wait until the notify fires (or the client goes away).
    Wait(Arc<Notify>),
    /// Drop the connection now, mid-body.
    Close,
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub steps: Vec<Step>,
    /// Close the connection before sending any response at all.
    pub reset_before_headers: bool,
}

impl Reply {
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            steps: Vec::new(),
            reset_before_headers: false,
        }
    }

    pub fn json(status: u16, body: &str) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .bytes(body)
    }

    /// An SSE reply: each item is one already-framed piece of the stream.
    pub fn sse<I: IntoIterator<Item = S>, S: Into<String>>(frames: I) -> Self {
        let mut r = Self::new(200).header("content-type", "text/event-stream");
        for f in frames {
            r = r.bytes(f.into());
        }
        r
    }

    /// The response half of a recorded `.http` exchange (shared/wire
    /// format): status line, headers, then the body exactly as recorded.
    pub fn recorded(text: &[u8]) -> Option<Self> {
        let status_at = find(text, b"\nHTTP/1.1 ")? + 1;
        let rest = &text[status_at..];
        let (head_len, sep) = match find(rest, b"\r\n\r\n") {
            Some(i) => (i, 4),
            None => (find(rest, b"\n\n")?, 2),
        };
        let head = String::from_utf8_lossy(&rest[..head_len]);
        let mut lines = head.lines();
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let mut reply = Self::new(status);
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim();
                if k.eq_ignore_ascii_case("content-length")
                    || k.eq_ignore_ascii_case("transfer-encoding")
                    || k.eq_ignore_ascii_case("connection")
                    || k.eq_ignore_ascii_case("keep-alive")
                {
                    continue;
                }
                reply = reply.header(k, v.trim());
            }
        }
        Some(reply.bytes(rest[head_len + sep..].to_vec()))
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn bytes(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Bytes(b.into()));
        self
    }

    pub fn sleep(mut self, d: Duration) -> Self {
        self.steps.push(Step::Sleep(d));
        self
    }

    pub fn wait(mut self, n: Arc<Notify>) -> Self {
        self.steps.push(Step::Wait(n));
        self
    }

    pub fn close(mut self) -> Self {
        self.steps.push(Step::Close);
        self
    }

    pub fn reset(mut self) -> Self {
        self.reset_before_headers = true;
        self
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A running fake upstream. Dropping it stops accepting connections.
pub struct FakeServer {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    disconnects: Arc<AtomicUsize>,
    disconnected: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Starts on 127.0.0.1 with an ephemeral port.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_at(0, handler).await
    }

    /// Starts on 127.0.0.1:`port` (0: an ephemeral one), e.g. a server
    /// that comes up where a refused connection was seen before.
    pub async fn start_at(
        port: u16,
        handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => panic_free_abort(&format!("cannot bind 127.0.0.1: {e}")),
        };
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let disconnects = Arc::new(AtomicUsize::new(0));
        let disconnected = Arc::new(Notify::new());
        let handler: Arc<Handler> = Arc::new(handler);
        let (rq, dc, dn) = (requests.clone(), disconnects.clone(), disconnected.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                let (h, rq, dc, dn) = (handler.clone(), rq.clone(), dc.clone(), dn.clone());
                tokio::spawn(async move { serve(sock, h, rq, dc, dn).await });
            }
        });
        Self {
            addr,
            requests,
            disconnects,
            disconnected,
            task,
        }
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many times a client closed its connection while a reply was
    /// still waiting or streaming.
    pub fn disconnects(&self) -> usize {
        self.disconnects.load(Ordering::SeqCst)
    }

    /// Waits until the next client disconnect is observed.
    pub async fn wait_disconnect(&self) {
        if self.disconnects() > 0 {
            return;
        }
        self.disconnected.notified().await;
    }
}

fn panic_free_abort(msg: &str) -> ! {
    eprintln!("{msg}");
    std::process::abort()
}

async fn read_request(sock: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        let mut tmp = [0u8; 8192];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let start = head_end + 4;
    while buf.len() < start + len {
        let mut tmp = [0u8; 8192];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[start..start + len].to_vec();
    buf.drain(..start + len);
    Some(Recorded {
        method,
        path,
        headers,
        body,
    })
}

async fn serve(
    mut sock: TcpStream,
    handler: Arc<Handler>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    disconnects: Arc<AtomicUsize>,
    disconnected: Arc<Notify>,
) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let reply = handler(&req);
        if let Ok(mut r) = requests.lock() {
            r.push(req);
        }
        if reply.reset_before_headers {
            return;
        }
        let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("transfer-encoding: chunked\r\n\r\n");
        if sock.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for step in reply.steps {
            let ok = match step {
                Step::Bytes(b) if b.is_empty() => true,
                Step::Bytes(b) => {
                    let mut chunk = format!("{:x}\r\n", b.len()).into_bytes();
                    chunk.extend_from_slice(&b);
                    chunk.extend_from_slice(b"\r\n");
                    sock.write_all(&chunk).await.is_ok() && sock.flush().await.is_ok()
                }
                Step::Sleep(d) => watch_client(&mut sock, tokio::time::sleep(d)).await,
                Step::Wait(n) => watch_client(&mut sock, n.notified()).await,
                Step::Close => return,
            };
            if !ok {
                disconnects.fetch_add(1, Ordering::SeqCst);
                disconnected.notify_waiters();
                return;
            }
        }
        if sock.write_all(b"0\r\n\r\n").await.is_err() {
            return;
        }
    }
}

/// Runs `fut` unless the client hangs up first; false when it did.
async fn watch_client(sock: &mut TcpStream, fut: impl std::future::Future<Output = ()>) -> bool {
    let mut probe = [0u8; 1];
    tokio::pin!(fut);
    tokio::select! {
        _ = &mut fut => true,
        r = sock.peek(&mut probe) => {
            if matches!(r, Ok(0) | Err(_)) {
                return false;
            }
            // Early bytes of a next request: finish the step anyway.
            fut.await;
            true
        }
    }
}

/// The `clawgate-fake-server` binary (a stand-in local model server run as
/// a real child process), built beside the running test: `cargo test
/// --workspace` builds it with this crate's own tests. `None` when it is
/// not there (then `cargo build -p clawgate-testkit` builds it).
pub fn fake_server_bin() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> → target/<profile>/clawgate-fake-server
    let dir = exe.parent()?;
    let dir = if dir.ends_with("deps") {
        dir.parent()?
    } else {
        dir
    };
    let bin = dir.join(format!(
        "clawgate-fake-server{}",
        std::env::consts::EXE_SUFFIX
    ));
    bin.is_file().then_some(bin)
}

/// A port on 127.0.0.1 that was free a moment ago (for a server that must
/// know its address before it starts, like a `localService`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Whether process `pid` runs (Linux `/proc`; a zombie has exited).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
