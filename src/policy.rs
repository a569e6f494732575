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
//! listening on loopback, or when the operator fixed the targets). Name rules match names
//! only (an IP literal has none; `*` matches every host), case-insensitively, and a trailing
//! dot is the same name.
//!
//! ## What an address means to the rules
//!
//! Rules are about where a connection really goes, so each address is first put in the form
//! the kernel connects to ([`canonical`]), and that is also the address connected to:
//!
//! - **The unspecified addresses are this machine.** Linux connects `0.0.0.0` to `127.0.0.1`
//!   and `::` to `::1` (`ip_route_output_key_hash_rcu`, `tcp_v6_connect`), so every spelling
//!   of them (`0.0.0.0`, `[::]`, `[0:0::0]`, `[::ffff:0.0.0.0]`, a DNS or hosts record of
//!   `0.0.0.0` or `::`) is checked as, and connected to, `127.0.0.1` or `::1`. A rule naming
//!   exactly `0.0.0.0` or `::` would never match and is refused at start.
//! - **IPv4-mapped addresses are IPv4** (RFC 4291 §2.5.5.2): `::ffff:a.b.c.d` is `a.b.c.d`.
//!   A network written in that form, `[::ffff:127.0.0.0]/104`, is the IPv4 network
//!   `127.0.0.0/8` (the prefix less 96); a mapped-form network shorter than /96 is refused.
//! - **IPv6 forms that carry an IPv4 address** to a tunnel or a translator are checked as
//!   themselves *and* as that IPv4 address, so an IPv4 rule holds for each: IPv4-compatible
//!   `::a.b.c.d` (RFC 4291 §2.5.5.1), the NAT64 well-known prefix `64:ff9b::a.b.c.d`
//!   (RFC 6052 §2.1) and 6to4 `2002:AABB:CCDD::/48` (RFC 3056 §2). (Operator-chosen NAT64
//!   prefixes and Teredo are not recognised: deny them as IPv6 networks.)
//!
//! Networks are `ipnet` networks: a rule matches an address its network contains.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net};

use crate::target::{Host, Target};

/// Which hosts a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    /// An exact DNS name, lower-case, without a trailing dot.
    Name(String),
    /// `*.suffix`: names ending in `.suffix` (not `suffix` itself).
    Suffix(String),
    /// An address range (a single address is a /32 or /128); IPv4-mapped forms are IPv4.
    Network(IpNet),
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

    /// Whether the rule covers this host and (canonical) address.
    fn matches(&self, host: &Host, addr: SocketAddr) -> bool {
        if !self.covers_port(addr.port()) {
            return false;
        }
        match &self.host {
            HostPattern::Network(net) => forms(addr.ip()).any(|ip| net.contains(&ip)),
            _ => self.matches_host(host),
        }
    }

    /// Whether a host rule (`*`, a name, `*.suffix`) covers the host, before any lookup.
    fn matches_host(&self, host: &Host) -> bool {
        match (&self.host, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Name(exact), Host::Name(name)) => name == exact,
            (HostPattern::Suffix(suffix), Host::Name(name)) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
            _ => false,
        }
    }

    fn is_network(&self) -> bool {
        matches!(self.host, HostPattern::Network(_))
    }
}

fn parse_host(text: &str) -> Result<HostPattern, String> {
    if text == "*" {
        return Ok(HostPattern::Any);
    }
    if let Some(suffix) = text.strip_prefix("*.") {
        let suffix = suffix.strip_suffix('.').unwrap_or(suffix);
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
        return parse_network(ip, bits).map(HostPattern::Network);
    }
    if bits.is_some() {
        return Err(format!(
            "'{addr}' is not an IP address, so it cannot have a prefix"
        ));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty()
        || name.contains('*')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!("bad host '{text}'"));
    }
    Ok(HostPattern::Name(name.to_ascii_lowercase()))
}

/// `ip/bits` as a network, with IPv4-mapped forms turned into IPv4 networks.
fn parse_network(ip: IpAddr, bits: Option<u8>) -> Result<IpNet, String> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    let net =
        IpNet::new(ip, bits).map_err(|_| format!("prefix /{bits} is longer than {max} bits"))?;
    let net = match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if bits >= 96 => {
                IpNet::V4(Ipv4Net::new(v4, bits - 96).expect("a prefix of at most 32 bits"))
            }
            Some(_) => {
                return Err(format!(
                    "[{ip}]/{bits} is written in IPv4-mapped form but is wider than the \
                     mapped range (::ffff:0:0/96): write it as an IPv4 network, e.g. \
                     127.0.0.0/8, or use a prefix of at least /96"
                ));
            }
            None => net,
        },
        v4 => v4,
    };
    if net.prefix_len() == net.max_prefix_len() && net.addr().is_unspecified() {
        let (means, spelled) = match net {
            IpNet::V4(_) => ("127.0.0.1", "127.0.0.0/8"),
            IpNet::V6(_) => ("::1", "[::1]"),
        };
        return Err(format!(
            "{} is the unspecified address: as a target it means this machine, which wsproxy \
             checks as {means}; write {spelled} instead",
            net.addr()
        ));
    }
    Ok(net)
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

/// The address the kernel really connects to: IPv4-mapped addresses are IPv4, and the
/// unspecified addresses (`0.0.0.0`, `::`) are the loopback address of their family.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    }
}

/// The IPv4 address an IPv6 address carries to a tunnel or translator: IPv4-compatible
/// `::a.b.c.d` (not `::` or `::1`), NAT64 `64:ff9b::a.b.c.d`, 6to4 `2002:AABB:CCDD::/48`.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let segments = ip.segments();
    if bits >> 32 == 0 && bits > 1 {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if segments[0] == 0x2002 {
        return Some(Ipv4Addr::from(
            (u32::from(segments[1]) << 16) | u32::from(segments[2]),
        ));
    }
    None
}

/// The forms an address is matched in: its canonical form, and the IPv4 address it carries.
fn forms(ip: IpAddr) -> impl Iterator<Item = IpAddr> {
    let ip = canonical(ip);
    let carried = match ip {
        IpAddr::V6(v6) => embedded_ipv4(v6).map(|v4| canonical(IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    };
    std::iter::once(ip).chain(carried)
}

/// An address for a refusal reason, with what it stands for when that differs.
fn describe(addr: SocketAddr) -> String {
    let mut all = forms(addr.ip());
    let first = all.next().expect("every address has a canonical form");
    let carried = all.next();
    match carried {
        Some(v4) => format!("{addr} (carrying {v4})"),
        None if first != addr.ip() => format!("{addr} (= {})", SocketAddr::new(first, addr.port())),
        None => addr.to_string(),
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
    /// it, and so does having allow rules of which none could match (no host rule covers the
    /// host and no address rule covers the port). Nothing the rules forbid is ever looked up.
    pub fn check_name(&self, target: &Target) -> Result<(), String> {
        let port = target.port;
        if let Some(rule) = self
            .deny
            .iter()
            .find(|r| !r.is_network() && r.covers_port(port) && r.matches_host(&target.host))
        {
            return Err(format!(
                "target {target} not allowed: matches --deny {rule}"
            ));
        }
        let could_match = self.allow.is_empty()
            || self
                .allow
                .iter()
                .any(|r| r.covers_port(port) && (r.is_network() || r.matches_host(&target.host)));
        if !could_match {
            return Err(format!(
                "target {target} not allowed: matches no --allow rule"
            ));
        }
        Ok(())
    }

    /// After a failed (or unfinished) lookup: whether the client may learn of the failure.
    /// Only when the verdict cannot depend on addresses — a host rule allows the name (or
    /// there are no allow rules) and no address rule could deny this port. Otherwise a lookup
    /// failure must look exactly like a refused address, or clients could probe which
    /// internal names exist.
    pub fn may_report_lookup_failure(&self, target: &Target) -> bool {
        let allowed_by_name = self.allow.is_empty()
            || self.allow.iter().any(|r| {
                !r.is_network() && r.covers_port(target.port) && r.matches_host(&target.host)
            });
        let addresses_could_be_denied = self
            .deny
            .iter()
            .any(|r| r.is_network() && r.covers_port(target.port));
        allowed_by_name && !addresses_could_be_denied
    }

    /// The addresses of `target` that may be connected to, in canonical form (see
    /// [`canonical`]) and without repeats, or why none may.
    pub fn permitted(
        &self,
        target: &Target,
        addrs: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, String> {
        let mut refusals = Vec::new();
        let mut passed: Vec<SocketAddr> = Vec::new();
        for &addr in addrs {
            let connect_to = SocketAddr::new(canonical(addr.ip()), addr.port());
            match self.verdict(&target.host, connect_to) {
                Ok(()) if !passed.contains(&connect_to) => passed.push(connect_to),
                Ok(()) => {}
                Err(why) => refusals.push(format!("{} {why}", describe(addr))),
            }
        }
        if passed.is_empty() {
            refusals.dedup();
            return Err(format!(
                "target {target} not allowed: {}",
                refusals.join("; ")
            ));
        }
        Ok(passed)
    }

    fn verdict(&self, host: &Host, addr: SocketAddr) -> Result<(), String> {
        if let Some(rule) = self.deny.iter().find(|r| r.matches(host, addr)) {
            return Err(format!("matches --deny {rule}"));
        }
        if self.allow.is_empty() || self.allow.iter().any(|r| r.matches(host, addr)) {
            return Ok(());
        }
        Err("matches no --allow rule".into())
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

    fn target(host: &str, port: u16) -> Target {
        crate::target::target_from_parts(host, &port.to_string()).unwrap()
    }

    fn check(policy: &Policy, name: &str, addr: &str) -> bool {
        let addr: SocketAddr = addr.parse().unwrap();
        policy
            .permitted(&target(name, addr.port()), &[addr])
            .is_ok()
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
        let target = target("both.example", 80);
        let addrs = [
            "127.0.0.1:80".parse().unwrap(),
            "93.184.216.34:80".parse().unwrap(),
        ];
        assert_eq!(p.permitted(&target, &addrs), Ok(vec![addrs[1]]));
    }

    #[test]
    fn names_are_checked_before_any_lookup() {
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
        assert!(p.check_name(&target("internal.corp.", 22)).is_err());
        let trailing = policy(&["*:*"], &["internal.corp.:*"]);
        assert!(trailing.check_name(&target("internal.corp", 22)).is_err());
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
            "[::ffff:127.0.0.0]/95:*",
            "[::ffff:0:0]/64:*",
            "0.0.0.0:*",
            "0.0.0.0/32:*",
            "[::]:*",
            "[::]/128:*",
            "[::ffff:0.0.0.0]:*",
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

    #[test]
    fn unspecified_addresses_are_this_machine() {
        let p = policy(&["*:*"], &["127.0.0.0/8:*", "[::1]:*"]);
        for addr in [
            "0.0.0.0:80",
            "[::]:80",
            "[::ffff:0.0.0.0]:80",
            "[64:ff9b::]:80",
            "127.0.0.1:80",
            "[::1]:80",
        ] {
            assert!(!check(&p, "some.name", addr), "{addr}");
        }
        // An allow rule about this machine covers them too, and they are connected as such.
        let p = policy(&["127.0.0.1:80", "[::1]:80"], &[]);
        let t = target("0.0.0.0", 80);
        assert_eq!(
            p.permitted(&t, &["0.0.0.0:80".parse().unwrap()]),
            Ok(vec!["127.0.0.1:80".parse().unwrap()])
        );
        assert_eq!(
            p.permitted(&target("::", 80), &["[::]:80".parse().unwrap()]),
            Ok(vec!["[::1]:80".parse().unwrap()])
        );
        // The refusal says what the address stands for.
        let deny = policy(&[], &["127.0.0.0/8:*"]);
        let why = deny
            .permitted(&target("0.0.0.0", 80), &["0.0.0.0:80".parse().unwrap()])
            .unwrap_err();
        assert!(
            why.contains("0.0.0.0:80 (= 127.0.0.1:80) matches --deny"),
            "{why}"
        );
    }

    #[test]
    fn ipv4_rules_hold_for_every_ipv6_form_of_the_address() {
        let deny = policy(&["*:*"], &["10.0.0.0/8:*"]);
        let allow = policy(&["10.1.2.3:*"], &[]);
        for form in [
            "10.1.2.3",
            "::ffff:10.1.2.3",
            "::ffff:a01:203",
            "::10.1.2.3",
            "64:ff9b::10.1.2.3",
            "64:ff9b::a01:203",
            "2002:a01:203::1",
            "2002:a01:203:ffff::42",
        ] {
            let addr = SocketAddr::new(form.parse().unwrap(), 22);
            assert!(
                deny.permitted(&target(form, 22), &[addr]).is_err(),
                "deny {form}"
            );
            assert!(
                allow.permitted(&target(form, 22), &[addr]).is_ok(),
                "allow {form}"
            );
        }
        // Mapped addresses are connected as IPv4; the others as they are.
        assert_eq!(
            allow.permitted(
                &target("::ffff:10.1.2.3", 22),
                &["[::ffff:10.1.2.3]:22".parse().unwrap()]
            ),
            Ok(vec!["10.1.2.3:22".parse().unwrap()])
        );
        assert_eq!(
            allow.permitted(
                &target("64:ff9b::10.1.2.3", 22),
                &["[64:ff9b::a01:203]:22".parse().unwrap()]
            ),
            Ok(vec!["[64:ff9b::a01:203]:22".parse().unwrap()])
        );
        // Addresses that carry nothing are not mistaken for IPv4.
        for other in [
            "::1",
            "fd00::10.1.2.3",
            "2001:db8::a01:203",
            "64:ff9b:1::a01:203",
        ] {
            let addr = SocketAddr::new(other.parse().unwrap(), 22);
            assert!(
                deny.permitted(&target(other, 22), &[addr]).is_ok(),
                "{other}"
            );
        }
        // IPv6 rules still match the IPv6 forms themselves.
        let nat64 = policy(&["*:*"], &["[64:ff9b::]/96:*"]);
        assert!(!check(&nat64, "x", "[64:ff9b::a01:203]:22"));
        assert!(check(&nat64, "x", "10.1.2.3:22"));
    }

    #[test]
    fn mapped_form_networks_are_ipv4_networks() {
        let p = policy(&["*:*"], &["[::ffff:127.0.0.0]/104:*"]);
        for denied in ["127.0.0.1:1", "127.255.255.254:1", "[::ffff:127.9.9.9]:1"] {
            assert!(!check(&p, "x", denied), "{denied}");
        }
        assert!(check(&p, "x", "128.0.0.1:1"));
        let single = policy(&["[::ffff:10.0.0.1]:*"], &[]);
        assert!(check(&single, "x", "10.0.0.1:5"));
        assert!(!check(&single, "x", "10.0.0.2:5"));
    }

    #[test]
    fn name_rules_do_not_match_ip_literals() {
        let p = policy(&["*.1:*", "localhost:*"], &[]);
        assert!(p.check_name(&target("127.0.0.1", 80)).is_err());
        assert!(
            policy(&["*:80"], &[])
                .check_name(&target("127.0.0.1", 80))
                .is_ok()
        );
    }

    #[test]
    fn lookup_failures_are_reported_only_when_addresses_cannot_matter() {
        let t = target("db.example", 22);
        assert!(Policy::default().may_report_lookup_failure(&t));
        assert!(policy(&["*:*"], &[]).may_report_lookup_failure(&t));
        assert!(policy(&["db.example:22"], &["*.internal:*"]).may_report_lookup_failure(&t));
        // An address rule could refuse what the name resolves to: a failure must look the same.
        assert!(!policy(&["*:*"], &["10.0.0.0/8:*"]).may_report_lookup_failure(&t));
        assert!(!policy(&[], &["10.0.0.0/8:22"]).may_report_lookup_failure(&t));
        assert!(policy(&[], &["10.0.0.0/8:80"]).may_report_lookup_failure(&t));
        assert!(!policy(&["192.168.0.0/16:*"], &[]).may_report_lookup_failure(&t));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_rules_never_panic(text in ".{0,40}") {
            let _ = Rule::parse(&text);
        }
    }
}
