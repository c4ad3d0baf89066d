//! Making certificates for a cluster: a CA ([`new_ca`]) and member certificates signed by it
//! ([`new_member`]), as PEM, and writing and reading them as files. The one place certificates
//! are made: `geocache cert` (for a real cluster) and `geocache dev --secure` (a throwaway one)
//! both call it.
//!
//! What a member certificate is: an ECDSA P-256 key, the member's name as common name, its subject
//! alternative names (IP addresses and DNS names other members dial it by), usable both as a TLS
//! server and a TLS client certificate (a member is both), signed by the CA, valid from an hour
//! ago (clock skew) for the days asked.
//!
//! On disk, in the directory given: `ca.pem` and `ca-key.pem` for the CA, `NAME.pem` and
//! `NAME-key.pem` for a member. Keys are written owner-read/write only (0600), and an existing
//! file is never replaced.
//!
//! Invariant: key PEM is held in [`CertPair::key_pem`] and written to its file; nothing here
//! formats it (the `Debug` of [`CertPair`] leaves it out), and errors never include it.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::TlsError;

/// File stem of the CA's certificate and key.
pub const CA_STEM: &str = "ca";

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertPair").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// The files of a certificate pair under `dir`: (`STEM.pem`, `STEM-key.pem`).
pub fn paths(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{stem}.pem")), dir.join(format!("{stem}-key.pem")))
}

/// A new self-signed CA named `name`, valid for `days` days.
pub fn new_ca(name: &str, days: u32) -> Result<CertPair, TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate { what: "CA certificate", why: e.to_string() };
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    (params.not_before, params.not_after) = validity(days)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// A new member certificate for `name`, reachable at `sans` (IP addresses or DNS names; at
/// least one), signed by `ca`, valid for `days` days.
pub fn new_member(ca: &CertPair, name: &str, sans: &[String], days: u32) -> Result<CertPair, TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate { what: "node certificate", why: e.to_string() };
    if sans.is_empty() {
        return Err(TlsError::InvalidName(format!(
            "node {name}: give at least one --san (an IP address or DNS name other members dial it by)"
        )));
    }
    // A key that does not parse is named by what it should be, never shown.
    let ca_key = KeyPair::from_pem(&ca.key_pem)
        .map_err(|_| TlsError::Generate { what: "node certificate", why: "the CA key does not parse".into() })?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(|e| TlsError::Generate { what: "node certificate", why: format!("the CA certificate: {e}") })?;
    let key = KeyPair::generate().map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name)?;
    params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(days)?;
    let cert = params.signed_by(&key, &issuer).map_err(generate)?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Writes `pair` as `dir/STEM.pem` and `dir/STEM-key.pem` (0600), creating `dir`; refuses to
/// replace either file. Returns (certificate path, key path).
pub fn write_pair(dir: &Path, stem: &str, pair: &CertPair) -> Result<(PathBuf, PathBuf), TlsError> {
    check_stem(stem)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    let (cert_path, key_path) = paths(dir, stem);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(TlsError::Exists { path: path.clone() });
        }
    }
    write_new(&key_path, pair.key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, pair.cert_pem.as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Reads the pair `dir/STEM.pem`, `dir/STEM-key.pem`.
pub fn read_pair(dir: &Path, stem: &str) -> Result<CertPair, TlsError> {
    let (cert_path, key_path) = paths(dir, stem);
    let read = |path: &Path, what| {
        std::fs::read_to_string(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
    };
    Ok(CertPair { cert_pem: read(&cert_path, "CA certificate")?, key_pem: read(&key_path, "CA key")? })
}

/// Creates `path` (failing if it exists) with `mode` and writes `bytes`.
pub(crate) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
}

/// A name usable as a file stem and a common name: letters, digits, `.`, `_`, `-`.
fn check_stem(stem: &str) -> Result<(), TlsError> {
    let ok = !stem.is_empty()
        && !stem.starts_with('.')
        && stem.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(TlsError::InvalidName(format!(
            "bad name {stem:?}: use letters, digits, '.', '_' and '-' (it names the files)"
        )))
    }
}

fn common_name(name: &str) -> Result<DistinguishedName, TlsError> {
    if name.trim().is_empty() {
        return Err(TlsError::InvalidName("a certificate needs a non-empty name".into()));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    Ok(dn)
}

/// An IP address, or else a DNS name.
fn san(s: &str) -> Result<SanType, TlsError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid_dns = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*'));
    if !valid_dns {
        return Err(TlsError::InvalidName(format!("bad --san {s:?}: expected an IP address or a DNS name")));
    }
    Ia5String::try_from(s.to_string())
        .map(SanType::DnsName)
        .map_err(|e| TlsError::InvalidName(format!("bad --san {s:?}: {e}")))
}

/// From an hour ago (other machines' clocks may be behind) for `days` days.
fn validity(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), TlsError> {
    if days == 0 {
        return Err(TlsError::InvalidName("a certificate must be valid for at least one day".into()));
    }
    let now = OffsetDateTime::now_utc();
    Ok((now - Duration::hours(1), now + Duration::days(i64::from(days))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{verify_member_certificate, PeerTls, TlsFiles};

    fn loopback() -> Vec<String> {
        vec!["127.0.0.1".into(), "localhost".into()]
    }

    #[test]
    fn a_member_certificate_verifies_against_its_ca_and_not_another() {
        let ca = new_ca("test CA", 1).unwrap();
        let other = new_ca("test CA", 1).unwrap();
        let member = new_member(&ca, "node1", &loopback(), 1).unwrap();
        verify_member_certificate(ca.cert_pem.as_bytes(), member.cert_pem.as_bytes()).unwrap();
        // Same name, different key: the name is no credential (the signature does not verify).
        let refused = verify_member_certificate(other.cert_pem.as_bytes(), member.cert_pem.as_bytes()).unwrap_err();
        assert!(refused.contains("BadSignature"), "{refused}");
        let elsewhere = new_ca("another name", 1).unwrap();
        let refused = verify_member_certificate(elsewhere.cert_pem.as_bytes(), member.cert_pem.as_bytes()).unwrap_err();
        assert!(refused.contains("UnknownIssuer"), "{refused}");
        // Another CA's own certificate is no member certificate either.
        assert!(verify_member_certificate(ca.cert_pem.as_bytes(), other.cert_pem.as_bytes()).is_err());
    }

    #[test]
    fn written_files_load_as_a_node_tls_config_and_keys_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("test CA", 1).unwrap();
        write_pair(dir.path(), CA_STEM, &ca).unwrap();
        let read_back = read_pair(dir.path(), CA_STEM).unwrap();
        let member = new_member(&read_back, "node-1", &loopback(), 1).unwrap();
        let (cert, key) = write_pair(dir.path(), "node-1", &member).unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let files = TlsFiles { cert, key, ca: paths(dir.path(), CA_STEM).0 };
        PeerTls::load(&files).unwrap();
        // Never replaces a file.
        assert!(matches!(write_pair(dir.path(), "node-1", &member), Err(TlsError::Exists { .. })));
    }

    #[test]
    fn a_node_refuses_a_certificate_its_ca_did_not_sign_or_a_key_that_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("ours", 1).unwrap();
        let theirs = new_ca("theirs", 1).unwrap();
        write_pair(dir.path(), CA_STEM, &ca).unwrap();
        let (cert, key) = write_pair(dir.path(), "n", &new_member(&theirs, "n", &loopback(), 1).unwrap()).unwrap();
        let files = TlsFiles { cert, key, ca: paths(dir.path(), CA_STEM).0 };
        assert!(matches!(PeerTls::load(&files), Err(TlsError::NotSignedByCa { .. })));

        // A key file that is not a key: the error names the file, never what is in it.
        let (cert, key) = write_pair(dir.path(), "m", &new_member(&ca, "m", &loopback(), 1).unwrap()).unwrap();
        std::fs::write(&key, "secret-ish contents\n").unwrap();
        let err = PeerTls::load(&TlsFiles { cert, key, ca: paths(dir.path(), CA_STEM).0 }).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn names_and_sans_are_checked() {
        let ca = new_ca("ca", 1).unwrap();
        assert!(matches!(new_member(&ca, "n", &[], 1), Err(TlsError::InvalidName(_))));
        assert!(matches!(new_member(&ca, "n", &["bad name!".into()], 1), Err(TlsError::InvalidName(_))));
        assert!(new_member(&ca, "n", &["::1".into(), "node1.example.com".into()], 1).is_ok());
        assert!(check_stem("../x").is_err());
        assert!(format!("{ca:?}").find("PRIVATE").is_none(), "Debug shows no key");
    }
}
