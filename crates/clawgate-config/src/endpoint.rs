//! Where a configured base URL lives: loopback, private network, a
//! special-use range, or the public internet. Decides whether local
//! credential markers count (CFG-3) and whether a `local-only` data policy
//! admits a provider before any connection (SEC-6); the wire client judges
//! the address it actually connects to with the same rules
//! (`clawgate_core::net`).

pub use clawgate_core::net::EndpointClass;
use clawgate_core::net::{classify_ip, classify_name, AddrClass};
use std::net::IpAddr;

/// Classifies the host of `base_url`; `None` when it is not a URL with a host.
pub fn classify(base_url: &str) -> Option<EndpointClass> {
    let url = url::Url::parse(base_url).ok()?;
    Some(EndpointClass::of(host_class(&url)?))
}

/// The address class of a parsed URL's host.
pub fn host_class(url: &url::Url) -> Option<AddrClass> {
    Some(match url.host()? {
        url::Host::Ipv4(ip) => classify_ip(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => classify_ip(IpAddr::V6(ip)),
        url::Host::Domain(name) => classify_name(name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_hosts() {
        let cases = [
            ("http://127.0.0.1:1234/v1", EndpointClass::Loopback),
            ("http://localhost:11434", EndpointClass::Loopback),
            ("http://[::1]:8000/v1", EndpointClass::Loopback),
            ("http://192.168.1.20:1234/v1", EndpointClass::Private),
            ("http://10.0.0.5/v1", EndpointClass::Private),
            ("http://172.20.0.5/v1", EndpointClass::Private),
            ("http://100.101.102.103:8000/v1", EndpointClass::Private),
            ("http://gpu-box:8000/v1", EndpointClass::Private),
            ("http://studio.local:1234/v1", EndpointClass::Private),
            ("http://rig.tail1234.ts.net:1234/v1", EndpointClass::Private),
            ("http://[fd00::5]:8000/v1", EndpointClass::Private),
            ("http://169.254.169.254/v1", EndpointClass::Special),
            ("http://metadata.google.internal/v1", EndpointClass::Special),
            ("http://[fe80::1]:8000/v1", EndpointClass::Special),
            ("https://api.anthropic.com", EndpointClass::Public),
            ("https://openrouter.ai/api/v1", EndpointClass::Public),
            ("http://8.8.8.8/v1", EndpointClass::Public),
        ];
        for (url, want) in cases {
            assert_eq!(classify(url), Some(want), "{url}");
        }
        assert_eq!(classify("not a url"), None);
    }
}
