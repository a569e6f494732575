//! Test helpers for the inspect modules: a realistic WebSocket session as byte chunks, and
//! `tshark` (Debian's package, installed by `scripts/setup-test-deps.sh`) to read captures.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Flow;

/// Opcodes (RFC 6455 §5.2).
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// One RFC 6455 frame with FIN set: masked (client frames) or not (server frames).
pub fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close payload: the code, big-endian, then the reason (RFC 6455 §5.5.1).
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// A tunnel's traffic as the taps would see it: chunks on the four flows, in order, plus what
/// an analyser should find in them.
pub struct WsSession {
    pub client: SocketAddr,
    pub proxy: SocketAddr,
    /// The proxy's local address towards the target.
    pub proxy_out: SocketAddr,
    pub target: SocketAddr,
    pub chunks: Vec<(Flow, Vec<u8>)>,
    /// Every WebSocket frame on the client connection, in order: opcode and unmasked payload.
    pub frames: Vec<(u8, Vec<u8>)>,
    /// The `Sec-WebSocket-Accept` value of the response.
    pub accept: String,
}

/// RFC 6455 §1.3's example key and its accept value.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGJzaZxOo+bq0=";

impl WsSession {
    /// An upgrade, a 101, masked binary and Base64 text frames with the bytes they carry to
    /// the target, a ping and its pong, the target's reply, a `large`-byte frame written in
    /// 64 KiB pieces, two frames in one read, and the closing handshake.
    pub fn typical(ip: &str, large: usize) -> WsSession {
        let at = |port: u16| SocketAddr::new(ip.parse().unwrap(), port);
        let mut session = WsSession {
            client: at(52840),
            proxy: at(8080),
            proxy_out: at(40312),
            target: at(5900),
            chunks: Vec::new(),
            frames: Vec::new(),
            accept: SAMPLE_ACCEPT.into(),
        };
        let request = format!(
            "GET /{ip}:5900 HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: base64, binary\r\n\r\n"
        );
        session.push(Flow::ClientToProxy, request.into_bytes());
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {SAMPLE_ACCEPT}\r\nSec-WebSocket-Protocol: base64\r\n\r\n"
        );
        session.push(Flow::ProxyToClient, response.into_bytes());
        let key = [0x37, 0xfa, 0x21, 0x3d];
        session.client_frame(BINARY, b"\x00\x01binary\xff".to_vec(), key);
        session.push(Flow::ProxyToTarget, b"\x00\x01binary\xff".to_vec());
        session.client_frame(TEXT, b"aGVsbG8gdGFyZ2V0".to_vec(), key);
        session.push(Flow::ProxyToTarget, b"hello target".to_vec());
        session.client_frame(PING, b"are you there".to_vec(), [1, 2, 3, 4]);
        session.server_frame(PONG, b"are you there".to_vec());
        session.push(Flow::TargetToProxy, b"RFB 003.008\n".to_vec());
        session.server_frame(TEXT, b"UkZCIDAwMy4wMDgK".to_vec());
        let big: Vec<u8> = (0..large).map(|i| (i * 7 + i / 251) as u8).collect();
        session.push(Flow::TargetToProxy, big.clone());
        let big_frame = frame(BINARY, &big, None);
        for piece in big_frame.chunks(64 * 1024) {
            session.push(Flow::ProxyToClient, piece.to_vec());
        }
        session.frames.push((BINARY, big));
        let mut two = frame(BINARY, b"one", Some(key));
        two.extend(frame(BINARY, b"two", Some([9, 9, 9, 9])));
        session.push(Flow::ClientToProxy, two);
        session.frames.push((BINARY, b"one".to_vec()));
        session.frames.push((BINARY, b"two".to_vec()));
        session.push(Flow::ProxyToTarget, b"onetwo".to_vec());
        session.client_frame(CLOSE, close_payload(1000, "bye"), key);
        session.server_frame(CLOSE, close_payload(1000, "bye"));
        session
    }

    fn push(&mut self, flow: Flow, bytes: Vec<u8>) {
        self.chunks.push((flow, bytes));
    }

    fn client_frame(&mut self, opcode: u8, payload: Vec<u8>, key: [u8; 4]) {
        self.push(Flow::ClientToProxy, frame(opcode, &payload, Some(key)));
        self.frames.push((opcode, payload));
    }

    fn server_frame(&mut self, opcode: u8, payload: Vec<u8>) {
        self.push(Flow::ProxyToClient, frame(opcode, &payload, None));
        self.frames.push((opcode, payload));
    }

    /// Everything that crossed `flow`, concatenated.
    pub fn flow_bytes(&self, flow: Flow) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|(f, _)| *f == flow)
            .flat_map(|(_, b)| b.iter().copied())
            .collect()
    }
}

/// A fresh directory under the target dir's temp area, unique per call.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wsproxy-inspect-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Writes `bytes` to a fresh temp file and returns its path.
pub fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_dir("capture").join(name);
    std::fs::write(&path, bytes).expect("write the capture");
    path
}

/// Panics with a clear message if tshark is missing.
pub fn tshark_available_or_panic() {
    let ok = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "tshark is needed (Debian package tshark): run scripts/setup-test-deps.sh"
    );
}

/// Runs tshark on `file` and returns its standard output, failing on any error or warning.
pub fn tshark(file: &Path, args: &[&str]) -> String {
    let output = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run tshark");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tshark {args:?} failed: {stderr}");
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Running as user \"root\""))
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(complaints.is_empty(), "tshark complained: {complaints:?}");
    String::from_utf8(output.stdout).expect("tshark prints UTF-8")
}

/// `tshark -T fields`: one row per packet that passes the filter in `args`, one column per
/// field (repeated occurrences in one packet are joined with `,`).
pub fn tshark_fields(file: &Path, args: &[&str], fields: &[&str]) -> Vec<Vec<String>> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-T", "fields", "-E", "separator=\t", "-E", "occurrence=a"]);
    for field in fields {
        all.extend(["-e", field]);
    }
    tshark(file, &all)
        .lines()
        .map(|line| line.split('\t').map(str::to_string).collect())
        .collect()
}

/// `tshark -z follow,tcp,raw,N`: the bytes each way of TCP stream `stream`, as (from the
/// side that sent the first packet, from the other side).
pub fn follow_tcp_raw(file: &Path, stream: u32) -> (Vec<u8>, Vec<u8>) {
    let spec = format!("follow,tcp,raw,{stream}");
    let out = tshark(file, &["-q", "-z", &spec]);
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let body = out
        .lines()
        .skip_while(|l| !l.starts_with("Node 1:"))
        .skip(1)
        .take_while(|l| !l.starts_with("====="));
    for line in body {
        match line.strip_prefix('\t') {
            Some(hex) => second.extend(from_hex(hex)),
            None => first.extend(from_hex(line)),
        }
    }
    (first, second)
}

/// Decodes a hex string (`tshark` prints bytes fields that way; `:` separators allowed).
pub fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

/// Every WebSocket frame tshark dissects in `file` (with the extra `args`, e.g. a filter or
/// `-d`), in order: opcode and unmasked payload (`websocket.payload`'s bytes, which tshark
/// shows after unmasking and reassembly).
pub fn websocket_frames(file: &Path, args: &[&str]) -> Vec<(u8, Vec<u8>)> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-Y", "websocket", "-T", "json", "-x", "--no-duplicate-keys"]);
    let packets: serde_json::Value =
        serde_json::from_str(&tshark(file, &all)).expect("tshark prints JSON");
    let mut frames = Vec::new();
    for packet in packets.as_array().expect("a JSON array of packets") {
        let layer = &packet["_source"]["layers"]["websocket"];
        let in_packet = match layer {
            serde_json::Value::Array(frames) => frames.clone(),
            one => vec![one.clone()],
        };
        for frame in in_packet {
            let opcode = frame["websocket.opcode"].as_str().expect("an opcode");
            let payload = frame["websocket.payload_raw"][0].as_str().unwrap_or("");
            frames.push((opcode.parse().expect("a numeric opcode"), from_hex(payload)));
        }
    }
    frames
}
