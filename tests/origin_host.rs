//! Origin and Host checks against the real binary, for every protocol generation: RFC 6455 and
//! hixie-75/76 report the page's origin in `Origin`, hybi-07/08 in `Sec-WebSocket-Origin`.
//! Default rule: no Origin (not a browser) passes, a loopback or same-site origin passes,
//! anything else is 403 `origin not allowed`; `--origin` replaces the default. Host: loopback
//! names only on a loopback listener (DNS rebinding), `--host` names the accepted values, and
//! a request without Host is a 400.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// The protocol generations, each with its own handshake and origin header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gen {
    Rfc6455,
    Hybi08,
    Hybi07,
    Hixie76,
    Hixie75,
}

const GENERATIONS: [Gen; 5] = [
    Gen::Rfc6455,
    Gen::Hybi08,
    Gen::Hybi07,
    Gen::Hixie76,
    Gen::Hixie75,
];

impl Gen {
    fn hybi_version(self) -> Option<u8> {
        match self {
            Gen::Rfc6455 => Some(13),
            Gen::Hybi08 => Some(8),
            Gen::Hybi07 => Some(7),
            Gen::Hixie76 | Gen::Hixie75 => None,
        }
    }

    fn hybi_request(
        self,
        proxy: SocketAddr,
        host: &str,
        target: &str,
        origin: Option<&str>,
    ) -> HybiRequest {
        let mut req = HybiRequest::new(proxy, target, self.hybi_version().expect("hybi"));
        req.host = host.to_string();
        req.origin = origin.map(str::to_string);
        req
    }

    fn hixie_request(proxy: SocketAddr, host: &str, target: &str, origin: &str) -> HixieRequest {
        let mut req = HixieRequest::new(proxy, target);
        req.host = host.to_string();
        req.origin = origin.to_string();
        req
    }

    /// The complete request bytes (hixie-76: the head and key3); `host: None` leaves out the
    /// Host header, `origin: None` the origin header.
    fn request_bytes(
        self,
        proxy: SocketAddr,
        host: Option<&str>,
        target: &str,
        origin: Option<&str>,
    ) -> Vec<u8> {
        const NO_HOST: &str = "no-host.invalid";
        let keys = Hixie76Keys::generate(&mut Rng::fresh());
        let mut head = if self.hybi_version().is_some() {
            let req = self.hybi_request(proxy, host.unwrap_or(NO_HOST), target, origin);
            String::from_utf8(req.to_bytes()).expect("ASCII head")
        } else {
            let req =
                Gen::hixie_request(proxy, host.unwrap_or(NO_HOST), target, origin.unwrap_or(""));
            req.head(
                self == Gen::Hixie76,
                Some(&keys).filter(|_| self == Gen::Hixie76),
            )
            .replace("Origin: \r\n", "")
        };
        if host.is_none() {
            head = head.replace(&format!("Host: {NO_HOST}\r\n"), "");
            assert!(!head.contains("Host:"), "{head:?}");
        }
        let mut bytes = head.into_bytes();
        if self == Gen::Hixie76 {
            bytes.extend_from_slice(&keys.key3);
        }
        bytes
    }

    /// Opens a tunnel with this generation's strict client and checks an echo through it.
    /// Panics (with the proxy's answer) if the handshake is refused.
    #[track_caller]
    fn assert_passes(self, proxy: SocketAddr, host: &str, target: &str, origin: Option<&str>) {
        let context = format!("{self:?} Host {host:?} Origin {origin:?}");
        let mut client: Box<dyn DataClient> = match (self, origin) {
            (Gen::Rfc6455 | Gen::Hybi08 | Gen::Hybi07, _) => Box::new(
                RawHybiClient::handshake(proxy, &self.hybi_request(proxy, host, target, origin))
                    .unwrap_or_else(|e| panic!("{context} should pass: {e}")),
            ),
            (Gen::Hixie76, Some(origin)) => {
                let req = Gen::hixie_request(proxy, host, target, origin);
                let keys = Hixie76Keys::generate(&mut Rng::fresh());
                Box::new(
                    HixieClient::try_connect_76(proxy, &req, &keys)
                        .unwrap_or_else(|e| panic!("{context} should pass: {e}")),
                )
            }
            (Gen::Hixie75, Some(origin)) => {
                let req = Gen::hixie_request(proxy, host, target, origin);
                Box::new(
                    HixieClient::try_connect_75(proxy, &req)
                        .unwrap_or_else(|e| panic!("{context} should pass: {e}")),
                )
            }
            (Gen::Hixie76 | Gen::Hixie75, None) => {
                Box::new(hixie_without_origin(self, proxy, host, target, &context))
            }
        };
        let payload = format!("through {context}");
        client.send_data(payload.as_bytes());
        let got = recv_exactly(client.as_mut(), payload.len());
        assert_same_bytes(&got, payload.as_bytes(), &context);
    }

    /// Sends the handshake and expects an HTTP refusal `status` mentioning `why`.
    #[track_caller]
    fn assert_refused(
        self,
        proxy: SocketAddr,
        host: &str,
        target: &str,
        origin: Option<&str>,
        status: u16,
        why: &str,
    ) {
        let context = format!("{self:?} Host {host:?} Origin {origin:?}");
        let reply = http_request(
            proxy,
            &self.request_bytes(proxy, Some(host), target, origin),
        )
        .unwrap_or_else(|e| panic!("{context}: no HTTP answer: {e}"));
        assert_refused(&reply, status, why, &context);
    }
}

/// A hixie handshake without any Origin header (a non-browser client), verified like the
/// harness's hixie clients do: status, Location, and for draft-76 the MD5 challenge response.
fn hixie_without_origin(
    generation: Gen,
    proxy: SocketAddr,
    host: &str,
    target: &str,
    context: &str,
) -> HixieClient {
    let draft76 = generation == Gen::Hixie76;
    let req = Gen::hixie_request(proxy, host, target, "");
    let keys = Hixie76Keys::generate(&mut Rng::fresh());
    let head = req
        .head(draft76, Some(&keys).filter(|_| draft76))
        .replace("Origin: \r\n", "");
    assert!(!head.contains("Origin"), "{head:?}");
    let mut bytes = head.into_bytes();
    if draft76 {
        bytes.extend_from_slice(&keys.key3);
    }
    let mut conn = Conn::connect(proxy);
    conn.write_all(&bytes).expect("send the request");
    let raw = conn
        .read_head()
        .unwrap_or_else(|e| panic!("{context}: {e}"));
    let response = HttpHead::parse(&raw).unwrap_or_else(|e| panic!("{context}: {e}"));
    assert_eq!(
        response.status,
        101,
        "{context} should pass: {:?}",
        String::from_utf8_lossy(&raw)
    );
    let location = if draft76 {
        "Sec-WebSocket-Location"
    } else {
        "WebSocket-Location"
    };
    assert_eq!(
        response.header(location),
        Some(req.expected_location().as_str())
    );
    let challenge_response = if draft76 {
        let got: [u8; 16] = conn.read_array().expect("16-byte challenge response");
        assert_eq!(
            got,
            keys.expected_response(),
            "{context}: challenge response"
        );
        Some(got)
    } else {
        None
    };
    HixieClient {
        conn,
        response,
        draft: if draft76 { 76 } else { 75 },
        challenge_response,
    }
}

/// The Host a browser would send for the proxy's own address.
fn own_host(proxy: &Proxy) -> String {
    proxy.addr.to_string()
}

// --- Origin: the default rule -------------------------------------------------------------------

#[test]
fn requests_without_origin_pass_in_every_generation() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    for generation in GENERATIONS {
        generation.assert_passes(proxy.addr, &own_host(&proxy), &echo.target(), None);
    }
    assert_eq!(echo.accepted(), GENERATIONS.len());
}

#[test]
fn loopback_origins_pass_in_every_generation() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    for origin in [
        "http://localhost:1234",
        "http://127.0.0.1:8000",
        "https://[::1]",
        "http://app.localhost",
    ] {
        for generation in GENERATIONS {
            generation.assert_passes(proxy.addr, &own_host(&proxy), &echo.target(), Some(origin));
        }
    }
}

#[test]
fn foreign_origins_are_refused_with_403_in_every_generation() {
    let proxy = Proxy::start(&["-v"]);
    let echo = EchoServer::start();
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example",
        "null",
    ] {
        for generation in GENERATIONS {
            generation.assert_refused(
                proxy.addr,
                &own_host(&proxy),
                &echo.target(),
                Some(origin),
                403,
                &format!("origin not allowed: {origin}"),
            );
        }
    }
    assert_eq!(
        echo.accepted(),
        0,
        "a refused origin never reaches the target"
    );
    let line = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains("refused: 403 origin not allowed: https://evil.example")
        })
        .unwrap_or_else(|| panic!("the refusal is logged:\n{}", proxy.logs_text()));
    eprintln!("logged: {line}");
}

#[test]
fn same_site_origin_matching_the_host_passes() {
    let proxy = Proxy::start(&["--host", "proxy.example"]);
    let echo = EchoServer::start();
    let host = format!("proxy.example:{}", proxy.addr.port());
    for generation in GENERATIONS {
        generation.assert_passes(
            proxy.addr,
            &host,
            &echo.target(),
            Some("https://proxy.example"),
        );
        generation.assert_refused(
            proxy.addr,
            &host,
            &echo.target(),
            Some("https://other.example"),
            403,
            "origin not allowed",
        );
    }
}

#[test]
fn hybi_reads_sec_websocket_origin_and_rfc6455_reads_origin() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    for version in [7u8, 8] {
        // A hybi-07/08 browser's origin is Sec-WebSocket-Origin: a loopback-looking `Origin`
        // next to it must not hide a foreign one.
        let mut req = HybiRequest::new(proxy.addr, &echo.target(), version);
        req.origin = Some("https://evil.example".into());
        req.extra = vec!["Origin: http://localhost".into()];
        let reply = http_request(proxy.addr, &req.to_bytes()).expect("an HTTP answer");
        assert_refused(
            &reply,
            403,
            "origin not allowed",
            &format!("hybi-{version:02}"),
        );
    }
    let mut req = HybiRequest::new(proxy.addr, &echo.target(), 13);
    req.origin = Some("https://evil.example".into());
    req.extra = vec!["Sec-WebSocket-Origin: http://localhost".into()];
    let reply = http_request(proxy.addr, &req.to_bytes()).expect("an HTTP answer");
    assert_refused(&reply, 403, "origin not allowed", "RFC 6455");
    assert_eq!(echo.accepted(), 0);
}

// --- Origin: --origin ---------------------------------------------------------------------------

#[test]
fn origin_flag_allows_the_listed_origin_and_refuses_the_others() {
    let proxy = Proxy::start(&["--origin", "https://app.example"]);
    let echo = EchoServer::start();
    let host = own_host(&proxy);
    for generation in GENERATIONS {
        generation.assert_passes(
            proxy.addr,
            &host,
            &echo.target(),
            Some("https://app.example"),
        );
        // The default port of the scheme is the same origin.
        generation.assert_passes(
            proxy.addr,
            &host,
            &echo.target(),
            Some("https://app.example:443"),
        );
        // Non-browser clients still pass.
        generation.assert_passes(proxy.addr, &host, &echo.target(), None);
        for other in [
            "http://app.example",
            "https://app.example:8443",
            "https://evil.example",
            // With --origin, loopback origins are no longer special.
            "http://localhost:1234",
        ] {
            generation.assert_refused(
                proxy.addr,
                &host,
                &echo.target(),
                Some(other),
                403,
                "origin not allowed",
            );
        }
    }
}

#[test]
fn origin_star_allows_every_origin() {
    let proxy = Proxy::start(&["--origin", "*"]);
    let echo = EchoServer::start();
    for generation in GENERATIONS {
        for origin in ["https://evil.example", "null", "http://localhost:1234"] {
            generation.assert_passes(proxy.addr, &own_host(&proxy), &echo.target(), Some(origin));
        }
    }
}

// --- Host ----------------------------------------------------------------------------------------

#[test]
fn loopback_host_names_pass() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let port = proxy.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
        format!("LOCALHOST:{port}"),
    ] {
        for generation in [Gen::Rfc6455, Gen::Hybi08, Gen::Hixie76] {
            generation.assert_passes(proxy.addr, &host, &echo.target(), Some(DEFAULT_ORIGIN));
        }
    }
}

#[test]
fn foreign_host_is_refused_with_403_on_a_loopback_listener() {
    let proxy = Proxy::start(&["-v"]);
    let echo = EchoServer::start();
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
    ] {
        for generation in GENERATIONS {
            generation.assert_refused(
                proxy.addr,
                host,
                &echo.target(),
                None,
                403,
                &format!("host '{host}' not allowed"),
            );
        }
    }
    // Plain HTTP (the built-in page) is guarded the same way.
    let reply = http_request(proxy.addr, b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .expect("an HTTP answer");
    assert_refused(
        &reply,
        403,
        "not allowed",
        "plain GET / with a foreign Host",
    );
    assert_eq!(echo.accepted(), 0);
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(5), |l| l
                .contains("refused: 403 host 'evil.example' not allowed"))
            .is_some(),
        "the refusal is logged:\n{}",
        proxy.logs_text()
    );
}

#[test]
fn host_flag_allows_the_named_hosts_and_only_them() {
    let proxy = Proxy::start(&["--host", "proxy.example", "--host", "alt.example:9000"]);
    let echo = EchoServer::start();
    for generation in GENERATIONS {
        for host in [
            "proxy.example",
            "proxy.example:8080",
            "PROXY.example",
            "alt.example:9000",
        ] {
            generation.assert_passes(proxy.addr, host, &echo.target(), None);
        }
        for host in ["evil.example", "alt.example:9001", "alt.example"] {
            generation.assert_refused(proxy.addr, host, &echo.target(), None, 403, "not allowed");
        }
        // Listing hosts replaces the loopback default.
        generation.assert_refused(
            proxy.addr,
            &own_host(&proxy),
            &echo.target(),
            None,
            403,
            "not allowed",
        );
    }
}

#[test]
fn request_without_host_is_a_400() {
    let proxy = Proxy::start(&["-v"]);
    let echo = EchoServer::start();
    for generation in GENERATIONS {
        let bytes = generation.request_bytes(proxy.addr, None, &echo.target(), None);
        let reply = http_request(proxy.addr, &bytes).expect("an HTTP answer");
        assert_refused(
            &reply,
            400,
            "missing Host",
            &format!("{generation:?} without Host"),
        );
    }
    assert_eq!(echo.accepted(), 0);
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(5), |l| l
                .contains("refused: 400 missing Host header"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
}
