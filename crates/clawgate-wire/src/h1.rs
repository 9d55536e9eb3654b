//! Plain-HTTP model calls on a bare hyper-util client (issue 14): the
//! transport of local servers, which is where the gateway's own cost is
//! what a user feels. reqwest's layers (URL re-parsing for its redirect
//! policy, retry and timeout wrappers, its body type) were about a sixth
//! of the gateway's instructions per request; this path keeps hyper's
//! pooled HTTP/1.1 and the same outbound guard (the resolver is
//! [`GuardDns`], IP literals are judged before the call as on the reqwest
//! path). HTTPS and proxied calls stay on reqwest.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::guard::{GuardDns, GuardedResolver};

pub(crate) type H1Client = hyper_util::client::legacy::Client<HttpConnector<GuardDns>, Full<Bytes>>;

/// One client per [`clawgate_core::net::Reach`], like the reqwest pools.
pub(crate) type H1Pools = [OnceLock<H1Client>; 8];

pub(crate) fn build(resolver: GuardedResolver) -> H1Client {
    let mut conn = HttpConnector::new_with_resolver(GuardDns(Arc::new(resolver)));
    conn.set_nodelay(true);
    conn.enforce_http(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(TokioTimer::new())
        .build(conn)
}

/// The response body as the event stream reads it: data frames, each
/// failure already a [`crate::error::WireError`].
pub(crate) fn body_stream(body: hyper::body::Incoming) -> crate::client::ByteStream {
    use futures_util::StreamExt;
    Box::pin(body.into_data_stream().map(|r| {
        r.map_err(|e| {
            crate::client::classify(
                &e,
                e.is_timeout(),
                false,
                crate::error::Phase::Body,
                "the answer could not be read",
            )
        })
    }))
}
