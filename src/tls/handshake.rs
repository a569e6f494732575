//! The TLS handshake (RFC 8446 §4; §2 gives the overview), on one thread, before the connection is
//! split into its two halves.
//!
//! [`handshake`] drives a `rustls::Connection` (client or server side) over the socket until the
//! handshake is complete, with the socket's timeouts set to the time left until the caller's
//! deadline. On bad input it sends the alert rustls queued (RFC 8446 §6.2), best effort, and
//! returns the reason. On success it hands the connection, and any ciphertext already read past
//! the handshake, to [`super::stream::split`].

use std::io::{self, Read};
use std::time::{Duration, Instant};

use rustls::Connection;

use super::TlsInfo;
use super::stream::{READ_BUF, TlsReader, TlsWriter, drain, split, write_out};
use crate::socket::SharedSocket;

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Runs a handshake on `socket` for `conn` (which the caller created for its side), giving up
/// at `deadline`; `peer` ("client" or "target") names the other side in error messages. Leaves
/// the socket without read or write timeouts.
pub(super) fn handshake(
    mut conn: Connection,
    socket: SharedSocket,
    deadline: Instant,
    peer: &str,
) -> Result<(TlsReader, TlsWriter), String> {
    let started = Instant::now();
    let mut buf = vec![0u8; READ_BUF];
    let (mut start, mut end) = (0usize, 0usize);
    let mut out = Vec::new();
    let stream = &*socket.0;

    let time_left = |doing: &str| -> Result<Duration, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(format!(
                "TLS handshake with the {peer} not finished after {:.1} s ({doing})",
                started.elapsed().as_secs_f64()
            ))
        } else {
            Ok(left)
        }
    };

    let result: Result<(), String> = (|| {
        loop {
            // Send whatever rustls wants to send (our flight, tickets, or an alert).
            if conn.wants_write() {
                let left = time_left("sending")?;
                let _ = stream.set_write_timeout(Some(left));
                drain(&mut conn, &mut out).map_err(|e| format!("TLS: {e}"))?;
                write_out(&socket, &mut out).map_err(|e| {
                    if is_timeout(&e) {
                        format!("TLS handshake with the {peer} stalled: it does not read")
                    } else {
                        format!("TLS handshake with the {peer} failed while sending: {e}")
                    }
                })?;
            }
            if !conn.is_handshaking() {
                return Ok(());
            }
            if start == end {
                let left = time_left("waiting for the peer")?;
                let _ = stream.set_read_timeout(Some(left));
                let n = loop {
                    match (&*stream).read(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) if is_timeout(&e) => {
                            return Err(format!(
                                "TLS handshake with the {peer} not finished after {:.1} s \
                                 (it stalled)",
                                started.elapsed().as_secs_f64()
                            ));
                        }
                        Err(e) => {
                            return Err(format!("TLS handshake with the {peer} failed: {e}"));
                        }
                    }
                };
                if n == 0 {
                    return Err(format!(
                        "the {peer} closed the connection during the TLS handshake"
                    ));
                }
                (start, end) = (0, n);
            }
            let mut pending = &buf[start..end];
            let fed = conn
                .read_tls(&mut pending)
                .map_err(|e| format!("TLS handshake with the {peer} failed: {e}"))?;
            if fed == 0 {
                return Err(format!(
                    "TLS handshake with the {peer} failed: unusable input"
                ));
            }
            start += fed;
            if let Err(e) = conn.process_new_packets() {
                // Tell the peer why (best effort), then give up.
                if drain(&mut conn, &mut out).is_ok()
                    && let Ok(left) = time_left("sending an alert")
                {
                    let _ = stream.set_write_timeout(Some(left.min(Duration::from_secs(1))));
                    let _ = write_out(&socket, &mut out);
                }
                return Err(format!("TLS handshake with the {peer} failed: {e}"));
            }
        }
    })();
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(None);
    result?;

    let info = TlsInfo {
        server_name: match &conn {
            Connection::Server(server) => server.server_name().map(str::to_string),
            Connection::Client(_) => None,
        },
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_else(|| "TLS".into()),
        cipher_suite: conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "?".into()),
    };
    out.clear();
    Ok(split(conn, socket, info, out, buf, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::*;
    use crate::tls::{TlsClient, TlsServer};
    use std::io::Write;
    use std::net::{Shutdown, TcpStream};
    use std::sync::{Arc, mpsc};
    use std::thread;

    use rustls::{ClientConfig, RootCertStore};

    /// How an `accept` ended, and how long it took.
    type Outcome = (Result<(), String>, Duration);

    /// Starts `accept` on the server side of a fresh TCP pair; returns the raw client socket
    /// and a receiver for the outcome and how long it took.
    fn accept_raw(
        server: Arc<TlsServer>,
        deadline: Duration,
    ) -> (TcpStream, mpsc::Receiver<Outcome>) {
        let (client, s) = tcp_pair();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let started = Instant::now();
            let result = server
                .accept(SharedSocket::new(s), Instant::now() + deadline)
                .map(|_| ());
            let _ = tx.send((result, started.elapsed()));
        });
        (client, rx)
    }

    #[test]
    fn bad_handshakes_fail_cleanly() {
        let pki = make_pki("bad", "Bad");
        let server = Arc::new(TlsServer::from_files(&pki.cert, &pki.key).unwrap());
        let wait = Duration::from_secs(10);

        // A truncated ClientHello, then EOF.
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        c.write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let (result, _) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(
            err.contains("closed the connection during the TLS handshake"),
            "{err}"
        );

        // Garbage after 0x16: an error, and the connection is closed.
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x40];
        junk.extend(pattern(9, 64));
        c.write_all(&junk).unwrap();
        let (result, _) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(
            err.contains("TLS handshake with the client failed"),
            "{err}"
        );
        c.set_read_timeout(Some(wait)).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest); // EOF (or a reset), not a hang

        // A well-framed but undecodable ClientHello: rustls answers with a decode_error alert
        // (RFC 8446 §6.2), which we send before giving up.
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        c.write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
        ])
        .unwrap();
        let (result, _) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(
            err.contains("TLS handshake with the client failed"),
            "{err}"
        );
        c.set_read_timeout(Some(wait)).unwrap();
        let mut alert = Vec::new();
        let _ = c.read_to_end(&mut alert);
        assert_eq!(
            alert.first(),
            Some(&0x15),
            "a TLS alert record is sent ({err}): {alert:?}"
        );

        // A huge record length (not a handshake we will buffer).
        let (mut c, rx) = accept_raw(Arc::clone(&server), wait);
        c.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0x01]).unwrap();
        drop(c);
        let (result, _) = rx.recv_timeout(wait).unwrap();
        assert!(result.is_err());

        // A stalled handshake: three bytes, then nothing. The deadline ends it.
        let (mut c, rx) = accept_raw(Arc::clone(&server), Duration::from_millis(300));
        c.write_all(&[0x16, 0x03, 0x01]).unwrap();
        let (result, took) = rx.recv_timeout(wait).unwrap();
        let err = result.unwrap_err();
        assert!(err.contains("not finished"), "{err}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
        drop(c);

        // A client that offers nothing the server can use: TLS 1.2 with only RSA suites,
        // while the server's key is ECDSA.
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let provider = rustls::crypto::CryptoProvider {
            cipher_suites: vec![
                rustls::crypto::ring::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ],
            ..rustls::crypto::ring::default_provider()
        };
        let config = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let odd = TlsClient {
            config: Arc::new(config),
        };
        let err = tls_pair(&server, &odd, "localhost").unwrap_err();
        assert!(err.contains("failed"), "{err}");

        // The server still works for a normal client afterwards.
        assert!(tls_pair(&server, &client_for(&pki.ca_der), "localhost").is_ok());
    }
}
