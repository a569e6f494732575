//! Tests of `--record`: real files in real directories, read back by tshark; the cap; a
//! read-only directory (a real read-only mount, in a mount namespace of its own); a disk that
//! is slower than the tunnel (a pipe nobody reads) and one that is full (`/dev/full`).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;
use crate::inspect::test_support::{
    WsSession, follow_tcp_raw, temp_dir, tshark_available_or_panic, tshark_fields, websocket_frames,
};

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Feeds a session to a recording the way the taps would: the handshake before the tunnel is
/// known, then `start`, then the rest; then `more` bytes from the target, and the ends.
fn record_session(dir: &RecordDir, id: u64, session: &WsSession, more: &[&[u8]]) -> Arc<Recording> {
    let recording = dir.begin(id, session.client, session.proxy);
    let mut started = false;
    for (flow, bytes) in &session.chunks {
        if !flow.is_client_side() && !started {
            let leg = TargetLeg {
                proxy: session.proxy_out,
                target: session.target,
                connected_at: SystemTime::now(),
            };
            recording.start(&format!("{}", session.target), Some(leg));
            started = true;
        }
        recording.bytes(*flow, bytes);
    }
    for bytes in more {
        recording.bytes(Flow::TargetToProxy, bytes);
    }
    for flow in Flow::ALL {
        recording.finished(flow);
    }
    recording
}

#[test]
fn a_recorded_tunnel_is_one_file_that_tshark_reads_back() {
    tshark_available_or_panic();
    let dir = RecordDir::open(temp_dir("record"), DEFAULT_MAX_BYTES).unwrap();
    let session = WsSession::typical("127.0.0.1", 300_000);
    let recording = record_session(&dir, 7, &session, &[]);
    assert!(recording.is_recording());
    let path = recording.finish().expect("a file was created");

    assert_eq!(files_in(dir.path()), vec![path.clone()]);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(
        name.ends_with("-c7-127.0.0.1_52840-to-127.0.0.1_5900.pcapng"),
        "{name}"
    );
    let decode_as = format!("tcp.port=={},http", session.proxy.port());
    let status = tshark_fields(
        &path,
        &["-d", &decode_as, "-Y", "http.response"],
        &["http.response.code"],
    );
    assert_eq!(status, vec![vec!["101".to_string()]]);
    assert_eq!(websocket_frames(&path, &["-d", &decode_as]), session.frames);
    let (to_target, from_target) = follow_tcp_raw(&path, 1);
    assert_eq!(to_target, session.flow_bytes(Flow::ProxyToTarget));
    assert_eq!(from_target, session.flow_bytes(Flow::TargetToProxy));
    // The interfaces are named, so Wireshark shows which connection a packet belongs to.
    let interfaces = tshark_fields(
        &path,
        &["-Y", "tcp.flags.syn == 1 && tcp.flags.ack == 0"],
        &["frame.interface_name"],
    );
    assert_eq!(
        interfaces,
        vec![vec!["client".to_string()], vec!["target".to_string()]]
    );
}

#[test]
fn the_cap_stops_recording_and_the_file_holds_exactly_the_cap() {
    tshark_available_or_panic();
    let cap = 50_000;
    let dir = RecordDir::open(temp_dir("cap"), cap).unwrap();
    let session = WsSession::typical("127.0.0.1", 10);
    let before: usize = session.chunks.iter().map(|(_, b)| b.len()).sum();
    assert!((before as u64) < cap, "the session alone is under the cap");
    let more = [[0x55u8; 1000]; 100];
    let more: Vec<&[u8]> = more.iter().map(|m| &m[..]).collect();
    let recording = record_session(&dir, 8, &session, &more);
    assert!(!recording.is_recording());
    let why = recording.stopped_because().unwrap();
    assert!(why.contains("--record-max-bytes (50000 bytes)"), "{why}");
    assert_eq!(recording.recorded_bytes(), cap);
    let path = recording.finish().unwrap();

    let lengths = tshark_fields(&path, &[], &["tcp.len"]);
    let total: u64 = lengths.iter().map(|r| r[0].parse::<u64>().unwrap()).sum();
    assert_eq!(total, cap, "recorded payload is exactly the cap");
    let (_, from_target) = follow_tcp_raw(&path, 1);
    let session_from_target = session.flow_bytes(Flow::TargetToProxy).len();
    assert_eq!(
        from_target.len() as u64,
        cap - before as u64 + session_from_target as u64
    );
}

#[test]
fn a_connection_that_never_becomes_a_tunnel_leaves_no_file() {
    let dir = RecordDir::open(temp_dir("plain"), DEFAULT_MAX_BYTES).unwrap();
    let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let recording = dir.begin(1, client, "127.0.0.1:8080".parse().unwrap());
    recording.bytes(Flow::ClientToProxy, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    recording.bytes(Flow::ProxyToClient, b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(recording.finish(), None);
    assert!(files_in(dir.path()).is_empty());

    // Nor does one that sends more than a handshake's worth before it is a tunnel.
    let recording = dir.begin(2, client, "127.0.0.1:8080".parse().unwrap());
    recording.bytes(Flow::ClientToProxy, &vec![b'x'; PENDING_BYTES + 1]);
    assert!(!recording.is_recording());
    assert_eq!(recording.start("example.com:80", None), None);
    assert_eq!(recording.finish(), None);
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn a_missing_directory_or_a_file_is_refused_at_start() {
    let base = temp_dir("missing");
    let err = RecordDir::open(base.join("nope"), DEFAULT_MAX_BYTES).unwrap_err();
    assert!(err.ends_with("nope: no such directory"), "{err}");
    std::fs::write(base.join("file"), b"").unwrap();
    let err = RecordDir::open(base.join("file"), DEFAULT_MAX_BYTES).unwrap_err();
    assert!(err.ends_with("file: not a directory"), "{err}");
    let err = RecordDir::open(&base, 0).unwrap_err();
    assert!(err.contains("--record-max-bytes"), "{err}");
}

/// Root may write anywhere permissions say it may not, so the read-only directory is a real
/// read-only mount. The test runs itself again inside `unshare --mount`, where it mounts a
/// read-only tmpfs on a fresh directory; the mount vanishes with that process.
#[test]
fn a_read_only_directory_is_refused_at_start() {
    const INSIDE: &str = "WSPROXY_TEST_READ_ONLY_DIR";
    if let Ok(dir) = std::env::var(INSIDE) {
        let err = RecordDir::open(&dir, DEFAULT_MAX_BYTES).unwrap_err();
        assert!(
            err.contains("cannot create files there") && err.contains("Read-only file system"),
            "{err}"
        );
        return;
    }
    let dir = temp_dir("read-only");
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o ro tmpfs "$0" && exec "$1" --exact "$2" --test-threads 1"#)
        .arg(&dir)
        .arg(&exe)
        .arg("inspect::recorder::tests::a_read_only_directory_is_refused_at_start")
        .env(INSIDE, &dir)
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "inside the mount namespace: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Outside, the directory was never mounted over and is writable.
    assert!(RecordDir::open(&dir, DEFAULT_MAX_BYTES).is_ok());
}

/// A "disk" that takes nothing: a pipe nobody reads. The writer thread blocks on it for real;
/// the producer must go on at full speed, and recording must stop with one reason.
#[test]
fn a_disk_slower_than_the_tunnel_stops_recording_and_never_blocks_the_pumps() {
    let dir = RecordDir::open(temp_dir("slow"), u64::MAX).unwrap();
    let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let recording = dir.begin(3, client, "127.0.0.1:8080".parse().unwrap());
    let (reader, writer) = std::io::pipe().unwrap();
    recording
        .start_into(Box::new(writer), "slow", None)
        .unwrap();

    let (done, finished) = mpsc::channel();
    let producer = {
        let recording = Arc::clone(&recording);
        thread::spawn(move || {
            let chunk = vec![0xAB; 1 << 20];
            let started = Instant::now();
            for _ in 0..256 {
                recording.bytes(Flow::ClientToProxy, &chunk);
            }
            done.send(started.elapsed()).unwrap();
        })
    };
    let elapsed = finished
        .recv_timeout(Duration::from_secs(120))
        .expect("the producer never blocks on the disk");
    producer.join().unwrap();
    assert!(!recording.is_recording());
    let why = recording.stopped_because().unwrap();
    assert!(why.contains("the disk fell behind"), "{why}");
    let recorded = recording.recorded_bytes();
    assert!(
        recorded < 256 << 20,
        "stopped early: {recorded} bytes, {elapsed:?}"
    );
    // Let the writer thread fail on the closed pipe and end.
    drop(reader);
    recording.finish();
}

#[test]
fn a_full_disk_stops_recording_with_the_reason() {
    let dir = RecordDir::open(temp_dir("full"), u64::MAX).unwrap();
    let client: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let recording = dir.begin(4, client, "127.0.0.1:8080".parse().unwrap());
    let full = OpenOptions::new().write(true).open("/dev/full").unwrap();
    recording.start_into(Box::new(full), "full", None).unwrap();
    recording.bytes(Flow::ClientToProxy, b"GET / HTTP/1.1\r\n\r\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while recording.is_recording() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let why = recording.stopped_because().expect("recording stopped");
    assert!(why.contains("No space left on device"), "{why}");
    // The tunnel goes on: more bytes are simply not recorded.
    let recorded = recording.recorded_bytes();
    recording.bytes(Flow::ClientToProxy, b"more");
    assert_eq!(recording.recorded_bytes(), recorded);
    recording.finish();
}

#[test]
fn file_names_are_safe_whatever_the_client_asked_for() {
    let at = UNIX_EPOCH + Duration::from_millis(1_718_810_565_123);
    let v6: SocketAddr = "[::1]:5000".parse().unwrap();
    assert_eq!(
        file_name(at, 42, v6, "example.com:80"),
        "20240619T152245.123Z-c42-__1_5000-to-example.com_80.pcapng"
    );
    let hostile = file_name(at, 1, v6, "../../etc/<script>\n\u{202e}x y:80");
    assert!(!hostile.contains('/') && !hostile.contains('<') && !hostile.contains('\n'));
    assert!(hostile.chars().all(|c| c.is_ascii_graphic()), "{hostile}");
    assert_eq!(safe("..", 10), "_");
    assert_eq!(safe(&"a".repeat(500), 96).len(), 96);
}
