//! Client certificates revoked before they expire: an X.509 certificate revocation list file
//! (`--client-crl`: PEM holding one or more CRLs, or one DER CRL), each list signed by a
//! certificate of the client CA file, re-read when the file changes. TLS checks the chain of
//! a client certificate; this refuses, before anything is read or written, every request that
//! presents one its CA has revoked.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::Status;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::Pem;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::watched::WatchedFile;

/// Why a revocation list cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {cause}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Path.
        path: PathBuf,
        /// I/O error.
        cause: std::io::Error,
    },
    /// The file is not what it must be.
    #[error("certificate revocation list {path}: {reason}")]
    Invalid {
        /// Path.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// (issuer name as DER, serial number as DER) of every revoked certificate.
#[derive(Debug, Default)]
struct RevokedSet {
    serials: HashSet<(Vec<u8>, Vec<u8>)>,
}

/// The DER documents of a PEM file of CRLs, or the file itself when it is DER.
fn crl_documents(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, CrlError> {
    let invalid = |reason: String| CrlError::Invalid {
        path: path.to_owned(),
        reason,
    };
    if !bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        return Ok(vec![bytes.to_vec()]);
    }
    let mut out = Vec::new();
    for pem in Pem::iter_from_buffer(bytes) {
        let pem = pem.map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        if pem.label != "X509 CRL" {
            return Err(invalid(format!(
                "holds a {:?} block; only X509 CRL blocks belong in it",
                pem.label
            )));
        }
        out.push(pem.contents);
    }
    if out.is_empty() {
        return Err(invalid("holds no X509 CRL block".into()));
    }
    Ok(out)
}

/// Parses every CRL of the file and checks each is signed by one of `cas`.
fn parse_revoked(
    bytes: &[u8],
    path: &Path,
    cas: &[X509Certificate<'_>],
) -> Result<RevokedSet, CrlError> {
    let invalid = |reason: String| CrlError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let mut set = RevokedSet::default();
    for der in crl_documents(bytes, path)? {
        let (_, crl): (_, CertificateRevocationList<'_>) = x509_parser::parse_x509_crl(&der)
            .map_err(|e| invalid(format!("not an X.509 CRL ({e}); write it as PEM or DER")))?;
        let issuer = crl.issuer();
        let signed_by_ca = cas.iter().any(|ca| {
            ca.subject().as_raw() == issuer.as_raw()
                && crl.verify_signature(ca.public_key()).is_ok()
        });
        if !signed_by_ca {
            return Err(invalid(format!(
                "the list issued by \"{issuer}\" is not signed by a certificate of the client \
                 CA file; publish the CRL its CA signed"
            )));
        }
        if crl
            .next_update()
            .is_some_and(|next| next < x509_parser::time::ASN1Time::now())
        {
            tracing::warn!(
                path = %path.display(),
                issuer = %issuer,
                "the certificate revocation list is past its next update; publish a fresh one"
            );
        }
        for revoked in crl.iter_revoked_certificates() {
            set.serials
                .insert((issuer.as_raw().to_vec(), revoked.raw_serial().to_vec()));
        }
    }
    Ok(set)
}

/// The certificates of a PEM file (the client CA bundle), as DER.
fn ca_certificates(path: &Path) -> Result<Vec<Vec<u8>>, CrlError> {
    let bytes = std::fs::read(path).map_err(|source| CrlError::Read {
        what: "client CA",
        path: path.to_owned(),
        cause: source,
    })?;
    let certs: Vec<Vec<u8>> = Pem::iter_from_buffer(&bytes)
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .map(|p| p.contents)
        .collect();
    if certs.is_empty() {
        return Err(CrlError::Invalid {
            path: path.to_owned(),
            reason: "the client CA file holds no certificate to check the list's signature".into(),
        });
    }
    Ok(certs)
}

/// The revoked client certificates a service refuses.
pub struct RevokedCertificates {
    file: WatchedFile<RevokedSet, CrlError>,
}

impl RevokedCertificates {
    /// Reads the revocation list `crl`, whose lists must be signed by a certificate of
    /// `client_ca`.
    pub fn from_files(crl: &Path, client_ca: &Path) -> Result<Self, CrlError> {
        let cas: Arc<Vec<Vec<u8>>> = Arc::new(ca_certificates(client_ca)?);
        let ca_path = client_ca.to_owned();
        let parse = move |bytes: &[u8], path: &Path| {
            let parsed: Vec<X509Certificate<'_>> = cas
                .iter()
                .map(|der| x509_parser::parse_x509_certificate(der).map(|(_, c)| c))
                .collect::<Result<_, _>>()
                .map_err(|e| CrlError::Invalid {
                    path: ca_path.clone(),
                    reason: format!("a client CA certificate cannot be parsed: {e}"),
                })?;
            parse_revoked(bytes, path, &parsed)
        };
        Ok(Self {
            file: WatchedFile::open(
                crl,
                "certificate revocation list",
                Box::new(parse),
                |source| CrlError::Read {
                    what: "certificate revocation list",
                    path: crl.to_owned(),
                    cause: source,
                },
            )?,
        })
    }

    /// How many certificates the list revokes.
    pub fn len(&self) -> usize {
        self.file.current().serials.len()
    }

    /// True when the list revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ok unless the client certificate `der` is revoked: then UNAUTHENTICATED, naming its
    /// serial and what the facility must do.
    pub fn check(&self, der: &[u8]) -> Result<(), Status> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|_| Status::unauthenticated("client certificate cannot be parsed"))?;
        let key = (cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec());
        if self.file.current().serials.contains(&key) {
            metrics::counter!(crate::metrics::REVOKED_CERTIFICATES.name).increment(1);
            return Err(Status::unauthenticated(format!(
                "the client certificate (serial {}) has been revoked by its CA; the facility \
                 must be issued a new certificate",
                cert.raw_serial_as_string()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Authority;

    struct Files {
        dir: tempfile::TempDir,
        ca: PathBuf,
    }

    impl Files {
        fn new(ca_pem: &str) -> Self {
            let dir = tempfile::tempdir().expect("dir");
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, ca_pem).expect("ca");
            Self { dir, ca }
        }

        fn open(&self, crl: &[u8]) -> Result<RevokedCertificates, CrlError> {
            let path = self.dir.path().join("crl");
            std::fs::write(&path, crl).expect("crl");
            RevokedCertificates::from_files(&path, &self.ca)
        }
    }

    #[test]
    fn a_listed_serial_is_refused_and_others_pass_in_pem_and_der() {
        let ca = Authority::new("facility CA");
        let ca_pem = ca.ca_pem.clone();
        let files = Files::new(&ca_pem);
        let crl = ca.crl(&[41, 42]);
        for list in [
            files
                .open(crl.pem().expect("pem").as_bytes())
                .expect("pem list"),
            files.open(crl.der()).expect("der list"),
        ] {
            assert_eq!(list.len(), 2);
            let refused = list.check(&ca.leaf("79025", 42).der).expect_err("revoked");
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(
                refused.message().contains("revoked"),
                "{}",
                refused.message()
            );
            list.check(&ca.leaf("79025", 43).der).expect("not revoked");
        }
        // The same serial from another CA is another certificate.
        let other = Authority::new("another CA");
        files
            .open(crl.der())
            .expect("list")
            .check(&other.leaf("79025", 42).der)
            .expect("other issuer");
    }

    #[test]
    fn a_list_that_is_not_the_client_cas_is_refused_with_what_to_do() {
        let ca = Authority::new("facility CA");
        let ca_pem = ca.ca_pem.clone();
        let files = Files::new(&ca_pem);
        let reason = |r: Result<RevokedCertificates, CrlError>| match r {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted"),
        };
        let stranger = Authority::new("stranger CA");
        let foreign = stranger.crl(&[1]);
        assert!(
            reason(files.open(foreign.der()))
                .contains("not signed by a certificate of the client CA")
        );
        // A list with the right issuer name but another key is forged.
        let impostor = Authority::new("facility CA");
        let forged = impostor.crl(&[1]);
        assert!(reason(files.open(forged.der())).contains("not signed"));
        assert!(reason(files.open(ca_pem.as_bytes())).contains("only X509 CRL blocks"));
        assert!(reason(files.open(b"\x30\x03\x02\x01\x00")).contains("not an X.509 CRL"));
        assert!(reason(files.open(b"")).contains("not an X.509 CRL"));
        let crl = ca.crl(&[]);
        let no_ca = Files::new("not a certificate");
        assert!(reason(no_ca.open(crl.der())).contains("holds no certificate"));
        assert!(files.open(crl.der()).expect("empty list").is_empty());
    }
}
