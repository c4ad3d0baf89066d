//! Mutual TLS between members: what a node presents, whom it trusts, and the two ends that use
//! them (the peer listener's handshake in [`crate::connections`], the outbound channels in
//! [`crate::network::PeerChannels`]).
//!
//! The trust model is a cluster CA: a member is whoever holds a key whose certificate the CA
//! signed (`--tls-ca`). Every node presents its own certificate (`--tls-cert`, `--tls-key`) both
//! as a server (on the peer listener) and as a client (on every channel it opens to a peer), and
//! accepts the other side only if that side's certificate chains to the CA. Outbound, the peer's
//! certificate must also name the host dialled (an IP or DNS subject alternative name), as
//! anywhere in TLS; inbound, any certificate the CA signed for client use is a member, whatever
//! its name: the CA is the membership's gatekeeper, the Raft membership says which members vote.
//!
//! Invariants:
//! * With TLS configured, nothing reaches a peer-listener service from a connection whose
//!   handshake did not verify a client certificate against the CA: a plaintext connection, one
//!   without a certificate and one with a certificate from another CA all end in the handshake,
//!   before any HTTP/2 frame, let alone a gRPC message, is read.
//! * Key material is read here and handed to rustls; it is never formatted. Errors about a key
//!   file name the file and what is wrong with it, never its contents.
//! * rustls only, with the `ring` provider chosen explicitly (no process-wide default to race
//!   over, no OpenSSL).
//!
//! The client-facing ports (the gRPC client listener and the Redis port) use the same node
//! certificate as servers ([`ClientTls`]) but ask clients for none: clients verify the node
//! against the cluster CA, and authenticate themselves with a token ([`crate::auth`]).
//!
//! Not here yet: client certificates mapped to roles, certificate reloading, revocation lists.

pub mod cert;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// What loading, checking or making certificates can fail with. No variant carries key bytes.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {}: {source}", path.display())]
    Read {
        /// Which file (`CA certificate`, `node certificate`, `node key`).
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("the {what} {} holds no PEM certificate ({why})", path.display())]
    NoCertificate { what: &'static str, path: PathBuf, why: String },
    /// A key file holds no private key rustls can use (its contents are never shown).
    #[error("the node key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    /// The node's own certificate does not chain to the CA it was told to trust: it could
    /// never talk to the other members.
    #[error("the node certificate {} is not signed by the CA in {}: {why}", cert.display(), ca.display())]
    NotSignedByCa { cert: PathBuf, ca: PathBuf, why: String },
    /// rustls refused the certificates or key (e.g. the key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Rejected(String),
    /// A certificate could not be made.
    #[error("cannot make the {what}: {why}")]
    Generate { what: &'static str, why: String },
    /// A name or subject alternative name given for a certificate is not usable.
    #[error("{0}")]
    InvalidName(String),
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Making a certificate would replace an existing file.
    #[error("{} exists already; remove it or choose another --out", path.display())]
    Exists { path: PathBuf },
}

/// The three PEM files of `--tls-cert`, `--tls-key` and `--tls-ca`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate (chain), presented to peers both ways.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The cluster CA's certificate: whom this node trusts.
    pub ca: PathBuf,
}

/// A node's loaded peer TLS: the server side of the peer listener and the client side of every
/// outbound peer channel.
#[derive(Clone)]
pub struct PeerTls {
    acceptor: TlsAcceptor,
    client: ClientTlsConfig,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Holds key material: say only that it is there.
        f.write_str("PeerTls { .. }")
    }
}

impl PeerTls {
    /// Reads and checks `files`: the CA parses, the node certificate chains to it and is usable
    /// as both a TLS server and client certificate, and the key matches it.
    pub fn load(files: &TlsFiles) -> Result<PeerTls, TlsError> {
        let ca_pem = read(&files.ca, "CA certificate")?;
        let cert_pem = read(&files.cert, "node certificate")?;
        let key_pem = read(&files.key, "node key")?;
        let ca = certificates(&ca_pem, "CA certificate", &files.ca)?;
        let chain = certificates(&cert_pem, "node certificate", &files.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: files.key.clone() })?;

        let verifier = client_verifier(&ca)?;
        verify_chain(verifier.as_ref(), &chain).map_err(|why| TlsError::NotSignedByCa {
            cert: files.cert.clone(),
            ca: files.ca.clone(),
            why,
        })?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rejected(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rejected(e.to_string()))?;
        // gRPC is HTTP/2 only; tonic's client insists on h2 being negotiated.
        server.alpn_protocols = vec![b"h2".to_vec()];

        let client = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .identity(Identity::from_pem(&cert_pem, &key_pem));
        Ok(PeerTls { acceptor: TlsAcceptor::from(Arc::new(server)), client })
    }

    /// The peer listener's handshake: demands a client certificate signed by the CA.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }

    /// What every outbound peer channel uses: present this node's certificate, trust only the CA.
    pub fn client_config(&self) -> ClientTlsConfig {
        self.client.clone()
    }
}

/// The server side of the client-facing ports: the node certificate, no client certificate
/// asked for.
#[derive(Clone)]
pub struct ClientTls {
    grpc: TlsAcceptor,
    resp: TlsAcceptor,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls { .. }")
    }
}

impl ClientTls {
    /// Reads the node certificate and key of `files` (checked as in [`PeerTls::load`]).
    pub fn load(files: &TlsFiles) -> Result<ClientTls, TlsError> {
        let cert_pem = read(&files.cert, "node certificate")?;
        let key_pem = read(&files.key, "node key")?;
        let chain = certificates(&cert_pem, "node certificate", &files.cert)?;
        let server = |alpn: Vec<Vec<u8>>| -> Result<TlsAcceptor, TlsError> {
            let key =
                PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey { path: files.key.clone() })?;
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Rejected(e.to_string()))?
                .with_no_client_auth()
                .with_single_cert(chain.clone(), key)
                .map_err(|e| TlsError::Rejected(e.to_string()))?;
            config.alpn_protocols = alpn;
            Ok(TlsAcceptor::from(Arc::new(config)))
        };
        // gRPC needs h2 negotiated; a Redis client offers no ALPN.
        Ok(ClientTls { grpc: server(vec![b"h2".to_vec()])?, resp: server(Vec::new())? })
    }

    /// The gRPC client listener's handshake.
    pub fn grpc_acceptor(&self) -> TlsAcceptor {
        self.grpc.clone()
    }

    /// The Redis port's handshake.
    pub fn resp_acceptor(&self) -> TlsAcceptor {
        self.resp.clone()
    }
}

/// The crypto provider every TLS configuration here is built with.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file (at least one).
fn certificates(pem: &[u8], what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let no_certificate = |why: String| TlsError::NoCertificate { what, path: path.to_path_buf(), why };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_certificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(no_certificate("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

/// The verifier the peer listener judges client certificates by: chains to one of `ca`.
fn client_verifier(ca: &[CertificateDer<'static>]) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone()).map_err(|e| TlsError::Rejected(format!("the CA certificate: {e}")))?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Rejected(e.to_string()))
}

/// Whether the peer listener would accept `chain` (leaf first) as a member's certificate.
fn verify_chain(verifier: &dyn ClientCertVerifier, chain: &[CertificateDer<'static>]) -> Result<(), String> {
    let (leaf, intermediates) = chain.split_first().ok_or("empty certificate chain")?;
    verifier.verify_client_cert(leaf, intermediates, UnixTime::now()).map(|_| ()).map_err(|e| e.to_string())
}

/// Whether a peer listener trusting the CA certificate(s) in `ca_pem` accepts the certificate
/// chain in `cert_pem` as a member's: `Err` says why not.
pub fn verify_member_certificate(ca_pem: &[u8], cert_pem: &[u8]) -> Result<(), String> {
    let ca = certificates(ca_pem, "CA certificate", Path::new("-")).map_err(|e| e.to_string())?;
    let chain = certificates(cert_pem, "node certificate", Path::new("-")).map_err(|e| e.to_string())?;
    let verifier = client_verifier(&ca).map_err(|e| e.to_string())?;
    verify_chain(verifier.as_ref(), &chain)
}
