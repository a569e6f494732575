//! Origin and Host checks: which web pages may use the proxy, and under which names.
//!
//! Browsers send the page's origin with every WebSocket handshake (RFC 6455 §4.1 item 8 and
//! §10.2; hybi-07/08 call the header `Sec-WebSocket-Origin`), and servers are expected to
//! refuse origins they do not trust: otherwise any page the user visits can drive the proxy.
//!
//! - `--origin PATTERN` (repeatable): `*`, or `scheme://host[:port]` where host may be
//!   `*.suffix` and port may be `*`. Without patterns, a request with no Origin passes (it is
//!   not a browser), and a browser origin passes when its host is a loopback name or address
//!   or equals the request's Host (same site).
//! - `--host NAME[:PORT]` (repeatable): accepted Host header values. Without it, a proxy
//!   listening on loopback accepts only loopback Host names, which defeats DNS rebinding (a
//!   hostile name re-pointed at 127.0.0.1 still arrives with the hostile Host header).

use crate::http::Refusal;

/// The Origin and Host rules in force.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    pub origins: Vec<String>,
    pub hosts: Vec<String>,
    /// Whether the proxy listens only on loopback (then Host must be a loopback name).
    pub loopback_only: bool,
}

impl OriginPolicy {
    /// Checks the Host header; a missing one is a 400 (RFC 9112 §3.2 requires it).
    pub fn check_host(&self, host: Option<&str>) -> Result<(), Refusal> {
        let host = host.ok_or_else(|| Refusal::bad_request("missing Host header"))?;
        let (name, port) = split_authority(host);
        let allowed = if self.hosts.is_empty() {
            !self.loopback_only || is_loopback_name(name)
        } else {
            self.hosts.iter().any(|pattern| {
                let (p_name, p_port) = split_authority(pattern);
                p_name.eq_ignore_ascii_case(name) && (p_port.is_none() || p_port == port)
            })
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::new(403, format!("host '{host}' not allowed")))
        }
    }

    /// Checks a browser's Origin against the patterns (or the default rule).
    pub fn check_origin(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), Refusal> {
        let allowed = match origin {
            None => true,
            Some(origin) if self.origins.is_empty() => {
                let origin_host = parse_origin(origin).map(|(_, host, _)| host);
                let request_host = host.map(|h| split_authority(h).0);
                origin_host.is_some_and(|oh| {
                    is_loopback_name(oh)
                        || request_host.is_some_and(|rh| rh.eq_ignore_ascii_case(oh))
                })
            }
            Some(origin) => self.origins.iter().any(|p| origin_matches(p, origin)),
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::new(
                403,
                format!("origin not allowed: {}", origin.unwrap_or_default()),
            ))
        }
    }
}

/// Splits `host[:port]` / `[v6][:port]` into the name (without brackets) and the port.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((name, after)) = rest.split_once(']')
    {
        return (name, after.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, Some(port)),
        _ => (authority, None),
    }
}

/// `scheme://host[:port]` → (scheme, host, port).
fn parse_origin(origin: &str) -> Option<(&str, &str, Option<&str>)> {
    let (scheme, authority) = origin.split_once("://")?;
    let authority = authority.trim_end_matches('/');
    let (host, port) = split_authority(authority);
    Some((scheme, host, port))
}

fn default_port(scheme: &str) -> Option<&'static str> {
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => Some("80"),
        "https" | "wss" => Some("443"),
        _ => None,
    }
}

/// Whether an origin matches `*` or `scheme://host[:port]` (host may be `*.suffix`, port `*`).
fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let (Some((p_scheme, p_host, p_port)), Some((scheme, host, port))) =
        (parse_origin(pattern), parse_origin(origin))
    else {
        return pattern.eq_ignore_ascii_case(origin);
    };
    let host_ok = match p_host.strip_prefix("*.") {
        Some(suffix) => {
            let host = host.to_ascii_lowercase();
            host.ends_with(&format!(".{}", suffix.to_ascii_lowercase()))
        }
        None => p_host.eq_ignore_ascii_case(host),
    };
    let port_ok = match p_port {
        Some("*") => true,
        _ => p_port.or(default_port(p_scheme)) == port.or(default_port(scheme)),
    };
    p_scheme.eq_ignore_ascii_case(scheme) && host_ok && port_ok
}

/// `localhost`, `*.localhost`, `127.x.x.x`, `::1` (RFC 6761 §6.3 reserves `.localhost`).
pub fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> OriginPolicy {
        OriginPolicy {
            loopback_only: true,
            ..OriginPolicy::default()
        }
    }

    #[test]
    fn default_origin_rule() {
        let p = loopback();
        assert!(p.check_origin(None, Some("127.0.0.1:8080")).is_ok());
        assert!(
            p.check_origin(Some("http://localhost:3000"), Some("127.0.0.1:8080"))
                .is_ok()
        );
        assert!(
            p.check_origin(Some("http://[::1]:3000"), Some("127.0.0.1:8080"))
                .is_ok()
        );
        assert!(
            p.check_origin(Some("https://proxy.example"), Some("proxy.example:8080"))
                .is_ok()
        );
        let refused = p
            .check_origin(Some("https://evil.example"), Some("127.0.0.1:8080"))
            .unwrap_err();
        assert_eq!(
            (refused.status, refused.reason.as_str()),
            (403, "origin not allowed: https://evil.example")
        );
        assert!(
            p.check_origin(Some("null"), Some("127.0.0.1:8080"))
                .is_err()
        );
    }

    #[test]
    fn origin_patterns() {
        let p = OriginPolicy {
            origins: vec![
                "https://app.example.com".into(),
                "http://localhost:*".into(),
                "https://*.corp.test".into(),
            ],
            ..OriginPolicy::default()
        };
        assert!(
            p.check_origin(Some("https://app.example.com"), None)
                .is_ok()
        );
        assert!(
            p.check_origin(Some("https://app.example.com:443"), None)
                .is_ok()
        );
        assert!(
            p.check_origin(Some("http://app.example.com"), None)
                .is_err()
        );
        assert!(p.check_origin(Some("http://localhost:5173"), None).is_ok());
        assert!(p.check_origin(Some("https://a.corp.test"), None).is_ok());
        assert!(p.check_origin(Some("https://corp.test"), None).is_err());
        assert!(p.check_origin(Some("http://127.0.0.1:1"), None).is_err());
        let any = OriginPolicy {
            origins: vec!["*".into()],
            ..OriginPolicy::default()
        };
        assert!(any.check_origin(Some("https://whatever"), None).is_ok());
    }

    #[test]
    fn host_checks() {
        let p = loopback();
        assert!(p.check_host(Some("127.0.0.1:8080")).is_ok());
        assert!(p.check_host(Some("localhost")).is_ok());
        assert!(p.check_host(Some("[::1]:8080")).is_ok());
        assert_eq!(
            p.check_host(Some("rebind.example:8080"))
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(p.check_host(None).unwrap_err().status, 400);
        let named = OriginPolicy {
            hosts: vec!["proxy.example".into(), "alt.example:9000".into()],
            ..loopback()
        };
        assert!(named.check_host(Some("proxy.example:8080")).is_ok());
        assert!(named.check_host(Some("alt.example:9000")).is_ok());
        assert!(named.check_host(Some("alt.example:9001")).is_err());
        assert!(named.check_host(Some("localhost")).is_err());
        let public = OriginPolicy::default();
        assert!(public.check_host(Some("anything.example")).is_ok());
    }
}
