//! Certificates, keys and the two TLS configurations: [`TlsServer`] (our side of `wss://` and
//! `https://`, reloadable on SIGHUP) and [`TlsClient`] (our side towards `--tls-target`
//! targets). Both hand the actual handshake to [`super::handshake`].
//!
//! Certificates and keys are read from PEM files (RFC 7468). The chain is sent as the server's
//! `Certificate` message, whose first entry must be the leaf (RFC 8446 §4.4.2), so the file
//! lists the leaf first. The client sends SNI only for DNS names, never for IP addresses
//! (RFC 6066 §3), and checks IP-address names against the certificate's IP SANs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

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

fn load_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain = load_certs(cert, "certificate")?;
    let key_der = load_key(key)?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_no_client_auth()
        // Also checks that the key is usable and matches the leaf certificate.
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "certificate {} and key {} cannot be used together: {e}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// Server and client
// ---------------------------------------------------------------------------------------------

/// The server side: the certificate files and the configuration new handshakes use.
pub struct TlsServer {
    cert_path: PathBuf,
    key_path: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServer")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl TlsServer {
    /// Loads a PEM certificate chain (leaf first) and its PEM private key (PKCS#8, PKCS#1 or
    /// SEC1). Errors name the file and what is wrong with it.
    pub fn from_files(cert: &Path, key: &Path) -> Result<TlsServer, String> {
        let config = load_server_config(cert, key)?;
        Ok(TlsServer {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            config: RwLock::new(config),
        })
    }

    /// Re-reads both files (on SIGHUP). New handshakes use the new certificate; connections
    /// already established keep theirs. On error the previous configuration stays in use.
    pub fn reload(&self) -> Result<(), String> {
        let config = load_server_config(&self.cert_path, &self.key_path)?;
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
    use std::io::Write;

    use rcgen::KeyPair;

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
}
