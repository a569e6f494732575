//! Plain HTTP on the proxy port (issue 4): the built-in demo page and client library, a
//! `--web` directory with path traversal refused, `--no-web`, and the helpful 400 for a path
//! that names a target. Against the real binary.

mod common;

use std::io::{Read, Write};

use common::{Proxy, http_request};

fn get(proxy: &Proxy, method: &str, path: &str) -> common::HttpReply {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr);
    http_request(proxy.addr, request.as_bytes()).expect("an HTTP answer")
}

fn header<'a>(reply: &'a common::HttpReply, name: &str) -> Option<&'a str> {
    reply
        .head
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn builtin_demo_page_and_client_library_are_served() {
    let proxy = Proxy::start(&[]);
    let page = get(&proxy, "GET", "/");
    assert_eq!(page.head.status, 200);
    assert!(
        header(&page, "Content-Type")
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(
        header(&page, "Content-Length").unwrap(),
        page.body.len().to_string()
    );
    assert!(
        page.body_text().contains("wsproxy.js"),
        "the page uses the library"
    );
    for path in ["/wsproxy.js", "/wsproxy.mjs"] {
        let js = get(&proxy, "GET", path);
        assert_eq!(js.head.status, 200, "{path}");
        assert!(
            header(&js, "Content-Type").unwrap().contains("javascript"),
            "{path}"
        );
    }
    let dts = get(&proxy, "GET", "/wsproxy.d.ts");
    assert_eq!(dts.head.status, 200);
    assert!(dts.body_text().contains("connect"));
}

#[test]
fn head_has_the_headers_but_no_body_and_other_methods_get_405() {
    let proxy = Proxy::start(&[]);
    // A HEAD response announces a length but has no body: read raw until the proxy closes.
    let mut conn = std::net::TcpStream::connect(proxy.addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!("HEAD /wsproxy.js HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr);
    conn.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty(), "HEAD must not send a body");
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap();
    assert_ne!(length, "0");
    let post = get(&proxy, "POST", "/");
    assert_eq!(post.head.status, 405);
    assert_eq!(header(&post, "Allow"), Some("GET, HEAD"));
    assert_eq!(get(&proxy, "GET", "/nothing-here").head.status, 404);
}

#[test]
fn a_path_naming_a_target_without_upgrade_gets_the_helpful_400() {
    let proxy = Proxy::start(&[]);
    let reply = get(&proxy, "GET", "/127.0.0.1:8000");
    assert_eq!(reply.head.status, 400);
    assert!(
        reply.body_text().contains("WebSocket"),
        "{}",
        reply.body_text()
    );
}

#[test]
fn web_dir_is_served_and_traversal_is_refused() {
    let base = std::env::temp_dir().join(format!("wsproxy-web-{}", std::process::id()));
    let root = base.join("root");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>mine</h1>").unwrap();
    std::fs::write(root.join("sub/app.css"), "body{}").unwrap();
    std::fs::write(base.join("secret.txt"), "do not serve").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("link.txt")).unwrap();

    let proxy = Proxy::start(&["--web", root.to_str().unwrap()]);
    let index = get(&proxy, "GET", "/");
    assert_eq!(
        (index.head.status, index.body_text().as_str()),
        (200, "<h1>mine</h1>")
    );
    let css = get(&proxy, "GET", "/sub/app.css");
    assert_eq!(css.head.status, 200);
    assert!(
        header(&css, "Content-Type")
            .unwrap()
            .starts_with("text/css")
    );
    for evil in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/link.txt",
    ] {
        let reply = get(&proxy, "GET", evil);
        assert!(
            matches!(reply.head.status, 400 | 403 | 404),
            "{evil}: {}",
            reply.head.status
        );
        assert!(!reply.body_text().contains("do not serve"), "{evil} leaked");
    }
    drop(proxy);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn no_web_serves_nothing() {
    let proxy = Proxy::start(&["--no-web"]);
    assert_ne!(get(&proxy, "GET", "/wsproxy.js").head.status, 200);
    assert_ne!(get(&proxy, "GET", "/").head.status, 200);
}

/// The host a browser would go to for `location`, found by Node's WHATWG URL parser (the
/// one browsers implement), resolving against a page of this proxy.
fn browser_host(locations: &[String]) -> Vec<String> {
    let list = format!(
        "[{}]",
        locations
            .iter()
            .map(|l| format!("{l:?}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let out = std::process::Command::new("node")
        .args([
            "-e",
            "for (const l of JSON.parse(process.argv[1])) console.log(new URL(l, 'http://proxy.test:8080/page').host)",
            &list,
        ])
        .output()
        .expect("node (installed by scripts/setup-test-deps.sh) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn directory_redirects_never_send_the_browser_to_another_host() {
    let base = std::env::temp_dir().join(format!("wsproxy-redirect-{}", std::process::id()));
    for dir in ["assets", "evil.example", "a b"] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
        std::fs::write(base.join(dir).join("index.html"), "x").unwrap();
    }
    let proxy = Proxy::start(&["--web", base.to_str().unwrap()]);
    let cases = [
        ("//assets", "/assets/"),
        ("///assets", "/assets/"),
        ("/.//assets", "/assets/"),
        ("//./assets", "/assets/"),
        ("/%2e//assets", "/assets/"),
        ("//%61ssets", "/assets/"),
        ("/assets", "/assets/"),
        ("//assets?next=//evil.example", "/assets/"),
        ("http://proxy.test//assets", "/assets/"),
        ("//evil.example", "/evil.example/"),
        ("/.%2f/evil.example", "/evil.example/"),
        ("//a%20b", "/a%20b/"),
    ];
    let mut locations = Vec::new();
    for (path, expected) in cases {
        let reply = get(&proxy, "GET", path);
        if path == "/.%2f/evil.example" {
            // An encoded slash inside a segment is refused outright.
            assert_eq!(reply.head.status, 404, "{path}");
            continue;
        }
        assert_eq!(reply.head.status, 301, "{path}");
        let location = header(&reply, "Location").unwrap_or_default().to_string();
        assert_eq!(location, expected, "{path}");
        locations.push(location);
    }
    for host in browser_host(&locations) {
        assert_eq!(
            host, "proxy.test:8080",
            "a redirect left the proxy: {locations:?}"
        );
    }
    drop(proxy);
    std::fs::remove_dir_all(&base).unwrap();
}

#[test]
fn clients_that_never_read_a_large_file_do_not_keep_others_out() {
    let root = std::env::temp_dir().join(format!("wsproxy-web-big-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.bin"), vec![0x61u8; 32 << 20]).unwrap();
    std::fs::write(root.join("small.txt"), "still served").unwrap();
    let proxy = Proxy::start(&[
        "-v",
        "--web",
        root.to_str().unwrap(),
        "--max-connections",
        "5",
        "--stall-timeout",
        "1",
    ]);
    let started = std::time::Instant::now();
    // Five clients take every slot with a request for the big file, and never read.
    let stuck: Vec<std::net::TcpStream> = (0..5)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(proxy.addr).unwrap();
            socket2::SockRef::from(&s)
                .set_recv_buffer_size(16 * 1024)
                .unwrap();
            let request = format!("GET /big.bin HTTP/1.1\r\nHost: {}\r\n\r\n", proxy.addr);
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    // Someone else gets in once the stall limit drops them (503 until then).
    let reply = loop {
        let reply = get(&proxy, "GET", "/small.txt");
        if reply.head.status == 200 {
            break reply;
        }
        assert_eq!(reply.head.status, 503, "{}", reply.body_text());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the non-reading clients kept every slot"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let took = started.elapsed();
    eprintln!("a new client was served {took:?} after five non-reading ones took the slots");
    assert_eq!(reply.body_text(), "still served");
    assert!(took >= std::time::Duration::from_millis(900), "{took:?}");
    assert!(
        proxy
            .wait_for_log(std::time::Duration::from_secs(3), |l| l
                .contains("the client stopped reading"))
            .is_some(),
        "{}",
        proxy.logs_text()
    );
    drop(stuck);
    drop(proxy);
    std::fs::remove_dir_all(&root).unwrap();
}
