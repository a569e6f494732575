//! Name resolution against the real binary, each test in its own network and mount namespace
//! (see `common::namespace`) with its own `/etc/hosts`, `/etc/resolv.conf` and a tiny DNS
//! server on `127.0.0.1:53` (`common::dns`):
//!
//! - resolv.conf's search domains are never applied: `db` is looked up as `db.` and nothing
//!   else, so `--deny '*.corp.internal:*'` holds although the system resolver would find
//!   `db.corp.internal` (issue 12, item 2);
//! - hosts-file and DNS records of `0.0.0.0`, `::` and the IPv6 forms of `127.0.0.1` are
//!   checked as this machine (item 1), and a refused looked-up name gets the same answer
//!   whether it exists or not (item 4);
//! - a DNS server that never answers holds no client past the handshake deadline, and no
//!   other client at all (item 10).

mod common;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::dns::{DnsServer, Mode};
use common::namespace::{Files, isolated};
use common::*;

/// Generous slack for "promptly" on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(4);

const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n";

/// Sends one message through a new tunnel to `target` and checks the echo.
#[track_caller]
fn assert_tunnel_works(proxy: &Proxy, target: &str) {
    let mut client =
        RawHybiClient::handshake(proxy.addr, &HybiRequest::new(proxy.addr, target, 13))
            .unwrap_or_else(|e| panic!("tunnel to {target} should open: {e}"));
    let payload = format!("hello {target}");
    client.send_binary(payload.as_bytes());
    assert_same_bytes(
        &recv_exactly(&mut client, payload.len()),
        payload.as_bytes(),
        target,
    );
    client.send_close(1000, "");
    assert_eq!(client.expect_close().0, 1000);
}

/// Asks for a tunnel to `target`, expects an HTTP refusal and returns its status and body.
#[track_caller]
fn refusal(proxy: &Proxy, target: &str) -> (u16, String) {
    let request = upgrade_request(&proxy.addr.to_string(), target, &[]);
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    assert_ne!(reply.head.status, 101, "{target} must be refused");
    (reply.head.status, reply.body_text().trim_end().to_string())
}

/// Expects the handshake to succeed and the proxy to close at once; returns the Close.
#[track_caller]
fn closed_after_handshake(proxy: &Proxy, target: &str) -> (u16, String) {
    let mut client =
        RawHybiClient::handshake(proxy.addr, &HybiRequest::new(proxy.addr, target, 13))
            .unwrap_or_else(|e| panic!("{target}: expected 101 then a Close: {e}"));
    client.expect_close()
}

/// The system resolver's answer for `name` in this namespace (what a naive proxy would use).
fn system_lookup(name: &str) -> Vec<SocketAddr> {
    (name, 1)
        .to_socket_addrs()
        .map(|a| a.collect())
        .unwrap_or_default()
}

#[test]
fn search_domains_are_never_applied() {
    let files = Files {
        hosts: HOSTS,
        // ndots:3 makes glibc try the search list first even for names with two dots.
        resolv_conf: "nameserver 127.0.0.1\nsearch corp.internal\noptions ndots:3 timeout:1\n",
    };
    isolated("search_domains_are_never_applied", &files, || {
        let dns = DnsServer::start(
            "127.0.0.1:53",
            &[
                ("db.corp.internal", "127.0.0.1"),
                ("svc.prod.corp.internal", "127.0.0.1"),
                ("open.example", "127.0.0.1"),
            ],
            Mode::Answer,
        )
        .expect("bind 127.0.0.1:53 in the namespace");
        let echo = EchoServer::start();
        let port = echo.addr.port();
        let short = ["db", "DB", "db.", "svc.prod", "svc.prod."];
        let full = [
            "db.corp.internal",
            "DB.Corp.Internal.",
            "svc.prod.corp.internal",
        ];

        // Name rules only: a failed lookup is reported after the handshake.
        let proxy = Proxy::start(&["-v", "--allow", "*:*", "--deny", "*.corp.internal:*"]);
        for name in short {
            let (code, reason) = closed_after_handshake(&proxy, &format!("{name}:{port}"));
            assert_eq!(code, 1011, "{name}: {reason}");
            assert!(reason.starts_with("resolve "), "{name}: {reason}");
        }
        for name in full {
            let (status, body) = refusal(&proxy, &format!("{name}:{port}"));
            assert_eq!(status, 403, "{name}: {body}");
            assert!(body.contains("--deny *.corp.internal:*"), "{name}: {body}");
        }
        // With an address rule too, the failure looks like any refusal (no DNS oracle).
        let strict = Proxy::start(&[
            "--allow",
            "*:*",
            "--deny",
            "*.corp.internal:*",
            "--deny",
            "10.0.0.0/8:*",
        ]);
        for name in short {
            let target = format!("{name}:{port}");
            let (status, body) = refusal(&strict, &target);
            let shown = name.trim_end_matches('.').to_ascii_lowercase();
            assert_eq!(
                (status, body.as_str()),
                (403, format!("target {shown}:{port} not allowed").as_str())
            );
        }
        assert_eq!(echo.accepted(), 0, "no short name reached the target");
        let asked = dns.asked();
        for expanded in [
            "db.corp.internal",
            "svc.prod.corp.internal",
            "db.corp.internal.corp.internal",
        ] {
            assert!(!dns.was_asked(expanded), "{expanded} was asked: {asked:?}");
        }
        assert!(
            dns.was_asked("db") && dns.was_asked("svc.prod"),
            "{asked:?}"
        );

        // Absolute lookups do work, and the search list really is in force here: the system
        // resolver finds `db` as db.corp.internal, which is what the proxy must not do.
        assert_tunnel_works(&proxy, &format!("open.example:{port}"));
        assert_eq!(echo.accepted(), 1);
        assert!(
            system_lookup("db").iter().any(|a| a.ip().is_loopback()),
            "the namespace's resolver should expand db (asked: {:?})",
            dns.asked()
        );
        eprintln!("DNS questions: {:?}", dns.asked());
    });
}

#[test]
fn records_of_this_machine_are_checked_as_this_machine() {
    let hosts = format!(
        "{HOSTS}127.0.0.1 app.test app\n0.0.0.0 zero.test\n:: zero6.test\n\
         ::ffff:0.0.0.0 zeromapped.test\n10.9.9.9 internal.hosts.test\n"
    );
    let files = Files {
        hosts: &hosts,
        resolv_conf: "nameserver 127.0.0.1\noptions timeout:1\n",
    };
    isolated(
        "records_of_this_machine_are_checked_as_this_machine",
        &files,
        || {
            let _dns = DnsServer::start(
                "127.0.0.1:53",
                &[
                    ("zero.dns.test", "0.0.0.0"),
                    ("zero6.dns.test", "::"),
                    ("mapped.dns.test", "::ffff:127.0.0.1"),
                    ("compat.dns.test", "::127.0.0.1"),
                    ("nat64.dns.test", "64:ff9b::7f00:1"),
                    ("both.dns.test", "0.0.0.0"),
                    ("both.dns.test", "::"),
                    ("internal.dns.test", "10.9.9.9"),
                ],
                Mode::Answer,
            )
            .expect("bind 127.0.0.1:53 in the namespace");
            let echo = EchoServer::start();
            let port = echo.addr.port();
            let this_machine = [
                "app.test",
                "app",
                "zero.test",
                "zero6.test",
                "zeromapped.test",
                "zero.dns.test",
                "zero6.dns.test",
                "mapped.dns.test",
                "compat.dns.test",
                "nat64.dns.test",
                "both.dns.test",
            ];
            let proxy = Proxy::start(&[
                "-v",
                "--allow",
                "*:*",
                "--deny",
                "127.0.0.0/8:*",
                "--deny",
                "[::1]:*",
            ]);
            for name in this_machine {
                let (status, body) = refusal(&proxy, &format!("{name}:{port}"));
                assert_eq!(
                    (status, body),
                    (403, format!("target {name}:{port} not allowed")),
                    "{name}"
                );
                // The details are in the log only.
                proxy
                    .wait_for_log(SLACK, |l| {
                        l.contains(&format!("target {name}:{port} not allowed: "))
                            && l.contains("--deny")
                    })
                    .unwrap_or_else(|| panic!("{name}: no detail line:\n{}", proxy.logs_text()));
            }
            // The case: an allow rule for the name itself does not open this machine.
            let named = Proxy::start(&[
                "--allow",
                "zero.test:*",
                "--allow",
                "zero.dns.test:*",
                "--deny",
                "127.0.0.0/8:*",
            ]);
            for name in ["zero.test", "zero.dns.test"] {
                assert_eq!(refusal(&named, &format!("{name}:{port}")).0, 403, "{name}");
            }
            assert_eq!(echo.accepted(), 0, "this machine was never reached");

            // No DNS oracle: an internal name that exists and one that does not get one answer.
            let oracle = Proxy::start(&["--allow", "*:*", "--deny", "10.0.0.0/8:*"]);
            for name in [
                "internal.dns.test",
                "missing.dns.test",
                "internal.hosts.test",
            ] {
                assert_eq!(
                    refusal(&oracle, &format!("{name}:22")),
                    (403, format!("target {name}:22 not allowed")),
                    "{name}"
                );
            }

            // Allowed, such names are connected as what they mean, and the log says so.
            let echo6 = EchoServer::start_on("[::1]:0");
            let port6 = echo6.addr.port();
            let open = Proxy::start(&[
                "-v",
                "--allow",
                &format!("zero.test:{port}"),
                "--allow",
                &format!("zero6.dns.test:{port6}"),
            ]);
            assert_tunnel_works(&open, &format!("zero.test:{port}"));
            assert_tunnel_works(&open, &format!("zero6.dns.test:{port6}"));
            for (name, addr) in [
                ("zero.test", format!("127.0.0.1:{port}")),
                ("zero6.dns.test", format!("[::1]:{port6}")),
            ] {
                open.wait_for_log(SLACK, |l| {
                    l.contains(&format!("→ {name}:")) && l.contains(&format!("({addr})"))
                })
                .unwrap_or_else(|| {
                    panic!("{name}: open line with ({addr}):\n{}", open.logs_text())
                });
            }
        },
    );
}

#[test]
fn a_resolver_that_never_answers_holds_no_client_past_the_deadline() {
    let files = Files {
        hosts: &format!("{HOSTS}127.0.0.1 app.test\n"),
        // glibc's defaults: 5 s per try, 2 tries; our deadline is much shorter.
        resolv_conf: "nameserver 127.0.0.1\n",
    };
    let test = "a_resolver_that_never_answers_holds_no_client_past_the_deadline";
    isolated(test, &files, || {
        let dns = DnsServer::start("127.0.0.1:53", &[], Mode::Silent)
            .expect("bind 127.0.0.1:53 in the namespace");
        let echo = EchoServer::start();
        let port = echo.addr.port();
        let deadline = Duration::from_secs(2);
        let proxy = Proxy::start(&[
            "-v",
            "--handshake-timeout",
            "2",
            "--allow",
            "*:*",
            "--deny",
            "10.0.0.0/8:*",
        ]);
        // More stuck lookups at once than there are resolver threads.
        let clients: Vec<_> = (0..12)
            .map(|n| {
                let addr = proxy.addr;
                thread::spawn(move || {
                    let target = format!("slow{n}.example:{port}");
                    let started = Instant::now();
                    let request = upgrade_request(&addr.to_string(), &target, &[]);
                    let reply = http_request(addr, &request).expect("an HTTP answer");
                    (
                        target,
                        reply.head.status,
                        reply.body_text(),
                        started.elapsed(),
                    )
                })
            })
            .collect();
        // Meanwhile, clients that need no DNS are served at once.
        thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        assert_tunnel_works(&proxy, &format!("127.0.0.1:{port}"));
        assert_tunnel_works(&proxy, &format!("localhost:{port}"));
        assert_tunnel_works(&proxy, &format!("app.test:{port}"));
        assert!(
            started.elapsed() < deadline,
            "bystanders waited {:?}",
            started.elapsed()
        );
        for client in clients {
            let (target, status, body, waited) = client.join().unwrap();
            eprintln!("{target}: {status} after {waited:?}");
            assert_eq!(
                (status, body.trim_end()),
                (403, format!("target {target} not allowed").as_str())
            );
            assert!(
                waited >= deadline - Duration::from_millis(200) && waited < deadline + SLACK,
                "{target}: answered after {waited:?}"
            );
        }
        proxy
            .wait_for_log(SLACK, |l| {
                l.contains("no answer within the handshake deadline")
            })
            .unwrap_or_else(|| panic!("the timeout is logged:\n{}", proxy.logs_text()));

        // Where only name rules apply, the client learns why, in a Close after the 101.
        let open = Proxy::start(&["--handshake-timeout", "2"]);
        let started = Instant::now();
        let (code, reason) = closed_after_handshake(&open, &format!("slow.example:{port}"));
        let waited = started.elapsed();
        assert_eq!(code, 1011, "{reason}");
        assert!(
            reason.contains("no answer within the handshake deadline"),
            "{reason}"
        );
        assert!(waited < deadline + SLACK, "answered after {waited:?}");

        // The bound is the proxy's own: the system resolver itself is still waiting.
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || tx.send(system_lookup("probe.example")));
        assert!(
            rx.recv_timeout(Duration::from_secs(3)).is_err(),
            "the silent DNS server should keep getaddrinfo waiting"
        );
        // At most 8 lookups ran (one per resolver thread); the others waited in the queue
        // and were dropped at their client's deadline, never reaching the DNS server.
        let asked = (0..12)
            .filter(|n| dns.was_asked(&format!("slow{n}.example")))
            .count();
        assert!(
            (1..=8).contains(&asked),
            "{asked} of 12 asked: {:?}",
            dns.asked()
        );
        assert_eq!(
            echo.accepted(),
            3,
            "only the three bystanders reached the target"
        );
    });
}
