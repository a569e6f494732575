//! Test scaffolding shared by the `tls` unit tests: a throwaway test PKI (a CA and a server
//! certificate it signed), a CA for client certificates and clients that present one,
//! loopback TCP and TLS pairs, and data helpers.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::{TlsClient, TlsReader, TlsServer, TlsWriter};
use crate::socket::SharedSocket;

/// A throwaway directory under the system temp dir, removed on drop.
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new(tag: &str) -> TempDir {
        use std::sync::atomic::AtomicUsize;
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wsproxy-tls-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA and a server certificate it signed, for localhost / 127.0.0.1 / ::1.
pub(super) struct Pki {
    pub(super) dir: TempDir,
    pub(super) ca_der: CertificateDer<'static>,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
    pub(super) ca: PathBuf,
}

pub(super) fn make_pki(tag: &str, org: &str) -> Pki {
    let dir = TempDir::new(tag);
    let (ca_der, cert_pem, key_pem, ca_pem) = issue(org);
    let (cert, key, ca) = (
        dir.path("cert.pem"),
        dir.path("key.pem"),
        dir.path("ca.pem"),
    );
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    std::fs::write(&ca, ca_pem).unwrap();
    Pki {
        dir,
        ca_der,
        cert,
        key,
        ca,
    }
}

/// A self-signed CA: (its certificate, the issuer that signs with it).
fn make_ca(org: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{org} test CA"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    (ca_cert, Issuer::new(ca_params, ca_key))
}

/// (CA DER, server chain PEM, server key PEM (PKCS#8), CA PEM).
pub(super) fn issue(org: &str) -> (CertificateDer<'static>, String, String, String) {
    let (ca_cert, issuer) = make_ca(org);

    let mut params =
        CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    // The chain: leaf, then the CA (servers usually send intermediates; harmless here).
    let chain = format!("{}{}", cert.pem(), ca_cert.pem());
    (
        ca_cert.der().clone(),
        chain,
        key.serialize_pem(),
        ca_cert.pem(),
    )
}

/// A CA for client certificates (`--client-ca`), and the certificates it issues.
pub(super) struct ClientCa {
    /// The CA certificate, PEM.
    pub(super) pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A client certificate chain (leaf only) and its key.
pub(super) type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

impl ClientCa {
    pub(super) fn new(org: &str) -> ClientCa {
        let (cert, issuer) = make_ca(org);
        ClientCa {
            pem: cert.pem(),
            issuer,
        }
    }

    /// A client certificate for `common_name` (with `clientAuth` usage), signed by this CA.
    pub(super) fn issue(&self, common_name: &str, org: &str) -> ClientIdentity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A client certificate with an empty subject and only an e-mail SAN.
    pub(super) fn issue_san_only(&self, email: &str) -> ClientIdentity {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> ClientIdentity {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }
}

/// A client that trusts `ca` and presents `identity` when asked, offering only `versions`.
pub(super) fn client_with_cert(
    ca: &CertificateDer<'static>,
    identity: ClientIdentity,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsClient {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let (chain, key) = identity;
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    TlsClient {
        config: Arc::new(config),
    }
}

pub(super) fn client_for(ca: &CertificateDer<'static>) -> TlsClient {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    TlsClient::with_roots(roots).unwrap()
}

fn soon(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// A loopback TCP pair: (client side, server side).
pub(super) fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

pub(super) type Halves = (TlsReader, TlsWriter);

/// A TLS connection over loopback: (client halves, server halves).
pub(super) fn tls_pair(
    server: &TlsServer,
    client: &TlsClient,
    name: &str,
) -> Result<(Halves, Halves), String> {
    let (client_side, server_side) = tls_outcomes(server, client, name);
    Ok((client_side?, server_side?))
}

/// Both sides' results of one TLS handshake over loopback: (client, server). In TLS 1.3 the
/// client is done before the server has checked its certificate, so a refused client
/// certificate shows on the server side only.
pub(super) fn tls_outcomes(
    server: &TlsServer,
    client: &TlsClient,
    name: &str,
) -> (Result<Halves, String>, Result<Halves, String>) {
    let (c, s) = tcp_pair();
    let (client_sock, server_sock) = (SharedSocket::new(c), SharedSocket::new(s));
    let accepting = {
        // TlsServer is not Clone; run the client handshake in the thread instead.
        let client = TlsClient {
            config: Arc::clone(&client.config),
        };
        let name = name.to_string();
        thread::spawn(move || client.connect(client_sock, &name, soon(10)))
    };
    let server_side = server.accept(server_sock, soon(10));
    let client_side = accepting.join().unwrap();
    (client_side, server_side)
}

pub(super) fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub(super) fn read_exactly(reader: &mut TlsReader, n: usize) -> Vec<u8> {
    let mut got = Vec::with_capacity(n);
    let mut buf = vec![0u8; 20_000];
    while got.len() < n {
        let k = reader.read(&mut buf).expect("read");
        assert_ne!(k, 0, "unexpected EOF after {} of {n} bytes", got.len());
        got.extend_from_slice(&buf[..k]);
    }
    got
}

/// Writes `data` in uneven chunks.
pub(super) fn write_chunks(writer: &mut TlsWriter, data: &[u8]) {
    let mut i = 0;
    let mut step = 1;
    while i < data.len() {
        let end = data.len().min(i + step);
        writer.write_all(&data[i..end]).expect("write");
        i = end;
        step = (step * 7 + 3) % 70_000 + 1;
    }
}
