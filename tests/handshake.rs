//! Opening handshakes of every WebSocket generation, version negotiation, and the HTTP errors
//! the proxy answers before any upgrade (bad targets, oversized heads, bad hixie keys).

mod common;

use std::time::Duration;

use common::*;

/// Sends one short message through `client` and checks the echo (proves the tunnel works).
fn assert_echo(client: &mut dyn DataClient, payload: &[u8]) {
    client.send_data(payload);
    let got = recv_exactly(client, payload.len());
    assert_same_bytes(&got, payload, "echo through the tunnel");
}

/// A minimal valid RFC 6455 request head for `resource` (plus extra header lines).
fn rfc6455_request(proxy: std::net::SocketAddr, resource: &str, extra: &[&str]) -> Vec<u8> {
    let mut req = format!(
        "GET {resource} HTTP/1.1\r\nHost: {proxy}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extra {
        req += line;
        req += "\r\n";
    }
    (req + "\r\n").into_bytes()
}

/// Asserts the reply is an HTTP error `status` (never 101) with a non-empty body.
#[track_caller]
fn assert_http_error(reply: &HttpReply, status: u16, context: &str) {
    assert_ne!(reply.head.status, 101, "{context}: must never upgrade");
    assert_eq!(
        reply.head.status,
        status,
        "{context}: got {:?} body {:?}",
        reply.head.status_line,
        reply.body_text()
    );
    assert!(
        !reply.body_text().trim().is_empty(),
        "{context}: the error needs a one-line reason in the body"
    );
}

// --- draft-76 key computation (client side, checked against the draft) ----------------------

#[test]
fn hixie76_client_key_computation_matches_draft_worked_examples() {
    // Example A (draft-76 §1.3).
    let a1 = "18x 6]8vM;54 *(5:  {   U1]8  z [  8";
    let a2 = "1_ tx7X d  <  nw  334J702) 7]o}` 0";
    assert_eq!(hixie76_key_value(a1), Some(155_712_099));
    assert_eq!(hixie76_key_value(a2), Some(173_347_027));
    assert_eq!(
        &hixie76_response(a1, a2, b"Tm[K T2u").unwrap(),
        b"fQJ,fN/4F4!~K~MH"
    );
    // Example B (draft-76 §1.2): key1's number 4146546015 is above 2^31.
    let b1 = "4 @1  46546xW%0l 1 5";
    let b2 = "12998 5 Y3 1  .P00";
    assert_eq!(hixie76_key_value(b1), Some(829_309_203));
    assert_eq!(hixie76_key_value(b2), Some(259_970_620));
    assert_eq!(
        &hixie76_response(b1, b2, b"^n:ds[4U").unwrap(),
        b"8jKS'y:G*Co,Wxa-"
    );
    // Invalid keys.
    assert_eq!(hixie76_key_value("12345"), None, "no spaces");
    assert_eq!(
        hixie76_key_value("1 2 3"),
        None,
        "123 is not a multiple of 2"
    );
}

#[test]
fn hixie76_generated_keys_follow_the_draft_rules() {
    let mut rng = Rng::for_test("hixie76_generated_keys_follow_the_draft_rules");
    for _ in 0..5000 {
        let k = generate_hixie76_key(&mut rng);
        assert!((1..=12).contains(&k.spaces));
        let bytes = k.key.as_bytes();
        assert_ne!(bytes[0], b' ', "key {:?} starts with a space", k.key);
        assert_ne!(
            *bytes.last().unwrap(),
            b' ',
            "key {:?} ends with a space",
            k.key
        );
        assert_eq!(
            bytes.iter().filter(|&&b| b == b' ').count() as u32,
            k.spaces
        );
        let others = bytes
            .iter()
            .filter(|b| !b.is_ascii_digit() && **b != b' ')
            .count();
        assert!((1..=12).contains(&others), "key {:?}", k.key);
        assert!(bytes.iter().all(|b| (0x20..=0x7E).contains(b)));
        assert_eq!(hixie76_key_value(&k.key), Some(k.number), "key {:?}", k.key);
    }
}

// --- hixie-75 --------------------------------------------------------------------------------

#[test]
fn hixie75_handshake_answers_exact_status_line_and_location() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let req = HixieRequest::new(proxy.addr, &echo.target());
    // connect_75 checks the first 85 bytes byte for byte, Origin and Location.
    let mut client = HixieClient::connect_75(proxy.addr, &req);
    assert!(
        client
            .response
            .status_line
            .starts_with("HTTP/1.1 101 Web Socket Protocol Handshake")
    );
    assert_echo(&mut client, b"hello hixie-75");
}

#[test]
fn hixie75_echoes_offered_websockets_proxy_protocol() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut req = HixieRequest::new(proxy.addr, &echo.target());
    req.protocol = Some("websockets-proxy".into());
    let mut client = HixieClient::connect_75(proxy.addr, &req);
    assert_eq!(
        client.response.header("WebSocket-Protocol"),
        Some("websockets-proxy")
    );
    assert_echo(&mut client, b"with protocol");
}

// --- hixie-76 --------------------------------------------------------------------------------

/// Worked example A's keys with the given request fields; the response must be the draft's MD5.
#[test]
fn hixie76_handshake_answers_md5_of_worked_example_a() {
    let proxy = Proxy::start(&["--host", "example.com"]);
    let echo = EchoServer::start();
    let mut req = HixieRequest::new(proxy.addr, &echo.target());
    req.host = "example.com".into();
    let keys = Hixie76Keys {
        key1: "18x 6]8vM;54 *(5:  {   U1]8  z [  8".into(),
        key2: "1_ tx7X d  <  nw  334J702) 7]o}` 0".into(),
        key3: *b"Tm[K T2u",
    };
    let mut client = HixieClient::connect_76(proxy.addr, &req, &keys);
    assert_eq!(&client.challenge_response.unwrap(), b"fQJ,fN/4F4!~K~MH");
    assert_eq!(
        client.response.header("Sec-WebSocket-Location"),
        Some(format!("ws://example.com/{}", echo.target()).as_str())
    );
    assert_echo(&mut client, b"example A");
}

/// Worked example B (key1's number 4146546015 > 2^31), with the draft's header order, Host,
/// Origin and protocol; Location must be `ws://example.com<resource>`.
#[test]
fn hixie76_handshake_answers_md5_of_worked_example_b_with_key_above_2_pow_31() {
    // The draft's Host and Origin (same site, so the default Origin rule accepts it).
    let proxy = Proxy::start(&["--host", "example.com"]);
    let echo = EchoServer::start();
    let resource = format!("/{}", echo.target());
    let mut request = format!(
        "GET {resource} HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nSec-WebSocket-Protocol: websockets-proxy\r\n\
         Upgrade: WebSocket\r\nSec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n\
         Origin: http://example.com\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(b"^n:ds[4U");
    let mut conn = Conn::connect(proxy.addr);
    conn.write_all(&request).unwrap();
    let head = HttpHead::parse(&conn.read_head().expect("response head")).unwrap();
    assert_eq!(head.status, 101, "{:?}", String::from_utf8_lossy(&head.raw));
    assert_eq!(
        head.header("Sec-WebSocket-Origin"),
        Some("http://example.com")
    );
    assert_eq!(
        head.header("Sec-WebSocket-Location"),
        Some(format!("ws://example.com{resource}").as_str())
    );
    assert_eq!(
        head.header("Sec-WebSocket-Protocol"),
        Some("websockets-proxy")
    );
    let md5: [u8; 16] = conn.read_array().expect("16-byte response");
    assert_eq!(&md5, b"8jKS'y:G*Co,Wxa-");
}

#[test]
fn hixie76_handshake_with_generated_keys_and_key3_in_later_segments() {
    let proxy = Proxy::start(&["--origin", "http://client.example:8000"]);
    let echo = EchoServer::start();
    let mut rng = Rng::for_test("hixie76_key3_later");
    for _ in 0..3 {
        let mut req = HixieRequest::new(proxy.addr, &echo.target());
        req.key3_delay = Some(Duration::from_millis(150));
        req.origin = "http://Client.Example:8000".into();
        let keys = Hixie76Keys::generate(&mut rng);
        let mut client = HixieClient::connect_76(proxy.addr, &req, &keys);
        assert_eq!(
            client.response.header("Sec-WebSocket-Origin"),
            Some("http://Client.Example:8000"),
            "Origin must be echoed verbatim"
        );
        assert_echo(&mut client, b"key3 arrived late");
    }
}

#[test]
fn hixie76_handshake_with_many_random_keys() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut rng = Rng::for_test("hixie76_many_keys");
    for i in 0..40 {
        let req = HixieRequest::new(proxy.addr, &echo.target());
        let keys = Hixie76Keys::generate(&mut rng);
        let client = HixieClient::try_connect_76(proxy.addr, &req, &keys);
        if let Err(e) = client {
            panic!("handshake {i} with keys {keys:?}: {e}");
        }
    }
}

#[test]
fn hixie76_location_keeps_host_port_and_query_verbatim() {
    let proxy = Proxy::start(&["--host", "proxy.example:8080"]);
    let echo = EchoServer::start();
    let mut req = HixieRequest::new(proxy.addr, &echo.target());
    req.host = "proxy.example:8080".into();
    req.resource = format!("/{}?session=abc&x=1", echo.target());
    let mut rng = Rng::for_test("hixie76_location_query");
    // connect_76 requires Location == ws://proxy.example:8080/<target>?session=abc&x=1 exactly.
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    assert_echo(&mut client, b"query ignored for the target");
}

#[test]
fn hixie76_echoes_offered_base64_protocol_and_lowercase_header_names_work() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut req = HixieRequest::new(proxy.addr, &echo.target());
    req.protocol = Some("base64".into());
    req.lowercase_names = true;
    let mut rng = Rng::for_test("hixie76_lowercase");
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    assert_eq!(
        client.response.header("Sec-WebSocket-Protocol"),
        Some("base64")
    );
    assert_echo(&mut client, b"lower-case names");
}

fn hixie76_bad_keys_reply(key1: &str, key2: &str) -> HttpReply {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut request = format!(
        "GET /{} HTTP/1.1\r\nHost: {}\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\
         Origin: {DEFAULT_ORIGIN}\r\nSec-WebSocket-Key1: {key1}\r\nSec-WebSocket-Key2: {key2}\r\n\r\n",
        echo.target(),
        proxy.addr
    )
    .into_bytes();
    request.extend_from_slice(b"12345678");
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    assert_eq!(
        echo.accepted(),
        0,
        "no target connection for a refused handshake"
    );
    reply
}

#[test]
fn hixie76_key_without_spaces_is_refused_with_400() {
    let reply = hixie76_bad_keys_reply("155712099", "12998 5 Y3 1  .P00");
    assert_http_error(&reply, 400, "key1 without spaces");
}

#[test]
fn hixie76_key_number_not_a_multiple_of_spaces_is_refused_with_400() {
    // 1299853101 is not divisible by 5.
    let reply = hixie76_bad_keys_reply("4 @1  46546xW%0l 1 5", "12998 5 Y3 1  .P01");
    assert_http_error(&reply, 400, "key2 number not a multiple of its spaces");
}

#[test]
fn hixie76_key_number_overflowing_u64_is_refused_with_400() {
    let reply = hixie76_bad_keys_reply("9 9999999999999999999999999999 9", "12998 5 Y3 1  .P00");
    assert_http_error(&reply, 400, "key1 number overflows");
}

// --- hybi-07 / hybi-08 -------------------------------------------------------------------------

fn hybi_handshake(version: u8) {
    let proxy = Proxy::start(&["--origin", "http://old-firefox.example"]);
    let echo = EchoServer::start();
    let mut req = HybiRequest::new(proxy.addr, &echo.target(), version);
    req.origin = Some("http://old-firefox.example".into());
    // A decoy `Origin` that the policy would refuse: hybi-07/08 must read Sec-WebSocket-Origin.
    req.extra = vec!["Origin: http://evil.example".into()];
    let raw = String::from_utf8(req.to_bytes()).unwrap();
    assert!(raw.contains("Sec-WebSocket-Origin: http://old-firefox.example\r\n"));
    // handshake() verifies 101, Upgrade, Connection and Sec-WebSocket-Accept.
    let mut client = RawHybiClient::handshake(proxy.addr, &req)
        .unwrap_or_else(|e| panic!("hybi-{version}: {e}"));
    assert_eq!(client.protocol, None);
    assert_echo(&mut client, format!("hybi-{version} works").as_bytes());

    // The other way round: the origin that counts is refused.
    req.origin = Some("http://evil.example".into());
    req.extra = vec!["Origin: http://old-firefox.example".into()];
    let reply = http_request(proxy.addr, &req.to_bytes()).expect("an HTTP answer");
    assert_eq!(
        reply.head.status, 403,
        "hybi-{version} origin comes from Sec-WebSocket-Origin: {:?}",
        reply.head.status_line
    );
}

#[test]
fn hybi07_handshake_uses_sec_websocket_origin_and_accept_key() {
    hybi_handshake(7);
}

#[test]
fn hybi08_handshake_uses_sec_websocket_origin_and_accept_key() {
    hybi_handshake(8);
}

#[test]
fn rfc6455_origin_comes_from_origin_header() {
    let proxy = Proxy::start(&["--origin", "https://app.example"]);
    let echo = EchoServer::start();
    let mut req = HybiRequest::new(proxy.addr, &echo.target(), 13);
    req.origin = Some("https://app.example".into());
    req.extra = vec!["Sec-WebSocket-Origin: http://evil.example".into()];
    let mut client = RawHybiClient::handshake(proxy.addr, &req).expect("allowed origin");
    assert_echo(&mut client, b"origin ok");
    req.origin = Some("http://evil.example".into());
    req.extra = vec!["Sec-WebSocket-Origin: https://app.example".into()];
    let reply = http_request(proxy.addr, &req.to_bytes()).expect("an HTTP answer");
    assert_eq!(reply.head.status, 403, "{:?}", reply.head.status_line);
}

#[test]
fn hybi08_offering_base64_selects_it() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 8, Some("base64"));
    assert_eq!(client.protocol.as_deref(), Some("base64"));
    assert_echo(&mut client, b"hybi-08 base64");
}

// --- RFC 6455 ------------------------------------------------------------------------------

fn rfc6455_subprotocol(offered: &[&str], expected: Option<&str>) {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = TungClient::connect(proxy.addr, &echo.target(), offered);
    assert_eq!(client.protocol.as_deref(), expected, "offered {offered:?}");
    assert_echo(&mut client, b"rfc 6455");
}

#[test]
fn rfc6455_handshake_selects_binary_subprotocol() {
    rfc6455_subprotocol(&["binary"], Some("binary"));
}

#[test]
fn rfc6455_handshake_selects_base64_subprotocol() {
    rfc6455_subprotocol(&["base64"], Some("base64"));
}

#[test]
fn rfc6455_handshake_selects_websockets_proxy_subprotocol() {
    rfc6455_subprotocol(&["websockets-proxy"], Some("websockets-proxy"));
}

#[test]
fn rfc6455_handshake_without_subprotocol_answers_none() {
    rfc6455_subprotocol(&[], None);
}

#[test]
fn rfc6455_picks_clients_most_preferred_supported_subprotocol() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let cases = [
        ("chat, base64, binary", "base64"),
        ("binary,websockets-proxy", "binary"),
        ("  superchat ,websockets-proxy , base64", "websockets-proxy"),
        ("v1.chat, binary", "binary"),
    ];
    for (offered, want) in cases {
        let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some(offered));
        assert_eq!(
            client.protocol.as_deref(),
            Some(want),
            "offered {offered:?}"
        );
        assert_echo(&mut client, offered.as_bytes());
    }
}

#[test]
fn rfc6455_offered_but_unsupported_subprotocol_is_refused_with_400() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let request = rfc6455_request(
        proxy.addr,
        &format!("/{}", echo.target()),
        &["Sec-WebSocket-Protocol: chat, superchat"],
    );
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    assert_http_error(&reply, 400, "unsupported subprotocols");
    let body = reply.body_text().to_ascii_lowercase();
    assert!(
        body.contains("binary") && body.contains("base64"),
        "the 400 should list the supported subprotocols; body: {body:?}"
    );
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn unsupported_version_9_gets_426_listing_13_8_7() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut req = HybiRequest::new(proxy.addr, &echo.target(), 9);
    req.origin = None;
    let reply = http_request(proxy.addr, &req.to_bytes()).expect("an HTTP answer");
    assert_eq!(
        reply.head.status,
        426,
        "{:?}",
        String::from_utf8_lossy(&reply.head.raw)
    );
    let versions: Vec<String> = reply
        .head
        .header_all("Sec-WebSocket-Version")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_string())
        .collect();
    assert_eq!(versions, ["13", "8", "7"], "RFC 6455 §4.4 version list");
    assert_eq!(
        reply.head.header("Sec-WebSocket-Version"),
        Some("13, 8, 7"),
        "contract: a single `Sec-WebSocket-Version: 13, 8, 7` header"
    );
    assert_eq!(echo.accepted(), 0);
}

#[test]
fn other_unknown_versions_also_get_426() {
    let proxy = Proxy::start(&[]);
    for version in ["0", "6", "12", "14", "25"] {
        let mut req = HybiRequest::new(proxy.addr, "127.0.0.1:9", 13);
        req.version = version.into();
        let reply = http_request(proxy.addr, &req.to_bytes()).expect("an HTTP answer");
        assert_eq!(reply.head.status, 426, "version {version:?}");
        assert!(reply.head.header("Sec-WebSocket-Version").is_some());
    }
}

#[test]
fn request_without_upgrade_gets_400_with_helpful_text_never_101() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
        echo.target(),
        proxy.addr
    );
    let reply = http_request(proxy.addr, request.as_bytes()).expect("an HTTP answer");
    assert_http_error(&reply, 400, "plain HTTP GET of a target path");
    assert!(
        reply.body_text().to_ascii_lowercase().contains("websocket"),
        "the text should say this is a WebSocket proxy; body: {:?}",
        reply.body_text()
    );
    assert_eq!(
        echo.accepted(),
        0,
        "no target connection without an upgrade"
    );
}

#[test]
fn header_names_are_case_insensitive_and_connection_is_a_token_list() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    for (lowercase, connection) in [
        (true, "keep-alive, Upgrade"),
        (false, "keep-alive,upgrade"),
        (true, "Upgrade"),
    ] {
        let mut req = HybiRequest::new(proxy.addr, &echo.target(), 13);
        req.lowercase_names = lowercase;
        req.connection = connection.into();
        req.protocols = Some("binary".into());
        let mut client = RawHybiClient::handshake(proxy.addr, &req)
            .unwrap_or_else(|e| panic!("lowercase={lowercase} Connection={connection:?}: {e}"));
        assert_eq!(client.protocol.as_deref(), Some("binary"));
        assert_echo(&mut client, connection.as_bytes());
    }
}

#[test]
fn bad_targets_are_refused_with_400_and_the_reason() {
    let proxy = Proxy::start(&[]);
    let cases = [
        ("/127.0.0.1", "port"),
        ("/127.0.0.1:", "port"),
        ("/127.0.0.1:0", "port"),
        ("/127.0.0.1:65536", "port"),
        ("/127.0.0.1:99999999999", "port"),
        ("/127.0.0.1:http", "port"),
        ("/:8000", "host"),
        ("/", "host"),
    ];
    for (resource, word) in cases {
        // An empty host may also be reported as a missing target.
        let words: &[&str] = if word == "host" {
            &["host", "target"]
        } else {
            &["port"]
        };
        let reply = http_request(proxy.addr, &rfc6455_request(proxy.addr, resource, &[]))
            .expect("an HTTP answer");
        assert_http_error(&reply, 400, &format!("target {resource:?}"));
        let body = reply.body_text().to_ascii_lowercase();
        assert!(
            words.iter().any(|w| body.contains(w)),
            "the reason for {resource:?} should mention {words:?}; body: {:?}",
            reply.body_text()
        );
    }
}

#[test]
fn percent_encoded_target_is_decoded_and_query_ignored() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let target = format!("127.0.0.1%3A{}?token=abc", echo.addr.port());
    let mut client = RawHybiClient::connect(proxy.addr, &target, 13, Some("binary"));
    assert_echo(&mut client, b"percent-decoded");
}

#[test]
fn ipv6_literal_target_in_brackets_works() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start_on("[::1]:0");
    assert_eq!(echo.target(), format!("[::1]:{}", echo.addr.port()));
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    assert_echo(&mut client, b"over IPv6");
}

#[test]
fn request_head_over_16_kib_gets_431() {
    let proxy = Proxy::start(&[]);
    let filler = format!("X-Filler: {}", "a".repeat(17 * 1024));
    let request = rfc6455_request(proxy.addr, "/127.0.0.1:9", &[&filler]);
    let reply = http_request(proxy.addr, &request).expect(
        "an HTTP answer (if this is a connection reset, the proxy closed with unread input: \
         it should drain or half-close before closing)",
    );
    assert_http_error(&reply, 431, "17 KiB header");
}

#[test]
fn more_than_100_header_fields_are_refused() {
    let proxy = Proxy::start(&[]);
    let lines: Vec<String> = (0..101).map(|i| format!("X-H{i}: v")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let request = rfc6455_request(proxy.addr, "/127.0.0.1:9", &refs);
    let reply = http_request(proxy.addr, &request).expect("an HTTP answer");
    assert!(
        matches!(reply.head.status, 400 | 431),
        "107 header fields: expected 400 or 431, got {:?}",
        reply.head.status_line
    );
}

#[test]
fn exactly_100_header_fields_are_accepted() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut req = HybiRequest::new(proxy.addr, &echo.target(), 13);
    // The base request has 6 fields (Host, Upgrade, Connection, Key, Version, Origin).
    req.extra = (0..94).map(|i| format!("X-H{i}: v")).collect();
    let mut client = RawHybiClient::handshake(proxy.addr, &req).expect("100 fields are legal");
    assert_echo(&mut client, b"100 headers");
}
