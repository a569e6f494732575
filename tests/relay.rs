//! Data relay: multi-MiB round trips through an echo target in every mode, zero-length and
//! fragmented messages, the prototype's HTTP GET scenario, and Ping answered during a bulk
//! download.

mod common;

use std::collections::VecDeque;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const SIZE: usize = 4 << 20;
/// Largest message the round trips send (raw bytes, before any Base64).
const MAX_CHUNK: usize = 48 * 1024;

/// Sends `SIZE` random bytes (seeded by `name`) through `client` and compares the echo.
fn round_trip_random(client: &mut dyn DataClient, name: &str) {
    let mut rng = Rng::for_test(name);
    let data = rng.bytes(SIZE);
    let started = Instant::now();
    let got = round_trip(client, &data, &mut rng, MAX_CHUNK);
    assert_same_bytes(&got, &data, name);
    eprintln!(
        "{name}: {} MiB echoed in {:?}",
        SIZE >> 20,
        started.elapsed()
    );
}

/// Client Close → proxy answers Close → proxy closes TCP.
fn close_cleanly(client: &mut RawHybiClient) {
    client.send_close(1000, "done");
    let (code, _) = client.expect_close();
    assert_eq!(code, 1000, "the proxy should echo the client's close code");
    client
        .conn
        .expect_eof(Duration::from_secs(5))
        .expect("TCP closed after the closing handshake");
}

#[test]
fn roundtrip_4mib_hixie75() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client =
        HixieClient::connect_75(proxy.addr, &HixieRequest::new(proxy.addr, &echo.target()));
    round_trip_random(&mut client, "roundtrip_4mib_hixie75");
}

#[test]
fn roundtrip_4mib_hixie76() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut rng = Rng::for_test("hixie76 keys");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    round_trip_random(&mut client, "roundtrip_4mib_hixie76");
    client.send_close();
    let (rest, closed) = client.recv_until_close();
    assert!(
        rest.is_empty() && closed,
        "0xFF 0x00 must be answered with 0xFF 0x00"
    );
    client.conn.expect_eof(Duration::from_secs(5)).unwrap();
}

#[test]
fn roundtrip_4mib_hybi07_binary() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 7, None);
    assert_eq!(client.recv_wire, Wire::Binary);
    round_trip_random(&mut client, "roundtrip_4mib_hybi07_binary");
    close_cleanly(&mut client);
}

#[test]
fn roundtrip_4mib_hybi08_base64() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 8, Some("base64"));
    round_trip_random(&mut client, "roundtrip_4mib_hybi08_base64");
    close_cleanly(&mut client);
}

#[test]
fn roundtrip_4mib_rfc6455_binary() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = TungClient::connect(proxy.addr, &echo.target(), &["binary"]);
    round_trip_random(&mut client, "roundtrip_4mib_rfc6455_binary");
}

#[test]
fn roundtrip_4mib_rfc6455_base64() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = TungClient::connect(proxy.addr, &echo.target(), &["base64"]);
    round_trip_random(&mut client, "roundtrip_4mib_rfc6455_base64");
}

#[test]
fn roundtrip_4mib_rfc6455_websockets_proxy() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = TungClient::connect(proxy.addr, &echo.target(), &["websockets-proxy"]);
    round_trip_random(&mut client, "roundtrip_4mib_rfc6455_websockets_proxy");
}

#[test]
fn roundtrip_4mib_rfc6455_no_subprotocol_binary_frames() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = TungClient::connect(proxy.addr, &echo.target(), &[]);
    round_trip_random(
        &mut client,
        "roundtrip_4mib_rfc6455_no_subprotocol_binary_frames",
    );
}

#[test]
fn roundtrip_4mib_rfc6455_no_subprotocol_base64_text_frames_in_binary_out() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = TungClient::connect(proxy.addr, &echo.target(), &[]);
    client.send_wire = Wire::Base64Text;
    assert_eq!(client.recv_wire, Wire::Binary);
    round_trip_random(
        &mut client,
        "roundtrip_4mib_rfc6455_no_subprotocol_base64_text_in",
    );
}

#[test]
fn roundtrip_4mib_rfc6455_strict_raw_client_websockets_proxy() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client =
        RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("websockets-proxy"));
    round_trip_random(
        &mut client,
        "roundtrip_4mib_rfc6455_strict_raw_client_websockets_proxy",
    );
    close_cleanly(&mut client);
}

#[test]
fn zero_length_messages_are_data_not_close() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();

    // No subprotocol: an empty binary message and an empty Base64 text message.
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, None);
    client.send_binary(b"");
    client.send_text("");
    client.send_binary(b"after empty");
    assert_eq!(recv_exactly(&mut client, 11), b"after empty");
    close_cleanly(&mut client);

    // websockets-proxy: an empty text message.
    let mut client =
        RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("websockets-proxy"));
    client.send_text("");
    client.send_data(b"still open");
    assert_eq!(recv_exactly(&mut client, 10), b"still open");
    close_cleanly(&mut client);

    // hixie-76: `0x00 0xFF` is an empty text frame, not a close.
    let mut rng = Rng::for_test("zero_length hixie");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    client.send_text("");
    client.send_data(b"hixie still open");
    assert_eq!(recv_exactly(&mut client, 16), b"hixie still open");
}

#[test]
fn fragmented_binary_message_is_reassembled_with_ping_between_fragments() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("binary"));
    let payload = Rng::for_test("fragmented binary").bytes(100_000);
    client.send_frame(false, op::BINARY, &payload[..10]);
    client.send_ping(b"mid-message");
    client.send_frame(false, op::CONTINUATION, &payload[10..50_000]);
    client.send_frame(false, op::CONTINUATION, &[]);
    client.send_frame(true, op::CONTINUATION, &payload[50_000..]);
    let mut got = Vec::new();
    let mut pong = None;
    while got.len() < payload.len() || pong.is_none() {
        match client.recv_message().expect("message") {
            WsMsg::Binary(b) => got.extend_from_slice(&b),
            WsMsg::Pong(p) => pong = Some(p),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pong.as_deref(), Some(&b"mid-message"[..]));
    assert_same_bytes(&got, &payload, "fragmented message echo");
    close_cleanly(&mut client);
}

#[test]
fn fragmented_base64_text_message_is_decoded_after_reassembly() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut client =
        RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("websockets-proxy"));
    let payload = Rng::for_test("fragmented base64").bytes(30_001);
    let text = b64(&payload);
    // Split inside Base64 quads: each fragment alone is not valid Base64.
    client.send_frame(false, op::TEXT, &text.as_bytes()[..1]);
    client.send_frame(false, op::CONTINUATION, &text.as_bytes()[1..4095]);
    client.send_frame(true, op::CONTINUATION, &text.as_bytes()[4095..]);
    let mut got = Vec::new();
    while got.len() < payload.len() {
        got.extend_from_slice(&client.recv_data());
    }
    assert_same_bytes(&got, &payload, "fragmented Base64 echo");
    close_cleanly(&mut client);
}

#[test]
fn http_get_through_websockets_proxy_subprotocol_rfc6455() {
    let proxy = Proxy::start(&[]);
    let http = HttpServer::start();
    let mut client =
        TungClient::connect(proxy.addr, &http.addr().to_string(), &["websockets-proxy"]);
    assert_eq!(client.protocol.as_deref(), Some("websockets-proxy"));
    client.send_data(b"GET / HTTP/1.0\r\n\r\n");
    let (body, close) = client.recv_until_close();
    assert_same_bytes(&body, HTTP_RESPONSE, "HTTP response through the tunnel");
    let (code, _) = close.expect("a Close frame with a code");
    assert_eq!(code, 1000);
    assert_eq!(
        http.requests.lock().unwrap().as_slice(),
        [b"GET / HTTP/1.0\r\n\r\n".to_vec()]
    );
}

#[test]
fn http_get_through_hixie76_websockets_proxy_like_the_ruby_prototype() {
    let proxy = Proxy::start(&[]);
    let http = HttpServer::start();
    let mut req = HixieRequest::new(proxy.addr, &http.addr().to_string());
    req.protocol = Some("websockets-proxy".into());
    let mut rng = Rng::for_test("http_get hixie76");
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    client.send_data(b"GET / HTTP/1.0\r\n\r\n");
    let (body, _closed) = client.recv_until_close();
    assert_same_bytes(
        &body,
        HTTP_RESPONSE,
        "HTTP response through the hixie-76 tunnel",
    );
}

#[test]
fn hixie76_length_prefixed_frames_are_discarded() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut rng = Rng::for_test("length-prefixed");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    client.send_data(b"one");
    // Type 0x80, length 200 = 0x81 0x48 (base-128, high bit = more), then 200 junk bytes.
    let mut junk = vec![0x80, 0x81, 0x48];
    junk.extend_from_slice(&[0xFFu8; 200]);
    client.conn.write_all(&junk).unwrap();
    // Type 0x01 sentinel frame (not text): also discarded.
    client.conn.write_all(b"\x01ignored\xFF").unwrap();
    client.send_data(b"two");
    let mut got = Vec::new();
    while got.len() < 6 {
        got.extend_from_slice(&client.recv_data());
    }
    assert_eq!(got, b"onetwo");
}

#[test]
fn frames_split_into_single_byte_segments_are_reassembled() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();

    let mut client = RawHybiClient::connect(proxy.addr, &echo.target(), 13, Some("base64"));
    let frame = encode_frame(
        true,
        op::TEXT,
        b64(b"dribbled").as_bytes(),
        Some([1, 2, 3, 4]),
    );
    for byte in &frame {
        client.send_raw(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    // The proxy may relay the decoded bytes as they trickle in: read until all came back.
    assert_eq!(recv_exactly(&mut client, 8), b"dribbled");

    let mut rng = Rng::for_test("dribble hixie");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let mut client = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    let mut frame = vec![0x00];
    frame.extend_from_slice(b64(b"dribbled hixie").as_bytes());
    frame.push(0xFF);
    for byte in &frame {
        client.conn.write_all(&[*byte]).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(recv_exactly(&mut client, 14), b"dribbled hixie");
}

#[test]
fn data_pipelined_right_after_the_handshake_is_not_lost() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();

    // hixie-76: head, key3 and the first frame in one segment.
    let mut rng = Rng::for_test("pipelined");
    let req = HixieRequest::new(proxy.addr, &echo.target());
    let keys = Hixie76Keys::generate(&mut rng);
    let mut bytes = req.head(true, Some(&keys)).into_bytes();
    bytes.extend_from_slice(&keys.key3);
    bytes.push(0x00);
    bytes.extend_from_slice(b64(b"pipelined hixie").as_bytes());
    bytes.push(0xFF);
    let mut conn = Conn::connect(proxy.addr);
    conn.write_all(&bytes).unwrap();
    let head = HttpHead::parse(&conn.read_head().unwrap()).unwrap();
    assert_eq!(head.status, 101);
    let md5: [u8; 16] = conn.read_array().unwrap();
    assert_eq!(md5, keys.expected_response());
    let mut client = HixieClient {
        conn,
        response: head,
        draft: 76,
        challenge_response: Some(md5),
    };
    assert_eq!(recv_exactly(&mut client, 15), b"pipelined hixie");

    // RFC 6455: request and the first frame in one segment.
    let mut req = HybiRequest::new(proxy.addr, &echo.target(), 13);
    req.protocols = Some("binary".into());
    let mut bytes = req.to_bytes();
    bytes.extend_from_slice(&encode_frame(
        true,
        op::BINARY,
        b"pipelined rfc",
        Some([4, 3, 2, 1]),
    ));
    let mut conn = Conn::connect(proxy.addr);
    conn.write_all(&bytes).unwrap();
    let head = HttpHead::parse(&conn.read_head().unwrap()).unwrap();
    assert_eq!(head.status, 101);
    assert_eq!(
        head.header("Sec-WebSocket-Accept"),
        Some(accept_key(&req.key).as_str())
    );
    let [b0, b1] = conn.read_array::<2>().unwrap();
    assert_eq!(
        (b0, b1),
        (0x82, 13),
        "one unmasked binary frame of 13 bytes"
    );
    assert_eq!(conn.read_vec(13).unwrap(), b"pipelined rfc");
}

#[test]
fn subprotocols_offered_on_several_header_lines_are_combined() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let mut req = HybiRequest::new(proxy.addr, &echo.target(), 13);
    req.protocols = Some("chat".into());
    req.extra = vec!["Sec-WebSocket-Protocol: base64, binary".into()];
    let reply = http_request(proxy.addr, &req.to_bytes());
    // RFC 7230 §3.2.2: repeated list headers are one comma-joined list.
    let reply = reply.expect("an HTTP answer");
    assert_eq!(reply.head.status, 101, "{:?}", reply.head.status_line);
    assert_eq!(reply.head.header("Sec-WebSocket-Protocol"), Some("base64"));
}

#[test]
fn large_single_messages_reach_the_target_intact() {
    let proxy = Proxy::start(&[]);
    let sink = SinkServer::start();
    let data = Rng::for_test("large single messages").bytes(3 << 20);

    let mut binary =
        RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, Some("binary"));
    binary.send_data(&data);
    let mut base64 =
        RawHybiClient::connect(proxy.addr, &sink.addr().to_string(), 13, Some("base64"));
    base64.send_data(&data);
    let mut rng = Rng::for_test("keys");
    let req = HixieRequest::new(proxy.addr, &sink.addr().to_string());
    let mut hixie = HixieClient::connect_76(proxy.addr, &req, &Hixie76Keys::generate(&mut rng));
    hixie.send_data(&data);

    for (index, name) in ["binary", "base64", "hixie-76"].iter().enumerate() {
        let got = sink.wait_for_bytes(index, data.len(), Duration::from_secs(20));
        assert_eq!(got, data.len(), "{name}: bytes at the target");
        let rec = sink.record(index).unwrap();
        assert_same_bytes(&rec.data, &data, name);
    }
}

#[test]
fn fifty_concurrent_tunnels_do_not_cross_talk() {
    let proxy = Proxy::start(&[]);
    let echo = EchoServer::start();
    let addr = proxy.addr;
    let target = echo.target();
    let workers: Vec<_> = (0..50)
        .map(|i| {
            let target = target.clone();
            thread::spawn(move || {
                let name = format!("concurrent {i}");
                let mut rng = Rng::for_test(&name);
                let data = rng.bytes(256 * 1024 + i);
                let got = match i % 3 {
                    0 => {
                        let mut c = RawHybiClient::connect(addr, &target, 13, Some("binary"));
                        round_trip(&mut c, &data, &mut rng, 20_000)
                    }
                    1 => {
                        let mut c = TungClient::connect(addr, &target, &["websockets-proxy"]);
                        round_trip(&mut c, &data, &mut rng, 20_000)
                    }
                    _ => {
                        let req = HixieRequest::new(addr, &target);
                        let keys = Hixie76Keys::generate(&mut rng);
                        let mut c = HixieClient::connect_76(addr, &req, &keys);
                        round_trip(&mut c, &data, &mut rng, 20_000)
                    }
                };
                assert_same_bytes(&got, &data, &name);
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a concurrent tunnel failed");
    }
}

/// Linux's ceiling for an auto-tuned socket send buffer (`net.ipv4.tcp_wmem`'s third field).
fn tcp_wmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// Checks `data` against the endless repetition of `block` starting at stream offset `offset`.
fn check_pattern(block: &[u8], offset: usize, data: &[u8]) {
    let mut pos = 0;
    while pos < data.len() {
        let off = (offset + pos) % block.len();
        let n = (block.len() - off).min(data.len() - pos);
        if data[pos..pos + n] != block[off..off + n] {
            let bad = (0..n).find(|&i| data[pos + i] != block[off + i]).unwrap();
            panic!(
                "download corrupted at stream offset {} (frame parser out of sync or bytes \
                 interleaved): got {:02x?}",
                offset + pos + bad,
                &data[pos + bad..(pos + bad + 16).min(data.len())]
            );
        }
        pos += n;
    }
}

#[test]
fn ping_is_answered_promptly_during_64mib_download() {
    // Without a cap, Linux lets a receive buffer grow to net.ipv4.tcp_rmem's maximum (32 MiB on
    // some machines), and the proxy could finish the download before a Ping reached it.
    const RECV_BUFFER: usize = 256 << 10;
    // How far behind its Ping a Pong may arrive in the stream: what the proxy can have written
    // before the Ping reached it (its send buffer, which Linux grows up to tcp_wmem's maximum,
    // plus our capped receive buffer, which Linux doubles), the one frame (≤ 1 MiB) it may be
    // in the middle of writing, and 8 MiB of slack for the time a loaded machine takes to
    // schedule the proxy thread that reads the Ping while we keep reading.
    let pong_within = tcp_wmem_max() + 2 * RECV_BUFFER + (9 << 20);
    // 64 MiB, or more on a machine with larger TCP buffers, so that Pings fit in.
    let total = (64 << 20).max(pong_within + (32 << 20));
    // Pings go out every 8 MiB without waiting for earlier Pongs, the last one with more than
    // `pong_within` + 8 MiB to come: it must reach the proxy while it is still relaying, or
    // the proxy may rightly send its Close (and nothing after it) first. A Pong queued behind
    // the download would arrive more than `pong_within` behind its Ping.
    let ping_at: Vec<usize> = (0..)
        .map(|k| (1 << 20) + k * (8 << 20))
        .take_while(|at| at + pong_within + (8 << 20) < total)
        .collect();
    assert!(ping_at.len() >= 3, "{ping_at:?}");
    let proxy = Proxy::start(&[]);
    // A prime-length block so the pattern never lines up with frame boundaries.
    let block = Rng::for_test("download block").bytes(1_048_573);
    let source = SourceServer::repeating(block.clone(), total);
    let mut client = RawHybiClient::connect(proxy.addr, &source.target(), 13, Some("binary"));
    socket2::SockRef::from(&client.conn.stream)
        .set_recv_buffer_size(RECV_BUFFER)
        .expect("SO_RCVBUF");

    let mut received = 0usize;
    let mut frames = 0usize;
    let mut outstanding: VecDeque<(Vec<u8>, usize, Instant)> = VecDeque::new();
    let mut answered = Vec::new();
    let mut paced = 0usize;
    let close = loop {
        match client.recv_message().expect("strict frame parser") {
            WsMsg::Binary(b) => {
                check_pattern(&block, received, &b);
                received += b.len();
                frames += 1;
                while let Some(&at) = ping_at.get(answered.len() + outstanding.len()) {
                    if received < at {
                        break;
                    }
                    let payload = format!("ping-at-{at}").into_bytes();
                    client.send_ping(&payload);
                    outstanding.push_back((payload, received, Instant::now()));
                }
                // Read slowly (about 128 MB/s) so the proxy's writer is back-pressured, and so
                // that a proxy thread scheduled late costs few bytes of the Pong's budget.
                if received - paced >= 1 << 20 {
                    paced = received;
                    thread::sleep(Duration::from_millis(8));
                }
            }
            WsMsg::Pong(p) => {
                let (want, sent_at_offset, sent_at) =
                    outstanding.pop_front().expect("unsolicited Pong");
                assert_eq!(p, want, "Pongs answer Pings in order, with their payloads");
                let behind = received - sent_at_offset;
                assert!(
                    behind <= pong_within,
                    "Pong for {:?} arrived {behind} bytes into the stream after its Ping: \
                     queued behind the download instead of between its frames",
                    String::from_utf8_lossy(&want)
                );
                answered.push((behind, sent_at.elapsed()));
            }
            WsMsg::Close(c) => break c,
            other => panic!("unexpected message {other:?}"),
        }
    };
    eprintln!("Pongs (bytes behind their Ping, time): {answered:?}; {frames} frames");
    assert_eq!(received, total, "every byte delivered before the Close");
    assert!(
        outstanding.is_empty(),
        "every Ping answered before the Close; unanswered: {outstanding:?}"
    );
    assert_eq!(answered.len(), ping_at.len());
    assert_eq!(close.map(|c| c.0), Some(1000), "target EOF → Close 1000");
    assert!(
        frames <= total / 4096,
        "{frames} frames for {total} bytes: target reads should be large (≥16 KiB)"
    );
}
