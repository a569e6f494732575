//! Target policy: which `host:port` targets clients may reach.
//!
//! A client that chooses its own target turns the proxy into a pivot into the network it runs
//! in (any web page can open `ws://localhost:8080/10.0.0.5:22`; WebSockets are not bound by
//! CORS). So targets pass through `--allow` and `--deny` rules before anything is connected:
//!
//! ```text
//! RULE  = HOST ":" PORTS
//! HOST  = name | "*." suffix | "*" | IPv4 | "[" IPv6 "]" | IPv4 "/" bits | "[" IPv6 "]/" bits
//! PORTS = "*" | port | port "-" port | PORTS "," PORTS
//! ```
//!
//! The name the client asked for **and** every address it resolves to are checked; only the
//! addresses that pass are connected to, with no second lookup, so DNS rebinding cannot slip
//! an internal address past a name rule. An address passes when some allow rule matches the
//! name or the address (and the port), and no deny rule does: deny wins over allow.
//! With no allow rules every target is allowed (what [`crate::cli`] permits only when
//! listening on loopback, or when the operator fixed the targets).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::target::Target;

/// Which hosts a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// An exact DNS name, lower-case.
    Name(String),
    /// `*.suffix`: names ending in `.suffix` (not `suffix` itself).
    Suffix(String),
    /// An address range (a single address is a /32 or /128).
    Network {
        base: IpAddr,
        bits: u8,
    },
}

/// One `HOST:PORTS` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    host: HostPattern,
    /// Inclusive port ranges; empty means every port.
    ports: Vec<(u16, u16)>,
    text: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Rule {
    /// Parses `HOST:PORTS`.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let text = text.trim();
        let (host, ports) = text.rsplit_once(':').ok_or_else(|| {
            format!("rule '{text}' needs HOST:PORTS (e.g. example.com:443 or *:*)")
        })?;
        Ok(Rule {
            host: parse_host(host).map_err(|e| format!("rule '{text}': {e}"))?,
            ports: parse_ports(ports).map_err(|e| format!("rule '{text}': {e}"))?,
            text: text.to_string(),
        })
    }

    fn covers_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&port))
    }

    /// Whether the rule covers this name/address pair.
    fn matches(&self, name: &str, addr: SocketAddr) -> bool {
        if !self.covers_port(addr.port()) {
            return false;
        }
        match &self.host {
            HostPattern::Network { base, bits } => in_network(addr.ip(), *base, *bits),
            _ => self.matches_name(name),
        }
    }

    /// Whether a name rule (`*`, a name, `*.suffix`) covers `name`, before any lookup.
    /// A trailing dot (`internal.corp.`, the fully qualified form) is the same name.
    fn matches_name(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        match &self.host {
            HostPattern::Any => true,
            HostPattern::Name(exact) => name == *exact,
            HostPattern::Suffix(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            HostPattern::Network { .. } => false,
        }
    }

    fn is_network(&self) -> bool {
        matches!(self.host, HostPattern::Network { .. })
    }
}

fn parse_host(text: &str) -> Result<HostPattern, String> {
    if text == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(suffix) = text.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') {
            return Err(format!("bad wildcard '{text}' (expected *.example.com)"));
        }
        return Ok(HostPattern::Suffix(suffix.to_ascii_lowercase()));
    }
    let (addr, bits) = match text.rsplit_once('/') {
        Some((addr, bits)) => {
            let bits: u8 = bits
                .parse()
                .map_err(|_| format!("bad prefix length '/{bits}'"))?;
            (addr, Some(bits))
        }
        None => (text, None),
    };
    let bare = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(format!("prefix /{bits} is longer than {max} bits"));
        }
        return Ok(HostPattern::Network { base: ip, bits });
    }
    if bits.is_some() {
        return Err(format!(
            "'{addr}' is not an IP address, so it cannot have a prefix"
        ));
    }
    if text.is_empty()
        || text.contains('*')
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!("bad host '{text}'"));
    }
    Ok(HostPattern::Name(text.to_ascii_lowercase()))
}

fn parse_ports(text: &str) -> Result<Vec<(u16, u16)>, String> {
    if text == "*" {
        return Ok(Vec::new());
    }
    let port = |p: &str| -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("bad port '{p}'"))
    };
    text.split(',')
        .map(|part| match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if lo > hi {
                    return Err(format!("empty port range '{part}'"));
                }
                Ok((lo, hi))
            }
            None => port(part).map(|p| (p, p)),
        })
        .collect()
}

/// Whether `ip` lies in `base/bits` (IPv4-mapped IPv6 addresses count as IPv4).
fn in_network(ip: IpAddr, base: IpAddr, bits: u8) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (canonical(ip), canonical(base)) {
        (IpAddr::V4(ip), IpAddr::V4(base)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(bits.min(32)))
                .unwrap_or(0);
            u32::from(ip) & mask == u32::from(base) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(base)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(base) & mask
        }
        _ => false,
    }
}

/// The allow and deny rules in force.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
}

impl Policy {
    /// Reads rules from a policy file: one rule per line, `allow RULE` or `deny RULE`
    /// (a bare `RULE` means allow), `#` starts a comment.
    pub fn add_file(&mut self, path: &std::path::Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read policy file {}: {e}", path.display()))?;
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (deny, rule) = match line.split_once(char::is_whitespace) {
                Some(("deny", rule)) => (true, rule),
                Some(("allow", rule)) => (false, rule),
                _ => (false, line),
            };
            let rule =
                Rule::parse(rule).map_err(|e| format!("{}:{}: {e}", path.display(), number + 1))?;
            if deny {
                &mut self.deny
            } else {
                &mut self.allow
            }
            .push(rule);
        }
        Ok(())
    }

    /// Checks what can be checked before any DNS lookup: a deny rule naming the host refuses
    /// it, and so does having allow rules of which none could match (no name rule covers the
    /// name and no address rule covers the port). Nothing the rules forbid is ever looked up.
    pub fn check_name(&self, target: &Target) -> Result<(), String> {
        let port = target.port;
        if let Some(rule) = self
            .deny
            .iter()
            .find(|r| !r.is_network() && r.covers_port(port) && r.matches_name(&target.host))
        {
            return Err(format!(
                "target {target} not allowed: matches --deny {rule}"
            ));
        }
        let could_match = self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|r| r.covers_port(port) && (r.is_network() || r.matches_name(&target.host)));
        if !could_match {
            return Err(format!(
                "target {target} not allowed: matches no --allow rule"
            ));
        }
        Ok(())
    }

    /// After a failed lookup: whether the failure may be reported to the client (after the
    /// handshake), which is only when the rules allow this name as such. Otherwise the
    /// answer is the same 403 as for a forbidden name, so clients cannot probe which
    /// internal names exist.
    pub fn may_report_lookup_failure(&self, target: &Target) -> bool {
        self.allow.is_empty()
            || self.allow.iter().any(|r| {
                !r.is_network() && r.covers_port(target.port) && r.matches_name(&target.host)
            })
    }

    /// The addresses of `target` that may be connected to, or why none may.
    pub fn permitted(
        &self,
        target: &Target,
        addrs: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, String> {
        let mut refusals = Vec::new();
        let passed: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|&addr| match self.verdict(&target.host, addr) {
                Ok(()) => true,
                Err(why) => {
                    refusals.push(why);
                    false
                }
            })
            .collect();
        if passed.is_empty() {
            refusals.dedup();
            return Err(format!(
                "target {target} not allowed: {}",
                refusals.join("; ")
            ));
        }
        Ok(passed)
    }

    fn verdict(&self, name: &str, addr: SocketAddr) -> Result<(), String> {
        if let Some(rule) = self.deny.iter().find(|r| r.matches(name, addr)) {
            return Err(format!("{addr} matches --deny {rule}"));
        }
        if self.allow.is_empty() || self.allow.iter().any(|r| r.matches(name, addr)) {
            return Ok(());
        }
        Err(format!("{addr} matches no --allow rule"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str]) -> Policy {
        Policy {
            allow: allow.iter().map(|r| Rule::parse(r).unwrap()).collect(),
            deny: deny.iter().map(|r| Rule::parse(r).unwrap()).collect(),
        }
    }

    fn check(policy: &Policy, name: &str, addr: &str) -> bool {
        let addr: SocketAddr = addr.parse().unwrap();
        let target = Target {
            host: name.into(),
            port: addr.port(),
        };
        policy.permitted(&target, &[addr]).is_ok()
    }

    #[test]
    fn names_wildcards_and_ports() {
        let p = policy(
            &[
                "example.com:443",
                "*.corp.test:8000-8100",
                "ssh.test:22,2222",
            ],
            &[],
        );
        assert!(check(&p, "example.com", "1.2.3.4:443"));
        assert!(check(&p, "EXAMPLE.com", "1.2.3.4:443"));
        assert!(!check(&p, "example.com", "1.2.3.4:80"));
        assert!(check(&p, "a.corp.test", "10.0.0.1:8050"));
        assert!(!check(&p, "corp.test", "10.0.0.1:8050"));
        assert!(!check(&p, "evilcorp.test", "10.0.0.1:8050"));
        assert!(!check(&p, "a.corp.test", "10.0.0.1:8101"));
        assert!(check(&p, "ssh.test", "10.0.0.2:2222"));
        assert!(!check(&p, "ssh.test", "10.0.0.2:23"));
    }

    #[test]
    fn cidr_v4_and_v6() {
        let p = policy(&["10.0.0.0/8:*", "[fd00::]/8:*", "192.168.1.5:80"], &[]);
        assert!(check(&p, "10.1.2.3", "10.1.2.3:22"));
        assert!(!check(&p, "11.1.2.3", "11.1.2.3:22"));
        assert!(check(&p, "fd12::1", "[fd12::1]:22"));
        assert!(!check(&p, "fe80::1", "[fe80::1]:22"));
        assert!(check(&p, "192.168.1.5", "192.168.1.5:80"));
        assert!(!check(&p, "192.168.1.6", "192.168.1.6:80"));
        assert!(check(&p, "mapped", "[::ffff:10.0.0.1]:80"));
    }

    #[test]
    fn deny_wins_over_allow_and_checks_resolved_addresses() {
        let p = policy(&["*:*"], &["127.0.0.0/8:*", "*.internal:*"]);
        assert!(check(&p, "example.com", "93.184.216.34:80"));
        // A public-looking name that resolves to a denied address is refused.
        assert!(!check(&p, "rebind.example", "127.0.0.1:80"));
        assert!(!check(&p, "db.internal", "10.0.0.1:5432"));
        let target = Target {
            host: "both.example".into(),
            port: 80,
        };
        let addrs = [
            "127.0.0.1:80".parse().unwrap(),
            "93.184.216.34:80".parse().unwrap(),
        ];
        assert_eq!(p.permitted(&target, &addrs), Ok(vec![addrs[1]]));
    }

    #[test]
    fn names_are_checked_before_any_lookup() {
        let target = |host: &str, port| Target {
            host: host.into(),
            port,
        };
        let p = policy(&["localhost:*", "10.0.0.0/8:22"], &["*.internal:*"]);
        assert!(p.check_name(&target("localhost", 80)).is_ok());
        // Only the address rule could match, and only on port 22.
        assert!(p.check_name(&target("unknown.example", 22)).is_ok());
        assert!(p.check_name(&target("unknown.example", 80)).is_err());
        assert!(
            p.check_name(&target("db.internal", 22))
                .unwrap_err()
                .contains("--deny")
        );
        // A lookup failure is reported only for names a name rule allows.
        assert!(p.may_report_lookup_failure(&target("localhost", 80)));
        assert!(!p.may_report_lookup_failure(&target("unknown.example", 22)));
    }

    #[test]
    fn a_trailing_dot_does_not_escape_name_rules() {
        let p = policy(&["*:*"], &["internal.corp:*", "*.corp.test:*"]);
        assert!(!check(&p, "internal.corp.", "10.0.0.1:22"));
        assert!(!check(&p, "a.corp.test.", "10.0.0.1:22"));
        let t = Target {
            host: "internal.corp.".into(),
            port: 22,
        };
        assert!(p.check_name(&t).is_err());
    }

    #[test]
    fn no_allow_rules_means_everything_not_denied() {
        let p = policy(&[], &["*:22"]);
        assert!(check(&p, "a", "1.1.1.1:80"));
        assert!(!check(&p, "a", "1.1.1.1:22"));
    }

    #[test]
    fn bad_rules_are_explained() {
        for bad in [
            "example.com",
            "*.:80",
            "a*b:80",
            "10.0.0.0/33:80",
            "host:0",
            "host:9-1",
            "host:x",
            "[::1]/129:1",
            "name/8:1",
        ] {
            assert!(Rule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn policy_files_have_comments_and_verbs() {
        let path = std::env::temp_dir().join(format!("wsproxy-policy-{}", std::process::id()));
        std::fs::write(
            &path,
            "# comment\nallow *.example.com:443\n\ndeny 10.0.0.0/8:*  # internal\nlocalhost:8000\n",
        )
        .unwrap();
        let mut p = Policy::default();
        p.add_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(p.allow.len(), 2);
        assert_eq!(p.deny.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_rules_never_panic(text in ".{0,40}") {
            let _ = Rule::parse(&text);
        }
    }
}
