//! The target policy against the real binary: every rule kind (exact name, `*.suffix`,
//! CIDR v4 and v6, port ranges and lists), deny over allow, names checked by the addresses
//! they resolve to, `--policy FILE`, and the refusal to start as an open proxy beyond loopback.
//!
//! Name resolution: `localhost` and every name under it are 127.0.0.1 and ::1 without a
//! lookup (RFC 6761), whatever this machine's resolver says. The unspecified addresses, the
//! IPv6 forms of IPv4 addresses, hosts-file and DNS records and search domains are attacked
//! in `tests/resolution.rs`, inside private network namespaces.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Sends one short message through a new RFC 6455 tunnel to `target` and checks the echo.
#[track_caller]
fn assert_tunnel_works(proxy: &Proxy, target: &str) {
    let mut client =
        RawHybiClient::handshake(proxy.addr, &HybiRequest::new(proxy.addr, target, 13))
            .unwrap_or_else(|e| panic!("tunnel to {target} should be allowed: {e}"));
    let payload = format!("hello {target}");
    client.send_binary(payload.as_bytes());
    let got = recv_exactly(&mut client, payload.len());
    assert_same_bytes(&got, payload.as_bytes(), "echo through an allowed tunnel");
    client.send_close(1000, "");
    assert_eq!(client.expect_close().0, 1000);
}

/// Asks for a tunnel to `target` and expects 403 with `why` in the one-line body.
#[track_caller]
fn assert_forbidden(proxy: &Proxy, target: &str, why: &str) {
    let request = upgrade_request(&proxy.addr.to_string(), target, &[]);
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    assert_refused(&reply, 403, why, &format!("target {target}"));
    assert!(
        reply.body_text().contains("not allowed"),
        "the reason says the target is not allowed: {:?}",
        reply.body_text()
    );
}

/// Whether this machine has IPv6 loopback (binding `[::1]` works).
fn have_ipv6_loopback() -> bool {
    match TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED the IPv6 part: no IPv6 loopback on this machine ({e})");
            false
        }
    }
}

/// The addresses `name` resolves to with the system resolver (empty if it does not resolve).
fn resolve(name: &str) -> Vec<SocketAddr> {
    (name, 1)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

/// A loopback echo target, and a promise that a refused tunnel never reached it.
#[track_caller]
fn assert_never_connected(target: &TcpTarget, what: &str) {
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        target.accepted(),
        0,
        "{what}: a refused target must never see a connection"
    );
}

// --- exact names and addresses -----------------------------------------------------------------

#[test]
fn exact_name_rule_allows_that_name_and_port_only() {
    let echo = EchoServer::start();
    let other = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&["-v", "--allow", &format!("localhost:{port}")]);
    if !resolve("localhost").contains(&SocketAddr::from(([127, 0, 0, 1], 1))) {
        eprintln!("SKIPPED: localhost does not resolve to 127.0.0.1 here");
        return;
    }
    assert_tunnel_works(&proxy, &format!("localhost:{port}"));
    // Names compare case-insensitively.
    assert_tunnel_works(&proxy, &format!("LocalHost:{port}"));
    // Another port of the same name is not covered.
    assert_forbidden(
        &proxy,
        &format!("localhost:{}", other.addr.port()),
        "matches no --allow rule",
    );
    assert_never_connected(&other, "localhost on another port");
    // The rule names a host, not its address: the IP literal is a different target.
    assert_forbidden(
        &proxy,
        &format!("127.0.0.1:{port}"),
        "matches no --allow rule",
    );
    let line = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("refused: 403") && l.contains(&format!("127.0.0.1:{port} not allowed"))
        })
        .unwrap_or_else(|| panic!("a refusal line in the log:\n{}", proxy.logs_text()));
    eprintln!("logged: {line}");
    assert_eq!(
        echo.accepted(),
        2,
        "only the two allowed tunnels reached the target"
    );
}

#[test]
fn a_resolving_name_not_in_the_rules_is_refused_with_403() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    // Names other than localhost that resolve to loopback differ per machine (/etc/hosts).
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let candidates = [hostname.trim(), "runsc", "vm", "ip6-localhost", "localhost"];
    let Some(name) = candidates
        .into_iter()
        .find(|n| !n.is_empty() && resolve(n).iter().any(|a| a.ip().is_loopback()))
    else {
        eprintln!("SKIPPED: no name resolves to loopback here");
        return;
    };
    eprintln!("using the name {name:?} ({:?})", resolve(name));
    let proxy = Proxy::start(&["--allow", &format!("allowed.example:{port}")]);
    assert_forbidden(&proxy, &format!("{name}:{port}"), "matches no --allow rule");
    assert_never_connected(&echo, "a name outside the rules");
}

#[test]
fn ip_rule_allows_that_address_and_names_resolving_to_it() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&["--allow", &format!("127.0.0.1:{port}")]);
    assert_tunnel_works(&proxy, &format!("127.0.0.1:{port}"));
    if resolve("localhost") == [SocketAddr::from(([127, 0, 0, 1], 1))] {
        // The rule matches the address localhost resolves to.
        assert_tunnel_works(&proxy, &format!("localhost:{port}"));
    }
    let closed = closed_port();
    assert_forbidden(
        &proxy,
        &format!("127.0.0.1:{}", closed.port()),
        "matches no --allow rule",
    );
}

// --- wildcards ---------------------------------------------------------------------------------

#[test]
fn wildcard_rule_covers_names_under_the_suffix_but_not_the_suffix_itself() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&["--allow", "*.localhost:*"]);
    // `*.localhost` is not `localhost`, and not the address it resolves to.
    assert_forbidden(
        &proxy,
        &format!("localhost:{port}"),
        "matches no --allow rule",
    );
    assert_forbidden(
        &proxy,
        &format!("127.0.0.1:{port}"),
        "matches no --allow rule",
    );
    assert_never_connected(&echo, "names outside the wildcard");

    // Names under `localhost` are loopback without any lookup (RFC 6761 §6.3).
    for name in [
        "wsproxy-test.localhost",
        "a.b.localhost",
        "UPPER.localhost.",
    ] {
        assert_tunnel_works(&proxy, &format!("{name}:{port}"));
    }
}

#[test]
fn wildcard_deny_does_not_cover_the_bare_suffix() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    // `*.localhost` must not swallow the bare `localhost`.
    let proxy = Proxy::start(&["--allow", "*:*", "--deny", "*.localhost:*"]);
    assert_tunnel_works(&proxy, &format!("localhost:{port}"));
    assert_tunnel_works(&proxy, &format!("127.0.0.1:{port}"));
}

/// PROXY BUG (reported): a name that does not resolve skips the policy entirely, so a name
/// that no allow rule covers (or that a deny rule names) is looked up in DNS and answered
/// with 101 + Close 1011 `resolve …` instead of 403. That makes the proxy a DNS-lookup relay
/// for any name and an oracle for which internal names exist (resolving ones get 403).
#[test]

fn unresolvable_name_outside_the_rules_is_refused_with_403() {
    let proxy = Proxy::start(&["--allow", "localhost:*"]);
    assert_forbidden(&proxy, "nothing.localhost:9", "not allowed");
    let proxy = Proxy::start(&["--allow", "*:*", "--deny", "*.localhost:*"]);
    assert_forbidden(&proxy, "denied.localhost:9", "--deny");
    let proxy = Proxy::start(&["--allow", "*:443"]);
    assert_forbidden(&proxy, "nothing.localhost:22", "not allowed");
}

// --- networks ----------------------------------------------------------------------------------

#[test]
fn cidr_v4_rule_allows_addresses_inside_the_network_only() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&["--allow", "127.0.0.0/8:*"]);
    assert_tunnel_works(&proxy, &format!("127.0.0.1:{port}"));
    let localhost = resolve("localhost");
    if !localhost.is_empty()
        && localhost
            .iter()
            .all(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST)
    {
        assert_tunnel_works(&proxy, &format!("localhost:{port}"));
    }
    if have_ipv6_loopback() {
        let echo6 = EchoServer::start_on("[::1]:0");
        assert_forbidden(&proxy, &echo6.target(), "matches no --allow rule");
        assert_never_connected(&echo6, "IPv6 target with an IPv4 rule");
    }
    // The prefix length counts: 127.0.0.2/31 is .2 and .3 only.
    let narrow = Proxy::start(&["--allow", "127.0.0.2/31:*"]);
    assert_forbidden(
        &narrow,
        &format!("127.0.0.1:{port}"),
        "matches no --allow rule",
    );
    let wide = Proxy::start(&["--allow", "127.0.0.0/31:*"]);
    assert_tunnel_works(&wide, &format!("127.0.0.1:{port}"));
}

#[test]
fn cidr_v6_rule_allows_ipv6_loopback_and_not_ipv4() {
    if !have_ipv6_loopback() {
        return;
    }
    let echo6 = EchoServer::start_on("[::1]:0");
    let echo4 = EchoServer::start();
    let proxy = Proxy::start(&["--allow", "[::1]/128:*"]);
    assert_tunnel_works(&proxy, &echo6.target());
    assert_forbidden(&proxy, &echo4.target(), "matches no --allow rule");
    assert_never_connected(&echo4, "IPv4 target with an IPv6 rule");
    let net = Proxy::start(&["--allow", "[::]/64:*"]);
    assert_tunnel_works(&net, &echo6.target());
    let other = Proxy::start(&["--allow", "[fd00::]/8:*"]);
    assert_forbidden(&other, &echo6.target(), "matches no --allow rule");
}

#[test]
fn deny_rule_also_covers_ipv4_mapped_ipv6_addresses() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&["--allow", "*:*", "--deny", "127.0.0.0/8:*"]);
    assert_forbidden(&proxy, &format!("[::ffff:127.0.0.1]:{port}"), "--deny");
    assert_forbidden(&proxy, &format!("[::ffff:7f00:1]:{port}"), "--deny");
    assert_never_connected(&echo, "IPv4-mapped form of a denied address");
}

// --- ports -------------------------------------------------------------------------------------

#[test]
fn port_range_rule_is_inclusive_at_both_ends() {
    let a = EchoServer::start();
    let b = EchoServer::start();
    let (lo, hi) = (
        a.addr.port().min(b.addr.port()),
        a.addr.port().max(b.addr.port()),
    );
    let proxy = Proxy::start(&["--allow", &format!("127.0.0.1:{lo}-{hi}")]);
    assert_tunnel_works(&proxy, &format!("127.0.0.1:{lo}"));
    assert_tunnel_works(&proxy, &format!("127.0.0.1:{hi}"));
    // Just outside: refused before any connect (so no other local service is touched).
    if hi < u16::MAX {
        assert_forbidden(
            &proxy,
            &format!("127.0.0.1:{}", hi + 1),
            "matches no --allow rule",
        );
    }
    assert_forbidden(
        &proxy,
        &format!("127.0.0.1:{}", lo - 1),
        "matches no --allow rule",
    );
}

#[test]
fn port_list_rule_allows_each_listed_port_only() {
    let a = EchoServer::start();
    let b = EchoServer::start();
    let c = EchoServer::start();
    let (pa, pb) = (a.addr.port(), b.addr.port());
    let proxy = Proxy::start(&["--allow", &format!("127.0.0.1:{pa},{pb}")]);
    assert_tunnel_works(&proxy, &a.target());
    assert_tunnel_works(&proxy, &b.target());
    assert_forbidden(&proxy, &c.target(), "matches no --allow rule");
    assert_never_connected(&c, "a port not in the list");
}

// --- deny --------------------------------------------------------------------------------------

#[test]
fn deny_wins_over_allow() {
    let allowed = EchoServer::start();
    let denied = EchoServer::start();
    let proxy = Proxy::start(&[
        "-v",
        "--allow",
        "127.0.0.0/8:*",
        "--deny",
        &format!("127.0.0.1:{}", denied.addr.port()),
    ]);
    assert_tunnel_works(&proxy, &allowed.target());
    assert_forbidden(
        &proxy,
        &denied.target(),
        &format!("matches --deny 127.0.0.1:{}", denied.addr.port()),
    );
    assert_never_connected(&denied, "a denied target");
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(5), |l| l.contains("refused: 403")
                && l.contains("--deny"))
            .is_some(),
        "the refusal is logged:\n{}",
        proxy.logs_text()
    );
}

#[test]
fn name_resolving_to_a_denied_address_is_refused_and_never_connected() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&[
        "--allow",
        "*:*",
        "--deny",
        "127.0.0.0/8:*",
        "--deny",
        "[::1]/128:*",
    ]);
    // `localhost` is allowed by `*:*` as a name, but every address it resolves to is denied.
    assert_forbidden(&proxy, &format!("localhost:{port}"), "--deny");
    assert_forbidden(&proxy, &format!("127.0.0.1:{port}"), "--deny");
    assert_forbidden(&proxy, &format!("[::1]:{port}"), "--deny");
    assert_never_connected(&echo, "a name resolving to denied addresses");
}

// --- policy files ------------------------------------------------------------------------------

/// A temporary file removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "wsproxy-test-{}-{name}-{}",
            std::process::id(),
            Rng::fresh().next_u64()
        ));
        std::fs::write(&path, text).expect("write temp file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn policy_file_rules_and_comments_apply() {
    let a = EchoServer::start();
    let b = EchoServer::start();
    let denied = EchoServer::start();
    let file = TempFile::new(
        "policy",
        &format!(
            "# wsproxy policy for the test\n\
             \n\
             allow 127.0.0.1:{}   # the first echo\n\
             127.0.0.1:{}\n\
             deny 127.0.0.1:{}\n\
             # allow *:*   (commented out: must not apply)\n\
             allow localhost:1\n",
            a.addr.port(),
            b.addr.port(),
            denied.addr.port()
        ),
    );
    let proxy = Proxy::start(&["--policy", file.path(), "--allow", "127.0.0.0/8:*"]);
    assert_tunnel_works(&proxy, &a.target());
    assert_tunnel_works(&proxy, &b.target());
    assert_forbidden(&proxy, &denied.target(), "--deny");
    assert_never_connected(&denied, "denied in the policy file");

    // Without the command-line /8 rule, only the file's allow rules apply.
    let other = EchoServer::start();
    let proxy = Proxy::start(&["--policy", file.path()]);
    assert_tunnel_works(&proxy, &a.target());
    assert_forbidden(&proxy, &other.target(), "matches no --allow rule");
    assert_never_connected(&other, "not in the policy file");
}

#[test]
fn bad_policy_file_line_stops_startup_with_the_file_and_line() {
    let file = TempFile::new("bad-policy", "# ok\nallow 127.0.0.1:80\ndeny not-a-rule\n");
    let (code, stderr) = run_to_exit(&["-p", "0", "--policy", file.path()]);
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("{}:3", file.path())) && stderr.contains("HOST:PORTS"),
        "the error names the file, the line and the expected form: {stderr}"
    );
}

// --- open proxy refusal ------------------------------------------------------------------------

/// Runs the binary with `args` (expected to exit by itself), killing it after 10 s.
/// Returns its exit code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsproxy"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsproxy");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsproxy {args:?} did not exit within 10 s (it should refuse to start)");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    (status.code(), stderr)
}

#[test]
fn refuses_to_start_on_a_non_loopback_address_without_allow_rules() {
    // The proxy refuses while parsing its arguments, before binding anything.
    for listen in ["0.0.0.0", "::"] {
        let (code, stderr) = run_to_exit(&["-p", "0", "-l", listen]);
        assert_eq!(code, Some(2), "-l {listen}: exit code; stderr: {stderr}");
        assert!(
            stderr.contains("--allow '*:*'"),
            "-l {listen}: the message shows the explicit opt-in: {stderr}"
        );
        assert!(
            stderr.contains("refusing to listen"),
            "-l {listen}: the message says why it refuses: {stderr}"
        );
        assert!(
            !stderr.contains("listening on"),
            "-l {listen}: it must not listen: {stderr}"
        );
    }
    // A deny rule alone does not make it safe: an allow rule is required.
    let (code, stderr) = run_to_exit(&["-p", "0", "-l", "0.0.0.0", "--deny", "10.0.0.0/8:*"]);
    assert_eq!(code, Some(2), "only --deny: stderr: {stderr}");
}

// --- this machine, in every spelling (issue 12, items 1 and 3) ---------------------------------

/// Every spelling of the unspecified address and of 127.0.0.1 that the target parser accepts,
/// percent-encoded or not: Linux connects `0.0.0.0` to 127.0.0.1 and `::` to ::1.
const THIS_MACHINE: [&str; 16] = [
    "0.0.0.0",
    "%30.0.0.0",
    "[::]",
    "[::0]",
    "[0:0::0]",
    "[0:0:0:0:0:0:0:0]",
    "%5B%3A%3A%5D",
    "[::ffff:0.0.0.0]",
    "[::ffff:0:0]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",
    "[64:ff9b::127.0.0.1]",
    "[64:ff9b::]",
    "[2002:7f00:1::1]",
    "[2002:7f00:1:ffff::42]",
];

/// Spellings that inet_aton (and so getaddrinfo) reads as 0.0.0.0 or 127.0.0.1.
const ODD_IPV4: [&str; 12] = [
    "0",
    "0x0",
    "0.0",
    "00.0.0.0",
    "0x7f.1",
    "127.1",
    "2130706433",
    "017700000001",
    "0x7f.0.0.1",
    "127.0.0.1.",
    "%30",
    "0%2E0",
];

#[test]
fn every_spelling_of_this_machine_is_denied_by_loopback_rules() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&[
        "-v",
        "--allow",
        "*:*",
        "--deny",
        "127.0.0.0/8:*",
        "--deny",
        "[::1]:*",
    ]);
    for host in THIS_MACHINE {
        assert_forbidden(&proxy, &format!("{host}:{port}"), "--deny");
    }
    for host in ODD_IPV4 {
        let target = format!("{host}:{port}");
        let request = upgrade_request(&proxy.addr.to_string(), &target, &[]);
        let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
        assert_refused(&reply, 400, "dotted-decimal", &target);
    }
    assert_never_connected(&echo, "this machine, spelled otherwise");
}

#[test]
fn rules_about_this_machine_also_allow_every_spelling_and_connect_it_honestly() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&["-v", "--allow", &format!("127.0.0.1:{port}")]);
    for host in [
        "0.0.0.0",
        "[::ffff:0.0.0.0]",
        "[::ffff:0:0]",
        "[::ffff:127.0.0.1]",
    ] {
        assert_tunnel_works(&proxy, &format!("{host}:{port}"));
    }
    // The log names what was really connected.
    let expected = format!("(127.0.0.1:{port})");
    let opened = proxy
        .logs()
        .iter()
        .filter(|l| l.contains(" open ") && l.contains(&expected))
        .count();
    assert_eq!(
        opened,
        4,
        "open lines name 127.0.0.1:\n{}",
        proxy.logs_text()
    );
    // Forms that carry 127.0.0.1 to a tunnel or a translator pass the rule too; they are
    // connected as written, which this machine has no route for.
    for host in ["[::127.0.0.1]", "[64:ff9b::127.0.0.1]", "[2002:7f00:1::1]"] {
        let target = format!("{host}:{port}");
        let mut client =
            RawHybiClient::handshake(proxy.addr, &HybiRequest::new(proxy.addr, &target, 13))
                .unwrap_or_else(|e| panic!("{target} passes the rule for 127.0.0.1: {e}"));
        let (code, reason) = client.expect_close();
        assert_eq!(code, 1011, "{target}: {reason}");
        assert!(reason.starts_with("connect "), "{target}: {reason}");
    }
    if have_ipv6_loopback() {
        let echo6 = EchoServer::start_on("[::1]:0");
        let port6 = echo6.addr.port();
        let proxy6 = Proxy::start(&["-v", "--allow", &format!("[::1]:{port6}")]);
        for host in ["[::]", "[0::0]", "%5B%3A%3A%5D"] {
            assert_tunnel_works(&proxy6, &format!("{host}:{port6}"));
        }
        assert!(
            proxy6
                .wait_for_log(Duration::from_secs(5), |l| l
                    .contains(&format!("([::1]:{port6})")))
                .is_some(),
            "{}",
            proxy6.logs_text()
        );
    }
}

#[test]
fn mapped_form_networks_are_ipv4_networks_or_refused_at_start() {
    let echo = EchoServer::start();
    let port = echo.addr.port();
    let proxy = Proxy::start(&["--allow", "*:*", "--deny", "[::ffff:127.0.0.0]/104:*"]);
    for target in [
        format!("127.0.0.1:{port}"),
        format!("127.0.0.2:{port}"),
        format!("[::ffff:127.255.0.1]:{port}"),
    ] {
        assert_forbidden(&proxy, &target, "--deny [::ffff:127.0.0.0]/104:*");
    }
    assert_never_connected(&echo, "127.0.0.0/8 in IPv4-mapped form");
    for (rule, why) in [
        ("[::ffff:127.0.0.0]/95:*", "IPv4-mapped"),
        ("[::ffff:0:0]/64:*", "IPv4-mapped"),
        ("0.0.0.0:*", "unspecified"),
        ("[::]:*", "unspecified"),
        ("[::ffff:0.0.0.0]/128:*", "unspecified"),
    ] {
        let (code, stderr) = run_to_exit(&["-p", "0", "--deny", rule]);
        assert_eq!(code, Some(2), "{rule}: {stderr}");
        assert!(
            stderr.contains(why) && stderr.contains(rule),
            "{rule}: {stderr}"
        );
    }
}
