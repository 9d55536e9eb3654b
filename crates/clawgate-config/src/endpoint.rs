//! Where an endpoint lives: loopback, private network, or the public
//! internet. Decides whether local credential markers count (CFG-3) and
//! whether a `local-only` data policy admits a provider (SEC-6).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Network class of a base URL's host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointClass {
    /// 127.0.0.0/8, ::1, `localhost`.
    Loopback,
    /// RFC 1918, CGNAT/tailnet (100.64.0.0/10), IPv6 ULA, `.local`,
    /// `.ts.net`, or a bare host name without a dot.
    Private,
    /// Anything else.
    Public,
}

impl EndpointClass {
    /// True for loopback and private: the user's own machines.
    pub fn is_local(self) -> bool {
        !matches!(self, EndpointClass::Public)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Loopback => "loopback",
            EndpointClass::Private => "private",
            EndpointClass::Public => "public",
        }
    }
}

/// Classifies the host of `base_url`; `None` when it is not a URL with a host.
pub fn classify(base_url: &str) -> Option<EndpointClass> {
    let url = url::Url::parse(base_url).ok()?;
    Some(match url.host()? {
        url::Host::Ipv4(ip) => classify_ip(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => classify_ip(IpAddr::V6(ip)),
        url::Host::Domain(name) => classify_name(name),
    })
}

fn classify_name(name: &str) -> EndpointClass {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        EndpointClass::Loopback
    } else if !name.contains('.') || name.ends_with(".local") || name.ends_with(".ts.net") {
        EndpointClass::Private
    } else {
        EndpointClass::Public
    }
}

fn classify_ip(ip: IpAddr) -> EndpointClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return classify_v4(v4);
            }
            if v6 == Ipv6Addr::LOCALHOST {
                EndpointClass::Loopback
            } else if (v6.segments()[0] & 0xfe00) == 0xfc00 {
                EndpointClass::Private
            } else {
                EndpointClass::Public
            }
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> EndpointClass {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        EndpointClass::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        EndpointClass::Private
    } else {
        EndpointClass::Public
    }
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
