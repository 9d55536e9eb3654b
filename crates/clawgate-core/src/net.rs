//! Where an address or a host name lives — loopback, the user's own
//! network, a special-use range (cloud metadata, link-local, local-use
//! NAT64) or the public internet — and the outbound guard's decision on it
//! (SEC-2, SEC-6). Pure: the wire client applies the decision to the
//! address it actually connects to, after DNS.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Ranges no model server should live in, blocked unless a provider says
/// `request.allowSpecialUseAddresses: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    /// Cloud instance metadata (169.254.169.254, fd00:ec2::254,
    /// metadata.google.internal, …): credentials live there.
    Metadata,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Local-use NAT64, 64:ff9b:1::/48.
    LocalNat64,
    /// 0.0.0.0/8, `::` (Linux connects these to the local machine).
    Unspecified,
    /// Multicast, broadcast, 240.0.0.0/4.
    Reserved,
}

impl Special {
    pub fn as_str(self) -> &'static str {
        match self {
            Special::Metadata => "a cloud metadata address",
            Special::LinkLocal => "a link-local address",
            Special::LocalNat64 => "a local-use NAT64 address (64:ff9b:1::/48)",
            Special::Unspecified => "an unspecified address",
            Special::Reserved => "a multicast or reserved address",
        }
    }
}

/// The class of one address (or host name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// 127.0.0.0/8, ::1, `localhost`.
    Loopback,
    /// RFC 1918, CGNAT/tailnet (100.64.0.0/10), IPv6 ULA; names ending in
    /// `.local`, `.ts.net`, `.internal`, `.lan`, `.home.arpa`, or bare.
    Private,
    Special(Special),
    Public,
}

impl AddrClass {
    pub fn describe(self) -> &'static str {
        match self {
            AddrClass::Loopback => "a loopback address",
            AddrClass::Private => "a private-network address",
            AddrClass::Special(s) => s.as_str(),
            AddrClass::Public => "a public address",
        }
    }
}

/// Cloud metadata services by address (AWS/GCP/Azure/OCI, AWS ECS task
/// metadata, Alibaba).
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
/// AWS's IPv6 metadata endpoint.
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// Cloud metadata services by name.
const METADATA_NAMES: [&str; 6] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
];

pub fn classify_ip(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let [a, b, ..] = ip.octets();
    if METADATA_V4.contains(&ip) {
        AddrClass::Special(Special::Metadata)
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if a == 0 {
        AddrClass::Special(Special::Unspecified)
    } else if ip.is_link_local() {
        AddrClass::Special(Special::LinkLocal)
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        AddrClass::Private
    } else if ip.is_multicast() || a >= 240 {
        AddrClass::Special(Special::Reserved)
    } else {
        AddrClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let s = ip.segments();
    if ip == Ipv6Addr::LOCALHOST {
        return AddrClass::Loopback;
    }
    if ip.is_unspecified() {
        return AddrClass::Special(Special::Unspecified);
    }
    if ip == METADATA_V6 {
        return AddrClass::Special(Special::Metadata);
    }
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) forms
    // reach the embedded IPv4 address.
    if s[..5] == [0, 0, 0, 0, 0] && (s[5] == 0xffff || s[5] == 0) {
        return classify_v4(embedded_v4(s));
    }
    // Well-known NAT64 (64:ff9b::/96) reaches the embedded address: judge
    // that one, so 64:ff9b::a9fe:a9fe is the metadata service.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return classify_v4(embedded_v4(s));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return AddrClass::Special(Special::LocalNat64);
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return AddrClass::Special(Special::LinkLocal);
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return AddrClass::Private;
    }
    if (s[0] & 0xff00) == 0xff00 {
        return AddrClass::Special(Special::Reserved);
    }
    AddrClass::Public
}

fn embedded_v4(s: [u16; 8]) -> Ipv4Addr {
    let [a, b] = s[6].to_be_bytes();
    let [c, d] = s[7].to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// The class a host name claims before it is resolved: what the data
/// policy and local-credential rules go by, and what the guard refuses
/// without asking DNS (metadata names).
pub fn classify_name(name: &str) -> AddrClass {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = name.trim_matches(['[', ']']).parse::<IpAddr>() {
        return classify_ip(ip);
    }
    if METADATA_NAMES.contains(&name.as_str()) {
        AddrClass::Special(Special::Metadata)
    } else if name == "localhost" || name.ends_with(".localhost") {
        AddrClass::Loopback
    } else if !name.contains('.')
        || [".local", ".ts.net", ".internal", ".lan", ".home.arpa"]
            .iter()
            .any(|s| name.ends_with(s))
    {
        AddrClass::Private
    } else {
        AddrClass::Public
    }
}

/// Network class of a base URL's host, as the data policy and the local
/// credential markers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointClass {
    Loopback,
    Private,
    /// Metadata, link-local and other special-use hosts.
    Special,
    Public,
}

impl EndpointClass {
    /// True for loopback and private: the user's own machines.
    pub fn is_local(self) -> bool {
        matches!(self, EndpointClass::Loopback | EndpointClass::Private)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Loopback => "loopback",
            EndpointClass::Private => "private",
            EndpointClass::Special => "special-use",
            EndpointClass::Public => "public",
        }
    }

    pub fn of(class: AddrClass) -> Self {
        match class {
            AddrClass::Loopback => EndpointClass::Loopback,
            AddrClass::Private => EndpointClass::Private,
            AddrClass::Special(_) => EndpointClass::Special,
            AddrClass::Public => EndpointClass::Public,
        }
    }
}

/// Which address classes one connection may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// Loopback and private networks.
    pub private: bool,
    /// Metadata, link-local, local-use NAT64, reserved.
    pub special: bool,
    /// The public internet (off under `dataPolicy: "local-only"`).
    pub public: bool,
}

impl Reach {
    /// What an endpoint without a provider policy may reach: its own
    /// origin is the configured one, so private addresses are trusted.
    pub const CONFIGURED: Reach = Reach {
        private: true,
        special: false,
        public: true,
    };

    pub fn admits(self, class: AddrClass) -> bool {
        match class {
            AddrClass::Loopback | AddrClass::Private => self.private,
            AddrClass::Special(_) => self.special,
            AddrClass::Public => self.public,
        }
    }

    /// A small index (0..8) for one client per reach.
    pub fn index(self) -> usize {
        usize::from(self.private) | usize::from(self.special) << 1 | usize::from(self.public) << 2
    }
}

/// One provider's outbound rules, built once with the registry (SEC-2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    pub provider: String,
    /// Exact origins the user configured for this provider (`baseUrl`,
    /// per-model `baseUrl`, `localService.healthUrl`), as
    /// `scheme://host[:port]`.
    pub trusted: Vec<String>,
    /// `request.allowPrivateNetwork` as written: `true` opens every
    /// private range, `false` opts out of trusting the configured origin.
    pub allow_private: Option<bool>,
    /// `request.allowSpecialUseAddresses`.
    pub allow_special: bool,
}

impl OutboundPolicy {
    /// What a request to `origin` may reach.
    pub fn reach(&self, origin: &str, local_only: bool) -> Reach {
        let trusted = self.allow_private != Some(false)
            && self.trusted.iter().any(|t| t.eq_ignore_ascii_case(origin));
        Reach {
            private: trusted || self.allow_private == Some(true),
            special: self.allow_special,
            public: !local_only,
        }
    }

    /// Why an address of this class was refused, with the key that would
    /// allow it.
    pub fn refusal(&self, class: AddrClass, agent_policy_key: &str) -> Refusal {
        let fix = match class {
            AddrClass::Special(_) => format!(
                "set models.providers.{}.request.allowSpecialUseAddresses: true to allow it",
                self.provider
            ),
            AddrClass::Loopback | AddrClass::Private if self.allow_private == Some(false) => {
                format!(
                    "models.providers.{}.request.allowPrivateNetwork is false; set it to true to allow it",
                    self.provider
                )
            }
            AddrClass::Loopback | AddrClass::Private => format!(
                "set models.providers.{}.request.allowPrivateNetwork: true to allow it",
                self.provider
            ),
            AddrClass::Public => format!(
                "dataPolicy is \"local-only\"; set {agent_policy_key}: \"allow-hosted\" to allow it"
            ),
        };
        Refusal { class, fix }
    }
}

/// A connection the guard refused: what the address was and how to allow
/// it. Never names the address itself (clients see this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub class: AddrClass,
    pub fix: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "outbound guard: refused to connect to {}; {}",
            self.class.describe(),
            self.fix
        )
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> AddrClass {
        classify_ip(s.parse().unwrap())
    }

    #[test]
    fn every_blocked_form() {
        use Special::*;
        let cases = [
            ("169.254.169.254", AddrClass::Special(Metadata)),
            ("169.254.170.2", AddrClass::Special(Metadata)),
            ("100.100.100.200", AddrClass::Special(Metadata)),
            ("fd00:ec2::254", AddrClass::Special(Metadata)),
            ("::ffff:169.254.169.254", AddrClass::Special(Metadata)),
            ("::169.254.169.254", AddrClass::Special(Metadata)),
            ("64:ff9b::169.254.169.254", AddrClass::Special(Metadata)),
            ("169.254.1.1", AddrClass::Special(LinkLocal)),
            ("fe80::1", AddrClass::Special(LinkLocal)),
            ("febf::1", AddrClass::Special(LinkLocal)),
            ("::ffff:169.254.3.4", AddrClass::Special(LinkLocal)),
            ("64:ff9b:1::a00:1", AddrClass::Special(LocalNat64)),
            ("64:ff9b:1:ffff::1", AddrClass::Special(LocalNat64)),
            ("0.0.0.0", AddrClass::Special(Unspecified)),
            ("::", AddrClass::Special(Unspecified)),
            ("224.0.0.1", AddrClass::Special(Reserved)),
            ("255.255.255.255", AddrClass::Special(Reserved)),
            ("ff02::1", AddrClass::Special(Reserved)),
            ("127.0.0.1", AddrClass::Loopback),
            ("127.9.9.9", AddrClass::Loopback),
            ("::1", AddrClass::Loopback),
            ("::ffff:127.0.0.1", AddrClass::Loopback),
            ("64:ff9b::7f00:1", AddrClass::Loopback),
            ("10.1.2.3", AddrClass::Private),
            ("172.16.0.1", AddrClass::Private),
            ("192.168.1.20", AddrClass::Private),
            ("100.101.102.103", AddrClass::Private),
            ("fd12::5", AddrClass::Private),
            ("::ffff:10.0.0.1", AddrClass::Private),
            ("8.8.8.8", AddrClass::Public),
            ("198.18.0.5", AddrClass::Public),
            ("2606:4700::1111", AddrClass::Public),
            ("64:ff9b::808:808", AddrClass::Public),
        ];
        for (addr, want) in cases {
            assert_eq!(ip(addr), want, "{addr}");
        }
    }

    #[test]
    fn names() {
        use AddrClass::{Loopback, Private, Public};
        const META: AddrClass = AddrClass::Special(Special::Metadata);
        let cases = [
            ("metadata.google.internal", META),
            ("METADATA.GOOGLE.INTERNAL.", META),
            ("metadata", META),
            ("localhost", Loopback),
            ("api.localhost", Loopback),
            ("gpu-box", Private),
            ("studio.local", Private),
            ("rig.tail1234.ts.net", Private),
            ("host.docker.internal", Private),
            ("nas.home.arpa", Private),
            ("api.openai.com", Public),
            ("[::1]", Loopback),
            ("169.254.169.254", META),
        ];
        for (name, want) in cases {
            assert_eq!(classify_name(name), want, "{name}");
        }
    }

    #[test]
    fn reach_follows_the_configured_origin() {
        let mut p = OutboundPolicy {
            provider: "lm".into(),
            trusted: vec!["http://127.0.0.1:1234".into()],
            allow_private: None,
            allow_special: false,
        };
        let r = p.reach("http://127.0.0.1:1234", false);
        assert!(r.admits(AddrClass::Loopback) && r.admits(AddrClass::Public));
        assert!(!r.admits(AddrClass::Special(Special::Metadata)));
        // Another port of the same host is not the configured origin.
        assert!(!p.reach("http://127.0.0.1:9999", false).private);
        // Local-only closes the public internet.
        assert!(!p.reach("http://127.0.0.1:1234", true).public);
        // `false` written out opts out of the implicit trust.
        p.allow_private = Some(false);
        assert!(!p.reach("http://127.0.0.1:1234", false).private);
        let msg = p.refusal(AddrClass::Loopback, "").to_string();
        assert!(msg.contains("models.providers.lm.request.allowPrivateNetwork is false"));
        p.allow_private = Some(true);
        assert!(p.reach("http://10.0.0.1:80", false).private);
        let msg = p
            .refusal(AddrClass::Special(Special::Metadata), "")
            .to_string();
        assert_eq!(
            msg,
            "outbound guard: refused to connect to a cloud metadata address; set models.providers.lm.request.allowSpecialUseAddresses: true to allow it"
        );
        let idx: std::collections::HashSet<usize> = [false, true]
            .iter()
            .flat_map(|&a| [false, true].map(move |b| (a, b)))
            .flat_map(|(a, b)| {
                [false, true].map(move |c| {
                    Reach {
                        private: a,
                        special: b,
                        public: c,
                    }
                    .index()
                })
            })
            .collect();
        assert_eq!(idx.len(), 8);
    }
}
