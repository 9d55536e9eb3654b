//! Cheap reachability: does a model server's address accept a TCP
//! connection? Used before a local server's "unreachable" cooldown keeps
//! it out (it may have been started since), and by `/ready`. The outbound
//! guard's rules apply here too: only addresses the provider may reach are
//! dialled.

use std::time::Duration;

use clawgate_core::net::{classify_ip, Reach};

/// `host:port` of a base URL (`http://127.0.0.1:1234/v1` →
/// `127.0.0.1:1234`), read by the same URL parser the HTTP client uses:
/// a probe never dials another host than the requests would
/// (`http://127.0.0.1:1\\@10.1.2.3/` is 127.0.0.1 for both).
pub fn host_port(base: &str) -> Option<String> {
    let url = url::Url::parse(base).ok()?;
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_string(),
        url::Host::Ipv4(ip) => ip.to_string(),
        url::Host::Ipv6(ip) => format!("[{ip}]"),
    };
    let port = url.port_or_known_default()?;
    Some(format!("{host}:{port}"))
}

/// Whether `base`'s address accepts a TCP connection within `within`,
/// dialling only addresses `reach` admits.
pub async fn reachable(base: &str, within: Duration, reach: Reach) -> bool {
    let Some(addr) = host_port(base) else {
        return false;
    };
    let attempt = async {
        let Ok(addrs) = tokio::net::lookup_host(addr.as_str()).await else {
            return false;
        };
        for a in addrs.filter(|a| reach.admits(classify_ip(a.ip()))) {
            if tokio::net::TcpStream::connect(a).await.is_ok() {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(within, attempt).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::{host_port, reachable};
    use clawgate_core::net::Reach;

    #[tokio::test]
    async fn a_probe_dials_only_what_the_reach_admits() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", l.local_addr().unwrap());
        let within = std::time::Duration::from_secs(2);
        assert!(reachable(&base, within, Reach::CONFIGURED).await);
        let no_private = Reach {
            private: false,
            ..Reach::CONFIGURED
        };
        assert!(!reachable(&base, within, no_private).await);
    }

    #[test]
    fn host_and_port_of_base_urls() {
        assert_eq!(
            host_port("http://127.0.0.1:1234/v1").as_deref(),
            Some("127.0.0.1:1234")
        );
        assert_eq!(
            host_port("https://api.example.com/v1").as_deref(),
            Some("api.example.com:443")
        );
        assert_eq!(host_port("http://[::1]/v1").as_deref(), Some("[::1]:80"));
        assert_eq!(
            host_port("http://[::1]:8080").as_deref(),
            Some("[::1]:8080")
        );
        assert_eq!(host_port("no-scheme"), None);
        // The client's parser decides: a backslash ends the authority, so
        // the host is 127.0.0.1, never the part after the `@`.
        assert_eq!(
            host_port("http://127.0.0.1:19399\\@10.1.2.3/v1").as_deref(),
            Some("127.0.0.1:19399")
        );
        assert_eq!(
            host_port("http://user@127.0.0.1:8/v1").as_deref(),
            Some("127.0.0.1:8")
        );
    }
}
