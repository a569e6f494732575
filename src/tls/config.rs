//! Certificates, keys and the two TLS configurations: [`TlsServer`] (our side of `wss://` and
//! `https://`, reloadable on SIGHUP) and [`TlsClient`] (our side towards `--tls-target`
//! targets). Both hand the actual handshake to [`super::handshake`].
//!
//! Certificates and keys are read from PEM files (RFC 7468). The chain is sent as the server's
//! `Certificate` message, whose first entry must be the leaf (RFC 8446 §4.4.2), so the file
//! lists the leaf first. The client sends SNI only for DNS names, never for IP addresses
//! (RFC 6066 §3), and checks IP-address names against the certificate's IP SANs.
//!
//! # Client certificates (`--client-ca FILE`, mutual TLS)
//!
//! With a client CA, the server sends a `CertificateRequest` (RFC 8446 §4.3.2) naming the CA's
//! subjects, and the client must answer with a `Certificate` message whose first entry is its
//! own certificate (§4.4.2), signed by that CA (directly, or through intermediates it sends
//! after it), and prove it holds the key (`CertificateVerify`, §4.4.3). rustls'
//! `WebPkiClientVerifier` checks the chain, the validity dates and the `clientAuth` extended
//! key usage. A client without a certificate, or with one from another CA, fails the
//! handshake: the server sends the alert (`certificate_required`, `unknown_ca`, §6.2) and
//! `accept` returns the reason ("peer sent no certificates", "invalid peer certificate:
//! UnknownIssuer"). Every certificate in the CA file is trusted; [`TlsServer::reload`] re-reads
//! it with the certificate and key.
//!
//! [`TlsServer::client_subject`] gives the verified client certificate's subject for the log,
//! via `x509-parser` (RFC 5280 §4.1.2.6), printed in the certificate's order
//! (`CN=alice, O=Example`), or its subject alternative names when the subject is empty
//! (§4.2.1.6 allows that). A CA can put any text in a subject: escape it for the log.
//!
//! How the proxy uses this: `--client-ca FILE` (which needs `--cert`/`--key`) builds the
//! server with `TlsServer::from_files(cert, key)?.with_client_ca(file)?`. In
//! `super::handshake`, where the `TlsInfo` of a finished handshake is built, a new field
//! `client_subject: TlsServer::client_subject(&conn)` carries the subject; the connection logs
//! it with the tunnel (and a failed handshake's reason, as today).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::handshake::handshake;
use super::{TlsReader, TlsWriter};
use crate::socket::SharedSocket;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Loading certificates and keys
// ---------------------------------------------------------------------------------------------

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

fn pem_error(path: &Path, what: &str, e: pem::Error) -> String {
    format!("{what} file {}: invalid PEM: {e}", path.display())
}

/// Every `CERTIFICATE` block of a PEM file, in order.
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, what, e))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} file {}: no `-----BEGIN CERTIFICATE-----` block found (expected PEM)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let data = read_file(path, "key")?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "key file {}: no private key found (expected PEM `PRIVATE KEY` (PKCS#8), \
             `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1))",
            path.display()
        ),
        e => pem_error(path, "key", e),
    })
}

fn load_server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = load_certs(cert, "certificate")?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
    };
    // Also checks that the key is usable and matches the leaf certificate.
    let config = builder.with_single_cert(chain, key_der).map_err(|e| {
        format!(
            "certificate {} and key {} cannot be used together: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// A verifier that requires a client certificate chaining to one in `path`.
fn client_verifier(path: &Path) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "client CA")? {
        roots.add(cert).map_err(|e| {
            format!(
                "client CA file {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| format!("client CA file {}: {e}", path.display()))
}

/// The subject of a certificate, for the log: its distinguished name in the certificate's
/// order, or its subject alternative names if the name is empty.
fn subject_of(der: &CertificateDer<'_>) -> Result<String, String> {
    let (_, cert) = X509Certificate::from_der(der.as_ref())
        .map_err(|e| format!("unreadable certificate: {e}"))?;
    let subject = cert.subject().to_string();
    if !subject.is_empty() {
        return Ok(subject);
    }
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>(),
        _ => Vec::new(),
    };
    Ok(if names.is_empty() {
        "(empty subject)".to_string()
    } else {
        format!("(empty subject) SAN {}", names.join(", "))
    })
}

// ---------------------------------------------------------------------------------------------
// Server and client
// ---------------------------------------------------------------------------------------------

/// The server side: the certificate files and the configuration new handshakes use.
pub struct TlsServer {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// `--client-ca`: client certificates are required and must chain to it.
    client_ca_path: Option<PathBuf>,
    config: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("client_ca", &self.client_ca_path)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). Errors name the file and what is wrong with it.
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsServer, String> {
        let config = load_server_config(cert, key, None)?;
        Ok(TlsServer {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            client_ca_path: None,
            config: RwLock::new(config),
        })
    }

    /// Requires every client to present a certificate that chains to one in `ca` (a PEM file
    /// of one or more CA certificates). Errors name the file and what is wrong with it.
    pub fn with_client_ca(self, ca: &Path) -> Result<TlsServer, String> {
        let config = load_server_config(&self.cert_path, &self.key_path, Some(ca))?;
        Ok(TlsServer {
            client_ca_path: Some(ca.to_path_buf()),
            config: RwLock::new(config),
            ..self
        })
    }

    /// Re-reads the files (on SIGHUP): certificate, key and client CA. New handshakes use the
    /// new ones; connections already established keep theirs. On error the previous
    /// configuration stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = load_server_config(
            &self.cert_path,
            &self.key_path,
            self.client_ca_path.as_deref(),
        )?;
        *self
            .config
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// The certificate file's path (for log lines).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The client CA file's path, if client certificates are required.
    pub fn client_ca_path(&self) -> Option<&Path> {
        self.client_ca_path.as_deref()
    }

    /// The subject of the certificate the client presented in the handshake of `conn` (the
    /// server side of a finished handshake), for the log; `None` without one. A certificate
    /// that cannot be parsed (it passed verification, so this is unexpected) is described
    /// instead.
    pub fn client_subject(conn: &Connection) -> Option<String> {
        let Connection::Server(server) = conn else {
            return None;
        };
        let leaf = server.peer_certificates()?.first()?;
        Some(subject_of(leaf).unwrap_or_else(|e| format!("({e})")))
    }

    /// Runs the server side of a TLS handshake on `socket`, which must not have been read
    /// from yet (peeking is fine), giving up at `deadline`. Returns the plaintext halves; the
    /// client's SNI name, protocol version and cipher suite are in [`TlsReader::info`].
    /// Leaves the socket without read or write timeouts.
    pub fn accept(
        &self,
        socket: SharedSocket,
        deadline: Instant,
    ) -> Result<(TlsReader, TlsWriter), String> {
        let config = Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let conn = ServerConnection::new(config).map_err(|e| format!("TLS setup failed: {e}"))?;
        handshake(Connection::Server(conn), socket, deadline, "client")
    }
}

/// The client side, for TLS targets (`--tls-target`).
pub struct TlsClient {
    /// `pub(super)` for the tests, which build clients with unusual configurations.
    pub(super) config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient").finish_non_exhaustive()
    }
}

impl TlsClient {
    /// Trusts the system's root certificates plus, if given, every certificate in `extra_ca`
    /// (a PEM file). Fails if the file is bad, or if no trusted root is left at all.
    pub fn new(extra_ca: Option<&Path>) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
        if let Some(path) = extra_ca {
            for cert in load_certs(path, "CA")? {
                roots.add(cert).map_err(|e| {
                    format!(
                        "CA file {}: not a usable CA certificate: {e}",
                        path.display()
                    )
                })?;
            }
        }
        if roots.is_empty() {
            let why = native
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(format!(
                "no trusted CA certificates for TLS targets: the system store is empty or \
                 unreadable{}{} and no CA file was given",
                if why.is_empty() { "" } else { ": " },
                why
            ));
        }
        Self::with_roots(roots)
    }

    /// Trusts exactly `roots` (tests, or a deployment without system roots).
    pub fn with_roots(roots: RootCertStore) -> Result<TlsClient, String> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// Runs the client side of a TLS handshake with the target on `socket`, sending SNI for
    /// `server_name` (a DNS name; IP addresses, bracketed or not, are verified against IP
    /// SANs and not sent as SNI) and verifying the certificate, giving up at `deadline`.
    pub fn connect(
        &self,
        socket: SharedSocket,
        server_name: &str,
        deadline: Instant,
    ) -> Result<(TlsReader, TlsWriter), String> {
        let bare = server_name
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(server_name);
        let name = ServerName::try_from(bare.to_string())
            .map_err(|e| format!("{server_name:?} cannot be checked against a certificate: {e}"))?;
        let conn = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        handshake(Connection::Client(conn), socket, deadline, "target")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::*;
    use std::io::{Read, Write};
    use std::thread;
    use std::time::Duration;

    use rcgen::KeyPair;
    use rustls::version::{TLS12, TLS13};

    #[test]
    fn reload_swaps_the_certificate_for_new_connections_only() {
        let pki = make_pki("reload", "First");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let first = client_for(&pki.ca_der);
        let ((mut cr, mut cw), (mut sr, mut sw)) = tls_pair(&server, &first, "localhost").unwrap();

        // Broken files: reload fails, the old certificate stays.
        std::fs::write(&pki.key, "not a key").unwrap();
        let err = server.reload().unwrap_err();
        assert!(err.contains(&pki.key.display().to_string()), "{err}");
        assert!(
            tls_pair(&server, &first, "localhost").is_ok(),
            "old config kept"
        );

        // A new CA and certificate.
        let (ca2, chain2, key2, _) = issue("Second");
        std::fs::write(&pki.cert, chain2).unwrap();
        std::fs::write(&pki.key, key2).unwrap();
        server.reload().unwrap();
        let second = client_for(&ca2);
        assert!(tls_pair(&server, &second, "localhost").is_ok());
        let err = tls_pair(&server, &first, "localhost").unwrap_err();
        assert!(err.contains("certificate"), "{err}");

        // The connection made before the reload still flows both ways.
        cw.write_all(b"still here").unwrap();
        assert_eq!(read_exactly(&mut sr, 10), b"still here");
        sw.write_all(b"yes").unwrap();
        assert_eq!(read_exactly(&mut cr, 3), b"yes");
        drop(pki.dir);
    }

    #[test]
    fn load_errors_name_the_file() {
        let pki = make_pki("errors", "Errors");
        let missing = pki.dir.path("missing.pem");
        let err = TlsServer::from_files(&missing, &pki.key).unwrap_err();
        assert!(
            err.contains("missing.pem") && err.contains("certificate"),
            "{err}"
        );
        let err = TlsServer::from_files(&pki.cert, &missing).unwrap_err();
        assert!(err.contains("missing.pem") && err.contains("key"), "{err}");
        // A key file in the certificate's place and vice versa.
        let err = TlsServer::from_files(&pki.key, &pki.key).unwrap_err();
        assert!(err.contains("no `-----BEGIN CERTIFICATE-----`"), "{err}");
        let err = TlsServer::from_files(&pki.cert, &pki.cert).unwrap_err();
        assert!(err.contains("no private key"), "{err}");
        // A key that does not belong to the certificate.
        let other = pki.dir.path("other.pem");
        std::fs::write(&other, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        let err = TlsServer::from_files(&pki.cert, &other).unwrap_err();
        assert!(err.contains("cannot be used together"), "{err}");
        // Bad PEM.
        let bad = pki.dir.path("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = TlsServer::from_files(&bad, &pki.key).unwrap_err();
        assert!(err.contains("bad.pem"), "{err}");
        // The CA file of a client.
        let err = TlsClient::new(Some(&missing)).unwrap_err();
        assert!(err.contains("missing.pem"), "{err}");
        assert!(TlsClient::new(Some(&pki.ca)).is_ok());
    }

    /// RSA (PKCS#1) and EC (SEC1) keys, made with the `openssl` command if it is installed.
    #[test]
    fn pkcs1_and_sec1_keys() {
        let dir = TempDir::new("keyformats");
        let run = |args: &[&str]| {
            std::process::Command::new("openssl")
                .args(args)
                .current_dir(&dir.0)
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !run(&["version"]) {
            eprintln!("openssl not installed; skipping the PKCS#1/SEC1 key test");
            return;
        }
        for (name, genkey) in [
            (
                "rsa",
                vec!["genrsa", "-traditional", "-out", "rsa.key", "2048"],
            ),
            (
                "ec",
                vec![
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    "ec.key",
                ],
            ),
        ] {
            assert!(run(&genkey), "openssl {genkey:?}");
            let key = dir.path(&format!("{name}.key"));
            let text = std::fs::read_to_string(&key).unwrap();
            let expected = if name == "rsa" {
                "RSA PRIVATE KEY"
            } else {
                "EC PRIVATE KEY"
            };
            assert!(
                text.contains(expected),
                "{name} key is not in the traditional form"
            );
            assert!(run(&[
                "req",
                "-new",
                "-x509",
                "-key",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
                "-addext",
                "subjectAltName=DNS:localhost",
                "-addext",
                "basicConstraints=critical,CA:FALSE",
            ]));
            let cert = dir.path(&format!("{name}.crt"));
            let server =
                TlsServer::from_files(&cert, &key).unwrap_or_else(|e| panic!("{name}: {e}"));
            let ca = CertificateDer::from_pem_file(&cert).unwrap();
            let ((mut cr, _cw), (_sr, mut sw)) =
                tls_pair(&server, &client_for(&ca), "localhost").unwrap();
            sw.write_all(name.as_bytes()).unwrap();
            assert_eq!(read_exactly(&mut cr, name.len()), name.as_bytes());
        }
    }

    #[test]
    fn client_verifies_the_target() {
        let pki = make_pki("verify", "Verify");
        let server = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        let client = client_for(&pki.ca_der);
        // IP-address names are checked against IP SANs.
        assert!(tls_pair(&server, &client, "127.0.0.1").is_ok());
        assert!(tls_pair(&server, &client, "[::1]").is_ok());
        // A name the certificate does not cover.
        let err = tls_pair(&server, &client, "example.com").unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        // A CA we do not trust.
        let (other_ca, ..) = issue("Other");
        let err = tls_pair(&server, &client_for(&other_ca), "localhost").unwrap_err();
        assert!(
            err.contains("UnknownIssuer") || err.contains("issuer"),
            "{err}"
        );
    }

    /// The server's side of a finished handshake with `client`, driven by rustls' own blocking
    /// `complete_io` with `server`'s current configuration, so that the connection can be
    /// inspected afterwards.
    fn server_connection_with(server: &TlsServer, client: &TlsClient) -> Connection {
        let (c, mut s) = tcp_pair();
        let client = TlsClient {
            config: Arc::clone(&client.config),
        };
        let connecting = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            client.connect(SharedSocket::new(c), "localhost", deadline)
        });
        let config = Arc::clone(&server.config.read().unwrap());
        let mut conn = ServerConnection::new(config).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut s).unwrap();
        }
        connecting.join().unwrap().unwrap();
        Connection::Server(conn)
    }

    /// A client that trusts `ca`, offers `versions` and has no certificate.
    fn client_without_cert(
        ca: &CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsClient {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsClient {
            config: Arc::new(config),
        }
    }

    /// The server's error for a refused client, and whether the client learned that it was
    /// refused (from its handshake in TLS 1.2; from its first read in TLS 1.3, where its side
    /// of the handshake ends before the server has checked the certificate).
    fn refused(server: &TlsServer, client: &TlsClient) -> (String, String) {
        let (client_side, server_side) = tls_outcomes(server, client, "localhost");
        let server_error = server_side.map(|_| ()).unwrap_err();
        let client_error = match client_side {
            Err(e) => e,
            Ok((mut reader, _writer)) => {
                let mut buf = [0u8; 16];
                match reader.read(&mut buf) {
                    Err(e) => e.to_string(),
                    Ok(n) => panic!("the refused client read {n} bytes"),
                }
            }
        };
        (server_error, client_error)
    }

    #[test]
    fn client_certificates_from_the_client_ca_only() {
        let pki = make_pki("mtls", "Server");
        let clients = ClientCa::new("Clients");
        let ca_file = pki.dir.path("clients.pem");
        std::fs::write(&ca_file, &clients.pem).unwrap();
        let server = TlsServer::from_files(&pki.cert, &pki.key)
            .unwrap()
            .with_client_ca(&ca_file)
            .unwrap();
        assert_eq!(server.client_ca_path(), Some(ca_file.as_path()));
        let elsewhere = ClientCa::new("Elsewhere");

        for versions in [&[&TLS13][..], &[&TLS12][..]] {
            let v = format!("{:?}", versions[0].version);
            // A certificate from the CA: the handshake passes, data flows both ways, and the
            // subject is read.
            let alice =
                client_with_cert(&pki.ca_der, clients.issue("alice", "Example Org"), versions);
            let ((mut cr, mut cw), (mut sr, mut sw)) =
                tls_pair(&server, &alice, "localhost").unwrap_or_else(|e| panic!("{v}: {e}"));
            cw.write_all(b"hello").unwrap();
            assert_eq!(read_exactly(&mut sr, 5), b"hello", "{v}");
            sw.write_all(b"hi").unwrap();
            assert_eq!(read_exactly(&mut cr, 2), b"hi", "{v}");
            let conn = server_connection_with(&server, &alice);
            assert_eq!(
                TlsServer::client_subject(&conn).as_deref(),
                Some("CN=alice, O=Example Org"),
                "{v}"
            );

            // No certificate.
            let (server_error, client_error) =
                refused(&server, &client_without_cert(&pki.ca_der, versions));
            assert!(
                server_error.contains("peer sent no certificates"),
                "{v}: {server_error}"
            );
            assert!(client_error.contains("alert"), "{v}: {client_error}");

            // A certificate from another CA.
            let mallory = client_with_cert(
                &pki.ca_der,
                elsewhere.issue("mallory", "Elsewhere"),
                versions,
            );
            let (server_error, client_error) = refused(&server, &mallory);
            assert!(
                server_error.contains("invalid peer certificate: UnknownIssuer"),
                "{v}: {server_error}"
            );
            assert!(client_error.contains("alert"), "{v}: {client_error}");
        }

        // Without --client-ca, no certificate is asked for, and none is seen.
        let plain = TlsServer::from_files(&pki.cert, &pki.key).unwrap();
        assert!(plain.client_ca_path().is_none());
        let conn = server_connection_with(&plain, &client_for(&pki.ca_der));
        assert_eq!(TlsServer::client_subject(&conn), None);
    }

    #[test]
    fn the_client_ca_is_reloaded_with_the_certificate() {
        let pki = make_pki("mtls-reload", "Server");
        let (first, second) = (ClientCa::new("First"), ClientCa::new("Second"));
        let ca_file = pki.dir.path("clients.pem");
        std::fs::write(&ca_file, &first.pem).unwrap();
        let server = TlsServer::from_files(&pki.cert, &pki.key)
            .unwrap()
            .with_client_ca(&ca_file)
            .unwrap();
        let from_first = client_with_cert(&pki.ca_der, first.issue("a", "First"), &[&TLS13]);
        let from_second = client_with_cert(&pki.ca_der, second.issue("b", "Second"), &[&TLS13]);
        assert!(tls_pair(&server, &from_first, "localhost").is_ok());
        assert!(tls_pair(&server, &from_second, "localhost").is_err());

        // A broken CA file: reload fails and the old one stays.
        std::fs::write(&ca_file, "not PEM").unwrap();
        let err = server.reload().unwrap_err();
        assert!(err.contains("clients.pem"), "{err}");
        assert!(tls_pair(&server, &from_first, "localhost").is_ok());

        // Both CAs in one file: both are trusted.
        std::fs::write(&ca_file, format!("{}{}", first.pem, second.pem)).unwrap();
        server.reload().unwrap();
        assert!(tls_pair(&server, &from_first, "localhost").is_ok());
        assert!(tls_pair(&server, &from_second, "localhost").is_ok());
    }

    #[test]
    fn bad_client_ca_files_say_what_is_wrong() {
        let pki = make_pki("mtls-bad", "Server");
        let with_ca = |ca: &Path| {
            TlsServer::from_files(&pki.cert, &pki.key)
                .unwrap()
                .with_client_ca(ca)
                .unwrap_err()
        };
        let missing = pki.dir.path("missing.pem");
        let err = with_ca(&missing);
        assert!(
            err.contains("client CA") && err.contains("missing.pem"),
            "{err}"
        );
        // A key instead of a certificate.
        let err = with_ca(&pki.key);
        assert!(
            err.contains("client CA") && err.contains("no `-----BEGIN CERTIFICATE-----`"),
            "{err}"
        );
        // Not PEM at all, broken Base64, and a certificate block that is not a certificate.
        for (name, text, says) in [
            ("empty.pem", "", "no `-----BEGIN CERTIFICATE-----`"),
            (
                "text.pem",
                "just some text\n",
                "no `-----BEGIN CERTIFICATE-----`",
            ),
            (
                "base64.pem",
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "invalid PEM",
            ),
            (
                "garbage.pem",
                "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
                "not a usable CA certificate",
            ),
        ] {
            let file = pki.dir.path(name);
            std::fs::write(&file, text).unwrap();
            let err = with_ca(&file);
            assert!(err.contains(name) && err.contains(says), "{name}: {err}");
        }
        // A good file works.
        let clients = pki.dir.path("clients.pem");
        std::fs::write(&clients, ClientCa::new("Clients").pem).unwrap();
        assert!(
            TlsServer::from_files(&pki.cert, &pki.key)
                .unwrap()
                .with_client_ca(&clients)
                .is_ok()
        );
    }

    #[test]
    fn subjects_of_unusual_certificates() {
        let pki = make_pki("mtls-subject", "Server");
        let clients = ClientCa::new("Clients");
        let ca_file = pki.dir.path("clients.pem");
        std::fs::write(&ca_file, &clients.pem).unwrap();
        let server = TlsServer::from_files(&pki.cert, &pki.key)
            .unwrap()
            .with_client_ca(&ca_file)
            .unwrap();
        // An empty subject: the SAN stands in.
        let san_only = client_with_cert(
            &pki.ca_der,
            clients.issue_san_only("alice@example.com"),
            &[&TLS13],
        );
        let conn = server_connection_with(&server, &san_only);
        assert_eq!(
            TlsServer::client_subject(&conn).as_deref(),
            Some("(empty subject) SAN RFC822Name(alice@example.com)")
        );
        // Text a CA may put in a subject comes through as it is (the log escapes it).
        let odd = client_with_cert(
            &pki.ca_der,
            clients.issue("eve, \"CN=admin\"", "Ünïcode"),
            &[&TLS13],
        );
        let subject = TlsServer::client_subject(&server_connection_with(&server, &odd)).unwrap();
        assert!(
            subject.contains("Ünïcode") && subject.contains("CN=admin"),
            "{subject}"
        );
        // Not a certificate at all.
        let err =
            subject_of(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])).unwrap_err();
        assert!(err.contains("unreadable certificate"), "{err}");
    }
}
