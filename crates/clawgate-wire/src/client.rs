//! The shared, pooled HTTP client and the event stream it yields
//! (WIRE-1..3, WIRE-7). Chunks are decoded as they arrive; nothing waits
//! for the end of the body. Dropping an [`EventStream`] closes the upstream
//! connection, which is how a client disconnect cancels the request.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use clawgate_core::net::{AddrClass, OutboundPolicy, Reach};
use clawgate_core::ApiKind;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::{timeout_at, Instant};

use crate::anthropic;
use crate::decode::Decoder;
use crate::endpoint::Endpoint;
use crate::error::{Phase, WireError, WireErrorKind};
use crate::guard::{self, Blocked, GuardedResolver, Hooks};
use crate::sse::SseParser;
use crate::tool_text::{Salvaged, ToolTextSalvager};
use crate::types::{ChatRequest, Collected, Event, StopReason};

/// Largest non-streamed body or error body read into memory.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// One pooled reqwest client per [`Reach`] (built when first needed).
type Pools = [OnceLock<Result<reqwest::Client, String>>; 8];

/// A parsed upstream URL and its origin.
#[derive(Clone)]
struct Target {
    url: reqwest::Url,
    origin: Arc<str>,
    /// The same URL for the bare hyper client (`None`: not plain HTTP).
    uri: Option<http::Uri>,
    /// The host is a public name or address (environment proxies apply).
    public: bool,
}

#[derive(Clone)]
pub struct Client {
    pools: Arc<Pools>,
    /// Plain-HTTP calls without a proxy ([`crate::h1`]).
    h1: Arc<crate::h1::H1Pools>,
    /// An environment proxy for `http://` targets (public hosts only).
    http_proxy: bool,
    /// An environment proxy is set (`HTTP_PROXY`, `HTTPS_PROXY` …).
    env_proxy: bool,
    /// Names that resolve to the user's own network bypass that proxy.
    bypass: Arc<guard::ProxyBypass>,
    hooks: Hooks,
    proxy_hosts: Arc<[String]>,
    /// Parsed upstream URLs: parsing (with IDNA) was a visible share of
    /// the per-request CPU, and a gateway calls the same few URLs.
    /// Parsed targets by URL text, shared: a request takes one reference.
    urls: Arc<Mutex<HashMap<String, Arc<Target>>>>,
    /// The provider whose rules `get_raw`, `post_raw`, `health` and
    /// `introspect` follow (`None`: the URL's origin is trusted as a
    /// configured one).
    scope: Option<Arc<OutboundPolicy>>,
}

impl Client {
    /// The same pooled client, whose introspection and health probes
    /// follow `policy` (a provider's outbound rules).
    pub fn scoped(&self, policy: Arc<OutboundPolicy>) -> Client {
        let mut c = self.clone();
        c.scope = Some(policy);
        c
    }

    pub fn new() -> Result<Self, WireError> {
        Self::with_hooks(Hooks::default())
    }

    /// A client whose DNS, dialling or proxy are replaced (guard tests).
    pub fn with_hooks(hooks: Hooks) -> Result<Self, WireError> {
        let c = Self {
            pools: Arc::new(Default::default()),
            h1: Arc::new(Default::default()),
            http_proxy: hooks.proxy.is_some() || guard::env_proxy("http").is_some(),
            env_proxy: hooks.proxy.is_none()
                && (guard::env_proxy("http").is_some() || guard::env_proxy("https").is_some()),
            bypass: Arc::default(),
            hooks,
            proxy_hosts: guard::env_proxy_hosts().into(),
            urls: Default::default(),
            scope: None,
        };
        // The common client is built now, so a broken TLS setup shows at
        // start-up rather than on the first request.
        c.pool(Reach::CONFIGURED)?;
        Ok(c)
    }

    fn build(&self, reach: Reach) -> Result<reqwest::Client, String> {
        let mut b = reqwest::Client::builder()
            .tcp_nodelay(true)
            // A redirect is never followed (SEC-2).
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy()
            .dns_resolver(Arc::new(self.resolver(reach)));
        if let Some(p) = guard::proxy(&self.hooks, self.bypass.clone()) {
            b = b.proxy(p);
        }
        b.build().map_err(|e| e.to_string())
    }

    fn resolver(&self, reach: Reach) -> GuardedResolver {
        GuardedResolver {
            reach,
            hooks: self.hooks.clone(),
            proxy_hosts: self.proxy_hosts.clone(),
        }
    }

    /// The bare hyper client for a plain-HTTP target no proxy applies to.
    fn h1_for(&self, t: &Target, reach: Reach) -> Option<(&crate::h1::H1Client, http::Uri)> {
        let uri = t.uri.clone()?;
        if self.hooks.proxy.is_some() || (self.http_proxy && t.public) {
            return None;
        }
        let c = self.h1[reach.index()].get_or_init(|| crate::h1::build(self.resolver(reach)));
        Some((c, uri))
    }

    fn pool(&self, reach: Reach) -> Result<&reqwest::Client, WireError> {
        let slot = &self.pools[reach.index()];
        slot.get_or_init(|| self.build(reach))
            .as_ref()
            .map_err(|e| WireError::new(WireErrorKind::Request, e.clone()))
    }

    fn target(&self, text: String) -> Result<Arc<Target>, WireError> {
        if let Some(t) = self.urls.lock().ok().and_then(|m| m.get(&text).cloned()) {
            return Ok(t);
        }
        let url = reqwest::Url::parse(&text).map_err(|e| {
            WireError::new(WireErrorKind::Request, format!("invalid URL {text}: {e}"))
        })?;
        let uri = (url.scheme() == "http")
            .then(|| url.as_str().parse::<http::Uri>().ok())
            .flatten();
        let public = url
            .host_str()
            .is_some_and(|h| clawgate_core::net::classify_name(h) == AddrClass::Public);
        let t = Arc::new(Target {
            origin: url.origin().ascii_serialization().into(),
            url,
            uri,
            public,
        });
        if let Ok(mut m) = self.urls.lock() {
            // Config reloads can change URLs; keep the cache small.
            if m.len() >= 256 {
                m.clear();
            }
            m.insert(text, t.clone());
        }
        Ok(t)
    }

    /// The client and URL for one request, after the guard's decision on
    /// an IP-literal host (names are judged by the resolver at connect).
    pub(crate) async fn guarded(
        &self,
        text: String,
        policy: Option<&OutboundPolicy>,
        local_only: Option<&str>,
    ) -> Result<(&reqwest::Client, reqwest::Url, Reach), WireError> {
        let (t, reach) = self.checked(text, policy, local_only)?;
        self.proxy_route(&t).await;
        Ok((self.pool(reach)?, t.url.clone(), reach))
    }

    /// With an environment proxy, a host name that looks public is
    /// resolved first: one of the user's own servers goes direct.
    async fn proxy_route(&self, t: &Target) {
        if !self.env_proxy || !t.public {
            return;
        }
        if let Some(url::Host::Domain(host)) = t.url.host() {
            self.bypass.learn(host, &self.hooks).await;
        }
    }

    /// The parsed target and its reach, after the guard's decision on an
    /// IP-literal host.
    fn checked(
        &self,
        text: String,
        policy: Option<&OutboundPolicy>,
        local_only: Option<&str>,
    ) -> Result<(Arc<Target>, Reach), WireError> {
        let t = self.target(text)?;
        let reach = match policy {
            Some(p) => p.reach(&t.origin, local_only.is_some()),
            None => Reach {
                public: local_only.is_none(),
                ..Reach::CONFIGURED
            },
        };
        if let Err(Blocked(class)) = guard::check_literal(&t.url, reach) {
            return Err(blocked(class, policy, local_only));
        }
        Ok((t, reach))
    }

    /// The common client and a checked URL (introspection, health probes,
    /// the CLI asking its own gateway): configured origins only.
    pub(crate) async fn plain(
        &self,
        url: &str,
    ) -> Result<(&reqwest::Client, reqwest::Url), WireError> {
        let (c, u, _) = self
            .guarded(url.to_string(), self.scope.as_deref(), None)
            .await?;
        Ok((c, u))
    }

    /// Sends one model call and returns its event stream once the response
    /// head has arrived with a success status.
    pub async fn send(&self, ep: &Endpoint, req: &ChatRequest) -> Result<EventStream, WireError> {
        let deadline = Instant::now() + ep.timeout;
        let (body, decoder): (Result<Vec<u8>, serde_json::Error>, Box<dyn Decoder>) = match ep.api {
            ApiKind::OpenAiCompletions => (
                crate::openai_chat::body(ep, req),
                Box::<crate::openai_chat::ChatDecoder>::default(),
            ),
            ApiKind::OpenAiResponses => (
                serde_json::to_vec(&crate::openai_responses::body(ep, req)),
                Box::<crate::openai_responses::ResponsesDecoder>::default(),
            ),
            ApiKind::AnthropicMessages => (
                serde_json::to_vec(&crate::anthropic::body(ep, req)),
                Box::<crate::anthropic::MessagesDecoder>::default(),
            ),
        };
        let bytes = body.map_err(|e| WireError::new(WireErrorKind::Request, e.to_string()))?;
        let (target, reach) =
            self.checked(ep.url(), ep.policy.as_deref(), ep.local_only.as_deref())?;
        self.proxy_route(&target).await;
        let head = match self.h1_for(&target, reach) {
            Some((h1, uri)) => self.send_h1(h1, uri, ep, req, bytes, deadline).await?,
            None => {
                self.send_reqwest(
                    self.pool(reach)?,
                    target.url.clone(),
                    ep,
                    req,
                    bytes,
                    deadline,
                )
                .await?
            }
        };
        let (status, headers, body) = head;
        if (300..400).contains(&status) {
            // Not followed, and not quoted: the target may be an address
            // the guard exists to keep out (SEC-2).
            return Err(WireError::new(
                WireErrorKind::Blocked,
                format!("the server answered {status} with a redirect; the outbound guard does not follow redirects"),
            ));
        }
        let retry_after = retry_after(&headers);
        let sse = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        let mut stream = EventStream {
            body,
            decoder,
            sse: SseParser::new(),
            sse_mode: sse,
            queue: VecDeque::new(),
            deadline,
            idle: ep.idle_timeout,
            ended: false,
            output_started: false,
            buf: Vec::new(),
            salvager: ToolTextSalvager::new(req.tools.iter().map(|t| t.name.clone()).collect()),
            pending_error: None,
            next_tool: 0,
            salvaged: 0,
            sse_events: Vec::new(),
        };
        if !(200..300).contains(&status) {
            let body = stream.read_all().await.unwrap_or_default();
            return Err(WireError::from_status(status, &body, retry_after));
        }
        Ok(stream)
    }
}

/// What both transports hand back: status, headers and the body stream.
type Head = (u16, http::HeaderMap, ByteStream);

/// The request headers of a model call, in order: content type, accept,
/// the key, the Anthropic version, the provider's own headers. Built once
/// for either transport; credentials are marked sensitive, and an invalid
/// name or value is named by its header, never quoted.
fn call_headers(ep: &Endpoint, stream: bool) -> Result<http::HeaderMap, WireError> {
    use http::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
    let mut h = http::HeaderMap::with_capacity(4 + ep.headers.len());
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if stream {
        h.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    }
    let mut put = |k: &str, v: &str, secret: bool| -> Result<(), WireError> {
        let name = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
            WireError::new(WireErrorKind::Request, format!("invalid header name {k:?}"))
        })?;
        let mut value = HeaderValue::from_str(v).map_err(|_| {
            WireError::new(
                WireErrorKind::Request,
                format!("invalid value for header {k:?}"),
            )
        })?;
        value.set_sensitive(secret);
        h.append(name, value);
        Ok(())
    };
    if let Some(key) = ep.api_key.as_ref().filter(|k| !k.is_empty()) {
        match ep.api {
            ApiKind::AnthropicMessages => put("x-api-key", key.expose(), true)?,
            _ => put("authorization", &format!("Bearer {}", key.expose()), true)?,
        }
    }
    if ep.api == ApiKind::AnthropicMessages
        && !ep
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("anthropic-version"))
    {
        put("anthropic-version", anthropic::VERSION, false)?;
    }
    for (k, v) in &ep.headers {
        put(k, v.expose(), true)?;
    }
    Ok(h)
}

fn no_head(ep: &Endpoint) -> WireError {
    WireError::new(
        WireErrorKind::Timeout(Phase::Headers),
        format!("no response head within {}s", ep.timeout.as_secs()),
    )
}

impl Client {
    async fn send_reqwest(
        &self,
        http: &reqwest::Client,
        url: reqwest::Url,
        ep: &Endpoint,
        req: &ChatRequest,
        bytes: Vec<u8>,
        deadline: Instant,
    ) -> Result<Head, WireError> {
        let rb = http
            .post(url)
            .headers(call_headers(ep, req.stream)?)
            .body(bytes);
        match timeout_at(deadline, rb.send()).await {
            Err(_) => Err(no_head(ep)),
            Ok(Err(e)) => {
                if let Some(class) = blocked_in(&e) {
                    return Err(blocked(
                        class,
                        ep.policy.as_deref(),
                        ep.local_only.as_deref(),
                    ));
                }
                Err(transport_error(&e, Phase::Headers))
            }
            Ok(Ok(r)) => {
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let body = r
                    .bytes_stream()
                    .map(|r| r.map_err(|e| transport_error(&e, Phase::Body)));
                Ok((status, headers, Box::pin(body)))
            }
        }
    }

    async fn send_h1(
        &self,
        h1: &crate::h1::H1Client,
        uri: http::Uri,
        ep: &Endpoint,
        req: &ChatRequest,
        bytes: Vec<u8>,
        deadline: Instant,
    ) -> Result<Head, WireError> {
        let mut request = http::Request::new(http_body_util::Full::new(Bytes::from(bytes)));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = call_headers(ep, req.stream)?;
        match timeout_at(deadline, h1.request(request)).await {
            Err(_) => Err(no_head(ep)),
            Ok(Err(e)) => {
                if let Some(b) = find_in_chain::<Blocked>(&e) {
                    return Err(blocked(b.0, ep.policy.as_deref(), ep.local_only.as_deref()));
                }
                Err(classify(
                    &e,
                    false,
                    e.is_connect(),
                    Phase::Headers,
                    "transport error",
                ))
            }
            Ok(Ok(r)) => {
                let (parts, body) = r.into_parts();
                Ok((
                    parts.status.as_u16(),
                    parts.headers,
                    crate::h1::body_stream(body),
                ))
            }
        }
    }
}

/// The guard's refusal as a wire error, naming the key that would allow
/// the address.
fn blocked(
    class: AddrClass,
    policy: Option<&OutboundPolicy>,
    local_only: Option<&str>,
) -> WireError {
    let msg = match policy {
        Some(p) => p.refusal(class, local_only.unwrap_or("agents.defaults.dataPolicy")).to_string(),
        None if class == AddrClass::Public => format!(
            "outbound guard: refused to connect to a public address; dataPolicy is \"local-only\"; set {}: \"allow-hosted\" to allow it",
            local_only.unwrap_or("agents.defaults.dataPolicy")
        ),
        None => format!("outbound guard: refused to connect to {}", class.describe()),
    };
    WireError::new(WireErrorKind::Blocked, msg)
}

/// The first error of type `T` in `e`'s chain, `e` itself included.
pub(crate) fn find_in_chain<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(s) = cur {
        if let Some(t) = s.downcast_ref::<T>() {
            return Some(t);
        }
        cur = s.source();
    }
    None
}

/// The guard's refusal inside a reqwest error (the resolver's answer).
pub(crate) fn blocked_in(e: &reqwest::Error) -> Option<AddrClass> {
    find_in_chain::<Blocked>(e).map(|b| b.0)
}

pub(crate) fn transport_error(e: &reqwest::Error, phase: Phase) -> WireError {
    classify(e, e.is_timeout(), e.is_connect(), phase, without_url(e))
}

/// A transport failure (either client) as a wire error with a plain
/// reason, never the error's own chain text at the top: that names the
/// upstream URL, which remote clients must not see.
pub(crate) fn classify(
    e: &(dyn std::error::Error + 'static),
    timeout: bool,
    connect: bool,
    phase: Phase,
    fallback: &str,
) -> WireError {
    if let Some(b) = find_in_chain::<Blocked>(e) {
        return blocked(b.0, None, None);
    }
    let io = find_in_chain::<std::io::Error>(e).map(|io| io.kind());
    let kind = if timeout {
        WireErrorKind::Timeout(phase)
    } else if connect {
        WireErrorKind::Connect
    } else if phase == Phase::Body {
        WireErrorKind::Truncated
    } else {
        WireErrorKind::Connect
    };
    use std::io::ErrorKind as K;
    let msg = match io {
        Some(K::ConnectionRefused) => "connection refused (is the server running?)".to_string(),
        Some(K::ConnectionReset) => "connection reset by the server".to_string(),
        Some(K::ConnectionAborted) => "connection aborted by the server".to_string(),
        Some(K::TimedOut) => "timed out".to_string(),
        Some(K::UnexpectedEof) => "the server closed the connection".to_string(),
        _ if timeout => "timed out".to_string(),
        _ => {
            // The innermost cause, which names the failure, not the URL.
            let mut last = None;
            let mut source = e.source();
            while let Some(s) = source {
                last = Some(s.to_string());
                source = s.source();
            }
            last.unwrap_or_else(|| fallback.to_string())
        }
    };
    WireError::new(kind, crate::error::truncate(&msg, 300))
}

/// What kind of failure a reqwest error without a cause is, in words
/// that do not name the URL.
fn without_url(e: &reqwest::Error) -> &'static str {
    if e.is_builder() {
        "the request could not be built"
    } else if e.is_redirect() {
        "redirects are not followed"
    } else if e.is_decode() {
        "the answer could not be decoded"
    } else {
        "transport error"
    }
}

/// `Retry-After` in seconds (or `retry-after-ms`).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    if let Some(ms) = h
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
    {
        return Some(Duration::from_millis(ms.max(0.0) as u64));
    }
    h.get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_millis((s.max(0.0) * 1000.0) as u64))
}

pub(crate) type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, WireError>> + Send>>;

/// The events of one model call, decoded as bytes arrive.
pub struct EventStream {
    body: ByteStream,
    decoder: Box<dyn Decoder>,
    sse: SseParser,
    sse_mode: bool,
    queue: VecDeque<Event>,
    deadline: Instant,
    idle: Duration,
    ended: bool,
    output_started: bool,
    buf: Vec<u8>,
    salvager: ToolTextSalvager,
    /// A failure to report once the events before it are handed out.
    pending_error: Option<WireError>,
    /// Next free tool-call index (after the decoder's own).
    next_tool: usize,
    salvaged: usize,
    /// Reused between reads.
    sse_events: Vec<crate::sse::SseEvent>,
}

/// The decoder of a canned stream: it never sees bytes.
struct NoBytes;

impl Decoder for NoBytes {
    fn on_sse(&mut self, _: &crate::sse::SseEvent, _: &mut Vec<Event>) -> Result<(), WireError> {
        Ok(())
    }
    fn on_body(&mut self, _: &serde_json::Value, _: &mut Vec<Event>) -> Result<(), WireError> {
        Ok(())
    }
    fn on_end(&mut self, _: &mut Vec<Event>) -> Result<(), WireError> {
        Ok(())
    }
}

impl EventStream {
    /// A stream of events the gateway made itself (a chat command's
    /// reply): no upstream, every event ready at once.
    pub fn canned(events: Vec<Event>) -> Self {
        EventStream {
            body: Box::pin(futures_util::stream::empty()),
            decoder: Box::new(NoBytes),
            sse: SseParser::new(),
            sse_mode: true,
            queue: events.into(),
            deadline: Instant::now() + Duration::from_secs(1),
            idle: Duration::from_secs(1),
            ended: true,
            output_started: false,
            buf: Vec::new(),
            salvager: ToolTextSalvager::new(Vec::new()),
            pending_error: None,
            next_tool: 0,
            salvaged: 0,
            sse_events: Vec::new(),
        }
    }

    /// True once text, reasoning or a tool call has been handed out.
    pub fn output_started(&self) -> bool {
        self.output_started
    }

    async fn chunk(&mut self) -> Result<Option<Bytes>, WireError> {
        let idle_at = (Instant::now() + self.idle).min(self.deadline);
        match timeout_at(idle_at, self.body.next()).await {
            Ok(Some(Ok(b))) => Ok(Some(b)),
            Ok(Some(Err(e))) => Err(e),
            Ok(None) => Ok(None),
            Err(_) if Instant::now() >= self.deadline => Err(WireError::new(
                WireErrorKind::Timeout(Phase::Body),
                "the provider timeout ran out while the answer was streaming",
            )),
            Err(_) => Err(WireError::new(
                WireErrorKind::Idle,
                format!("no data for {}s", self.idle.as_secs()),
            )),
        }
    }

    async fn read_all(&mut self) -> Result<Vec<u8>, WireError> {
        while let Some(b) = self.chunk().await? {
            if self.buf.len() + b.len() > MAX_BODY {
                return Err(WireError::new(
                    WireErrorKind::Malformed,
                    "response body too large",
                ));
            }
            self.buf.extend_from_slice(&b);
        }
        Ok(std::mem::take(&mut self.buf))
    }

    fn fail(&mut self, mut e: WireError) -> Option<Result<Event, WireError>> {
        self.ended = true;
        e.output_started = self.output_started;
        Some(Err(e))
    }

    /// What is ready without reading: a queued event or error, or the end.
    fn ready(&mut self) -> Option<Option<Result<Event, WireError>>> {
        if !self.queue.is_empty() || self.pending_error.is_some() {
            return Some(self.next_queued());
        }
        if self.ended {
            return Some(None);
        }
        None
    }

    /// The next event; `None` after the last one (or after an error).
    pub async fn next(&mut self) -> Option<Result<Event, WireError>> {
        loop {
            if let Some(r) = self.ready() {
                return r;
            }
            if !self.sse_mode {
                let body = match self.read_all().await {
                    Ok(b) => b,
                    Err(e) => return self.fail(e),
                };
                self.ended = true;
                let mut out = Vec::new();
                if let Some(r) = self.decoder.on_body_bytes(&body, &mut out) {
                    if let Err(e) = r {
                        return self.fail(e);
                    }
                    self.post(out);
                    continue;
                }
                let parsed = match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(v) => v,
                    Err(e) => {
                        return self.fail(WireError::new(
                            WireErrorKind::Malformed,
                            format!("response is not JSON ({e}), {} bytes", body.len()),
                        ))
                    }
                };
                if let Err(e) = self.decoder.on_body(&parsed, &mut out) {
                    return self.fail(e);
                }
                self.post(out);
                continue;
            }
            let item = self.chunk().await;
            if let Some(r) = self.absorb(item) {
                return r;
            }
        }
    }

    /// The next event if it can be had without waiting: queued events, then
    /// bytes the connection has already received. `Pending` means the next
    /// event needs more bytes from the upstream. The gateway uses this to
    /// write every event that arrived together in one frame (one syscall)
    /// while never holding back an event that is ready.
    pub fn next_ready(&mut self) -> Poll<Option<Result<Event, WireError>>> {
        loop {
            if let Some(r) = self.ready() {
                return Poll::Ready(r);
            }
            if !self.sse_mode {
                return Poll::Pending;
            }
            // Polling a stream's `next` and dropping it is cancel-safe.
            let item = match self.body.next().now_or_never() {
                None => return Poll::Pending,
                Some(None) => Ok(None),
                Some(Some(Ok(b))) => Ok(Some(b)),
                Some(Some(Err(e))) => Err(e),
            };
            if let Some(r) = self.absorb(item) {
                return Poll::Ready(r);
            }
        }
    }

    /// Decodes one read of a streamed body. `Some` is an answer to hand out
    /// now (an error, after the events before it); `None` means the decoded
    /// events (if any) are queued.
    fn absorb(
        &mut self,
        item: Result<Option<Bytes>, WireError>,
    ) -> Option<Option<Result<Event, WireError>>> {
        let mut out = Vec::new();
        match item {
            Ok(Some(bytes)) => {
                self.sse_events.clear();
                self.sse.push(&bytes, &mut self.sse_events);
                let evs = std::mem::take(&mut self.sse_events);
                for ev in &evs {
                    if let Err(e) = self.decoder.on_sse(ev, &mut out) {
                        self.post(out);
                        // Hand out what came before the error first.
                        return Some(self.error_after_queue(e));
                    }
                }
                self.sse_events = evs;
            }
            Ok(None) => {
                self.ended = true;
                let last = match self.sse.finish() {
                    Ok(l) => l,
                    Err(e) => {
                        return Some(
                            self.fail(WireError::new(WireErrorKind::Truncated, e.to_string())),
                        )
                    }
                };
                if let Some(ev) = last {
                    if let Err(e) = self.decoder.on_sse(&ev, &mut out) {
                        return Some(self.fail(e));
                    }
                }
                if let Err(e) = self.decoder.on_end(&mut out) {
                    self.post(out);
                    return Some(self.error_after_queue(e));
                }
            }
            Err(e) => return Some(self.fail(e)),
        }
        self.post(out);
        None
    }

    /// Queues decoded events, promoting tool calls written as text (WIRE-6).
    fn post(&mut self, events: Vec<Event>) {
        if !self.salvager.active() {
            self.queue.extend(events);
            return;
        }
        for ev in events {
            match ev {
                Event::TextDelta(t) => {
                    let mut out = Vec::new();
                    self.salvager.push(&t, &mut out);
                    self.salvaged_events(out);
                }
                Event::ToolCallStart { index, id, name } => {
                    self.next_tool = self.next_tool.max(index + 1);
                    self.queue
                        .push_back(Event::ToolCallStart { index, id, name });
                }
                Event::Stop(reason) => {
                    let mut out = Vec::new();
                    self.salvager.finish(&mut out);
                    self.salvaged_events(out);
                    let reason = match reason {
                        StopReason::EndTurn if self.salvaged > 0 => StopReason::ToolUse,
                        r => r,
                    };
                    self.queue.push_back(Event::Stop(reason));
                }
                other => self.queue.push_back(other),
            }
        }
    }

    fn salvaged_events(&mut self, items: Vec<Salvaged>) {
        for s in items {
            match s {
                Salvaged::Text(t) => self.queue.push_back(Event::TextDelta(t)),
                Salvaged::Call { name, arguments } => {
                    let index = self.next_tool;
                    self.next_tool += 1;
                    self.salvaged += 1;
                    self.queue.push_back(Event::ToolCallStart {
                        index,
                        id: format!("call_text_{index}"),
                        name,
                    });
                    self.queue
                        .push_back(Event::ToolCallDelta { index, arguments });
                    self.queue.push_back(Event::ToolCallEnd { index });
                }
                Salvaged::Rejected { text, reason } => {
                    tracing::warn!(%reason, "tool-looking text left as text");
                    self.queue.push_back(Event::TextDelta(text));
                }
            }
        }
    }

    /// Events decoded before a failure still belong to the answer: they
    /// are handed out first, then the error.
    fn error_after_queue(&mut self, e: WireError) -> Option<Result<Event, WireError>> {
        self.ended = true;
        self.pending_error = Some(e);
        self.next_queued()
    }

    fn next_queued(&mut self) -> Option<Result<Event, WireError>> {
        if let Some(ev) = self.queue.pop_front() {
            if matches!(
                ev,
                Event::TextDelta(_) | Event::ReasoningDelta(_) | Event::ToolCallStart { .. }
            ) {
                self.output_started = true;
            }
            return Some(Ok(ev));
        }
        let mut e = self.pending_error.take()?;
        e.output_started = self.output_started;
        Some(Err(e))
    }

    /// Drains the stream into one aggregate.
    pub async fn collect(mut self) -> Result<Collected, WireError> {
        let mut c = Collected::default();
        while let Some(ev) = self.next().await {
            c.apply(&ev?);
        }
        Ok(c)
    }
}
