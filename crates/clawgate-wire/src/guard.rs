//! The outbound guard (SEC-2, SEC-6) inside the one HTTP client every
//! transport uses. The decision is made on the address actually connected
//! to: host names go through [`GuardedResolver`], whose answer is the
//! exact list of addresses the connector dials (no second lookup, so no
//! DNS-rebinding window); IP-literal hosts, which the connector does not
//! resolve, are judged before the request is sent. One reqwest client
//! exists per [`Reach`], so a request's rules pick its client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use clawgate_core::net::{classify_ip, classify_name, AddrClass, Reach};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A stand-in for DNS (tests).
pub type Lookup = Arc<dyn Fn(&str) -> Option<Vec<IpAddr>> + Send + Sync>;

/// Test seams, so guard tests never open a connection beyond loopback
/// even when the guard is broken. Empty in the product.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Answers DNS instead of the system resolver (`None` from the
    /// function: the name does not exist).
    pub lookup: Option<Lookup>,
    /// Rewrites every address the guard admitted before it is dialled
    /// (a recorder on loopback stands in for the real target).
    pub dial: Option<Arc<dyn Fn(SocketAddr) -> SocketAddr + Send + Sync>>,
    /// Sends every request through this HTTP proxy (a recorder on
    /// loopback): what IP-literal targets would have reached.
    pub proxy: Option<String>,
}

/// A connection the guard refused, as the resolver's error: the class of
/// the address, so the client can name the key that would allow it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("outbound guard: refused to connect to {}", .0.describe())]
pub struct Blocked(pub AddrClass);

/// The resolver of one reach: it drops every address the reach does not
/// admit and fails when none is left.
pub struct GuardedResolver {
    pub reach: Reach,
    pub hooks: Hooks,
    /// Proxy host names from the environment: the user chose them, and
    /// they are where the connection goes, not the target.
    pub proxy_hosts: Arc<[String]>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl GuardedResolver {
    /// The addresses of `host` this reach admits, as the connector will
    /// dial them (after the test seam's rewrite).
    pub(crate) fn admit(
        &self,
        host: &str,
    ) -> impl std::future::Future<Output = Result<Vec<SocketAddr>, BoxError>> + Send + 'static {
        let host = host.to_ascii_lowercase();
        let reach = self.reach;
        let hooks = self.hooks.clone();
        let is_proxy = self.proxy_hosts.contains(&host);
        async move {
            // A metadata name is refused before anyone asks DNS.
            let named = classify_name(&host);
            if matches!(named, AddrClass::Special(_)) && !reach.special && !is_proxy {
                return Err(Box::new(Blocked(named)) as BoxError);
            }
            let found: Vec<SocketAddr> = match &hooks.lookup {
                Some(f) => f(&host)
                    .ok_or_else(|| {
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")
                    })?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 0))
                    .collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let mut refused = None;
            let admitted: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| {
                    let class = classify_ip(a.ip());
                    let ok = is_proxy || reach.admits(class);
                    if !ok {
                        tracing::warn!(host = %host, addr = %a.ip(), class = class.describe(), "outbound guard: address refused");
                        refused.get_or_insert(class);
                    }
                    ok
                })
                .map(|a| match &hooks.dial {
                    Some(d) => d(a),
                    None => a,
                })
                .collect();
            if admitted.is_empty() {
                if let Some(class) = refused {
                    return Err(Box::new(Blocked(class)) as BoxError);
                }
                return Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the name has no address",
                )) as BoxError);
            }
            Ok(admitted)
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let admit = self.admit(name.as_str());
        Box::pin(async move { Ok(Box::new(admit.await?.into_iter()) as Addrs) })
    }
}

/// The same resolver for the bare hyper-util client ([`crate::h1`]).
#[derive(Clone)]
pub(crate) struct GuardDns(pub Arc<GuardedResolver>);

impl tower_service::Service<hyper_util::client::legacy::connect::dns::Name> for GuardDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: hyper_util::client::legacy::connect::dns::Name) -> Self::Future {
        let admit = self.0.admit(name.as_str());
        Box::pin(async move { Ok(admit.await?.into_iter()) })
    }
}

/// The proxy the environment names for a scheme (`HTTPS_PROXY`,
/// `HTTP_PROXY`, `ALL_PROXY`, either case).
pub(crate) fn env_proxy(scheme: &str) -> Option<String> {
    let names: &[&str] = if scheme == "https" {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.trim().is_empty()))
}

/// The proxy hosts of the environment (trusted by the resolver).
pub(crate) fn env_proxy_hosts() -> Vec<String> {
    ["http", "https"]
        .iter()
        .filter_map(|s| env_proxy(s))
        .filter_map(|p| reqwest::Url::parse(&p).ok())
        .filter_map(|u| u.host_str().map(|h| h.to_ascii_lowercase()))
        .collect()
}

/// How long a host name's proxy decision holds before DNS is asked again.
const BYPASS_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Most host names remembered (a config names a handful).
const BYPASS_MAX: usize = 256;
/// Longest wait for the DNS answer behind a proxy decision.
const BYPASS_LOOKUP: std::time::Duration = std::time::Duration::from_secs(2);

/// Which host names that look public resolve to the user's own network
/// (`lan.example.test` → 10.x): with an environment proxy, those go
/// direct, decided by the resolved address as for an IP literal. Filled
/// before a request is sent ([`ProxyBypass::learn`]) and read by the
/// proxy decision, which cannot wait for DNS itself.
#[derive(Default)]
pub(crate) struct ProxyBypass {
    hosts: std::sync::Mutex<std::collections::HashMap<String, (bool, std::time::Instant)>>,
}

impl ProxyBypass {
    /// Whether `host` resolved to non-public addresses only (lately).
    fn direct(&self, host: &str) -> bool {
        self.hosts.lock().is_ok_and(|m| {
            m.get(&host.to_ascii_lowercase())
                .is_some_and(|(direct, at)| *direct && at.elapsed() < BYPASS_TTL)
        })
    }

    /// Resolves `host` (unless its decision is fresh) and records whether
    /// every address it has is the user's own (private, loopback …).
    pub(crate) async fn learn(&self, host: &str, hooks: &Hooks) {
        let host = host.to_ascii_lowercase();
        let fresh = self.hosts.lock().is_ok_and(|m| {
            m.get(&host)
                .is_some_and(|(_, at)| at.elapsed() < BYPASS_TTL)
        });
        if fresh {
            return;
        }
        let found: Vec<IpAddr> = match &hooks.lookup {
            Some(f) => f(&host).unwrap_or_default(),
            None => {
                match tokio::time::timeout(
                    BYPASS_LOOKUP,
                    tokio::net::lookup_host((host.as_str(), 0)),
                )
                .await
                {
                    Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
                    // No answer: the proxy decides (it may know names we
                    // do not).
                    _ => Vec::new(),
                }
            }
        };
        let direct =
            !found.is_empty() && found.iter().all(|ip| classify_ip(*ip) != AddrClass::Public);
        if let Ok(mut m) = self.hosts.lock() {
            if m.len() >= BYPASS_MAX && !m.contains_key(&host) {
                m.retain(|_, (_, at)| at.elapsed() < BYPASS_TTL);
                if m.len() >= BYPASS_MAX {
                    m.clear();
                }
            }
            m.insert(host, (direct, std::time::Instant::now()));
        }
    }
}

/// Environment proxies apply to public hosts only: a proxy never sees
/// traffic to the user's own servers, named by address or by a name
/// that resolves to one (and `NO_PROXY` is honoured).
pub(crate) fn proxy(hooks: &Hooks, bypass: Arc<ProxyBypass>) -> Option<reqwest::Proxy> {
    if let Some(p) = &hooks.proxy {
        return reqwest::Proxy::all(p.as_str()).ok();
    }
    if env_proxy("http").is_none() && env_proxy("https").is_none() {
        return None;
    }
    let no_proxy = reqwest::NoProxy::from_env();
    let p = reqwest::Proxy::custom(move |url| {
        let host = url.host_str()?;
        if classify_name(host) != AddrClass::Public || bypass.direct(host) {
            return None;
        }
        let target = env_proxy(url.scheme())?;
        reqwest::Url::parse(&target).ok()
    });
    Some(p.no_proxy(no_proxy))
}

/// Judges an IP-literal host (the connector dials it without asking the
/// resolver).
pub(crate) fn check_literal(url: &reqwest::Url, reach: Reach) -> Result<(), Blocked> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    let class = classify_ip(ip);
    if reach.admits(class) {
        Ok(())
    } else {
        tracing::warn!(addr = %ip, class = class.describe(), "outbound guard: address refused");
        Err(Blocked(class))
    }
}
