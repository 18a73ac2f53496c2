//! TLS client configuration for the EHR transports (MLLP over TLS here, and the FHIR HTTPS client,
//! which reads the same files through [`read_pem_certs`] and [`read_pem_key`]).
//!
//! Everything that can be checked before the first connection is checked at load, so a clinic
//! that installs the wrong file hears about it when the daemon starts, with the file named, and
//! not as an opaque handshake failure at the first signed note: a CA file without a certificate,
//! a client certificate outside its validity dates, a key that does not belong to the
//! certificate, a key file that group or others could read. What only the peer can decide (does
//! it trust our certificate, is its certificate signed by our CA) is turned into a sentence that
//! says what to fix by [`describe_handshake_error`].
//!
//! The crypto provider is `ring`, passed explicitly: no process-wide default provider is
//! installed or relied on.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};

use crate::store::key::{check_private_file, PrivateFileProblem};

/// The files that make a TLS client identity: the CA that signed the EHR's server certificate
/// and, for mutual TLS, this box's certificate and key (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca_cert: PathBuf,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Why a TLS configuration could not be loaded. Every message names the file and what to do.
/// No variant carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read {path}: {source}; check the path in the configuration and that the service user may read it")]
    Read { path: PathBuf, source: io::Error },

    #[error("{path} is not a valid PEM file ({detail}); it must hold `-----BEGIN ...-----` blocks (convert DER with `openssl x509 -inform der -in FILE -out FILE.pem`)")]
    Pem { path: PathBuf, detail: String },

    #[error("the CA file {path} holds no certificate; point it at the PEM certificate of the CA that signed the EHR's server certificate")]
    NoCaCertificate { path: PathBuf },

    #[error("the CA file {path} holds a certificate that cannot be used as a trust anchor ({detail}); ask the EHR team for the CA certificate in PEM")]
    BadCaCertificate { path: PathBuf, detail: String },

    #[error("the client certificate file {path} holds no certificate; point client_cert at this box's PEM certificate")]
    NoClientCertificate { path: PathBuf },

    #[error("the client certificate {path} cannot be parsed ({detail}); re-export it as PEM from the clinic's CA")]
    BadClientCertificate { path: PathBuf, detail: String },

    #[error("the client certificate {path} expired on {not_after} (UTC; now {now}); have the clinic's CA issue a new certificate for this box and replace the file (and its key)")]
    ClientCertExpired {
        path: PathBuf,
        not_after: String,
        now: String,
    },

    #[error("the client certificate {path} is not valid before {not_before} (UTC; now {now}); check this box's clock (NTP) or wait until that date")]
    ClientCertNotYetValid {
        path: PathBuf,
        not_before: String,
        now: String,
    },

    #[error("the private key file {path} holds no private key; point client_key at the PKCS#8, PKCS#1 or SEC1 PEM key of the client certificate")]
    NoKey { path: PathBuf },

    #[error("the private key file {path} can be read by group or others (mode {mode:03o}); run `chmod 600 {path}`, make sure the service user owns it, and consider the key exposed")]
    KeyTooOpen { path: PathBuf, mode: u32 },

    #[error("the private key file {path} is not a regular file (a symlink or directory is not accepted); copy the key itself there with mode 0600")]
    KeyNotAFile { path: PathBuf },

    #[error("the private key {key} does not belong to the client certificate {cert}; install the key that was generated with that certificate's request")]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error("client_cert and client_key must be set together (only {given} is set); set both for mutual TLS or neither")]
    HalfClientIdentity { given: &'static str },

    #[error("the TLS library refused the configuration ({0}); check the certificate and key types (RSA, ECDSA P-256/P-384, Ed25519 are supported)")]
    Config(rustls::Error),
}

/// Builds the client configuration: trust only the CA in `files.ca_cert` (not the system store:
/// the EHR is reached on the clinic's network under the clinic's own CA), and present the client
/// certificate when one is configured.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = root_store(&files.ca_cert)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    let config = match (&files.client_cert, &files.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => {
            return Err(TlsError::HalfClientIdentity {
                given: "client_cert",
            })
        }
        (None, Some(_)) => {
            return Err(TlsError::HalfClientIdentity {
                given: "client_key",
            })
        }
        (Some(cert_path), Some(key_path)) => {
            let chain = read_pem_certs(cert_path)?;
            let Some(leaf) = chain.first() else {
                return Err(TlsError::NoClientCertificate {
                    path: cert_path.clone(),
                });
            };
            check_validity(cert_path, leaf, SystemTime::now())?;
            let key = read_pem_key(key_path)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                        cert: cert_path.clone(),
                        key: key_path.clone(),
                    },
                    other => TlsError::Config(other),
                })?
        }
    };
    Ok(Arc::new(config))
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let certs = read_pem_certs(path)?;
    if certs.is_empty() {
        return Err(TlsError::NoCaCertificate {
            path: path.to_path_buf(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::BadCaCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Every certificate in a PEM file, in order (an empty file gives an empty list; callers decide
/// whether that is an error). Other PEM sections (keys, parameters) are skipped.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))
}

/// The first private key in a PEM file, after the same permission check as the master key: a key
/// file that group or others can read is refused, not repaired (if it was exposed, fixing the
/// mode silently would hide that).
pub fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    match check_private_file(path) {
        Ok(()) => {}
        Err(PrivateFileProblem::Read(source)) => {
            return Err(TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(PrivateFileProblem::NotAFile) => {
            return Err(TlsError::KeyNotAFile {
                path: path.to_path_buf(),
            })
        }
        Err(PrivateFileProblem::TooOpen { mode }) => {
            return Err(TlsError::KeyTooOpen {
                path: path.to_path_buf(),
                mode,
            })
        }
    }
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(pem_error(path, e)),
    }
}

/// PEM errors can quote a line of the file; for a key file that line could be key material, so
/// only the kind of error is kept.
fn pem_error(path: &Path, e: pem::Error) -> TlsError {
    let detail = match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::Io(_) => "the file could not be read",
        pem::Error::NoItemsFound => "no PEM section found",
        _ => "unreadable PEM",
    };
    TlsError::Pem {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// Refuses a client certificate outside its validity period. The peer would refuse it too, but
/// with an alert that does not say which date or which file.
fn check_validity(path: &Path, cert: &CertificateDer<'_>, now: SystemTime) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| {
        TlsError::BadClientCertificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
    })?;
    let now_s = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    let validity = parsed.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    if now_s > not_after {
        return Err(TlsError::ClientCertExpired {
            path: path.to_path_buf(),
            not_after: utc_date_time(not_after),
            now: utc_date_time(now_s),
        });
    }
    if now_s < not_before {
        return Err(TlsError::ClientCertNotYetValid {
            path: path.to_path_buf(),
            not_before: utc_date_time(not_before),
            now: utc_date_time(now_s),
        });
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` for a Unix time (UTC), proleptic Gregorian (days-to-civil, H. Hinnant).
pub(crate) fn utc_date_time(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Turns a TLS failure into a sentence saying what to fix, naming the files generically; see
/// [`describe_handshake_error_for`] to name them.
pub fn describe_handshake_error(err: &rustls::Error) -> String {
    describe_handshake_error_for(err, None)
}

/// [`describe_handshake_error`] naming the CA and client certificate files when known.
pub fn describe_handshake_error_for(err: &rustls::Error, files: Option<&TlsFiles>) -> String {
    let ca = files
        .map(|f| f.ca_cert.display().to_string())
        .unwrap_or_else(|| "the configured ca_cert file".to_string());
    let client = files
        .and_then(|f| f.client_cert.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "this box's client certificate".to_string());
    let mut out = String::new();
    match err {
        rustls::Error::InvalidCertificate(cert_err) => {
            match cert_err {
                CertificateError::UnknownIssuer => {
                    let _ = write!(out, "the EHR's server certificate is not signed by the CA in {ca}; set ca_cert to the CA that issued the EHR's certificate (ask the EHR team for its CA chain in PEM)");
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    let _ = write!(out, "the EHR's server certificate has expired{}; the EHR team must renew it (also check this box's clock)", context_time(cert_err));
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    let _ = write!(out, "the EHR's server certificate is not valid yet{}; check this box's clock (NTP)", context_time(cert_err));
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => {
                    let _ = write!(out, "the EHR's server certificate does not name the host this box connects to{}; set the destination's server name to a name the certificate carries, or have the EHR team add this address to its subjectAltName", presented_names(cert_err));
                }
                CertificateError::Revoked => {
                    out.push_str("the EHR's server certificate has been revoked; the EHR team must install a new one");
                }
                CertificateError::BadSignature => {
                    let _ = write!(out, "the EHR's server certificate has a bad signature (it does not verify against the CA in {ca}); check that ca_cert is the CA the EHR team uses");
                }
                other => {
                    let _ = write!(out, "the EHR's server certificate was refused ({other:?}); check ca_cert ({ca}) with the EHR team");
                }
            }
        }
        rustls::Error::AlertReceived(alert) => {
            match alert {
                AlertDescription::UnknownCA => {
                    let _ = write!(out, "the EHR does not trust {client}: it was not issued by a CA the EHR accepts; have the clinic's CA (the one the EHR trusts) issue this box's certificate");
                }
                AlertDescription::BadCertificate | AlertDescription::UnsupportedCertificate => {
                    let _ = write!(out, "the EHR rejected {client} ({alert:?}); it is from a CA the EHR does not trust, expired, or lacks the clientAuth usage; have the clinic's CA issue a new one");
                }
                AlertDescription::CertificateExpired => {
                    let _ = write!(out, "the EHR says {client} has expired; have the clinic's CA issue a new certificate and replace client_cert and client_key");
                }
                AlertDescription::CertificateRevoked => {
                    let _ = write!(out, "the EHR says {client} has been revoked; have the clinic's CA issue a new one");
                }
                AlertDescription::CertificateRequired => {
                    out.push_str("the EHR requires a client certificate; set client_cert and client_key for this destination");
                }
                AlertDescription::AccessDenied => {
                    let _ = write!(out, "the EHR accepted {client} but denies it access; ask the EHR team to authorize this box's certificate subject");
                }
                AlertDescription::HandshakeFailure
                | AlertDescription::ProtocolVersion
                | AlertDescription::InsufficientSecurity => {
                    let _ = write!(out, "the EHR and this box share no TLS version or cipher suite ({alert:?}); this box offers TLS 1.2 and 1.3 with modern suites: ask the EHR team to enable them");
                }
                other => {
                    let _ = write!(out, "the EHR ended the TLS handshake with alert {other:?}; check the TLS settings with the EHR team");
                }
            }
        }
        rustls::Error::NoCertificatesPresented => {
            out.push_str("the EHR presented no server certificate; check that the destination port is its TLS port");
        }
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            let _ = write!(out, "the peer does not speak TLS here ({err}); check that the destination is a TLS port, or turn TLS off for it");
        }
        other => {
            let _ = write!(out, "TLS failure: {other}");
        }
    }
    out
}

/// The rustls error inside an I/O error, if the I/O error came from TLS.
pub fn rustls_error_of(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// [`describe_handshake_error`] for an I/O error from a TLS stream; `None` when the error did not
/// come from TLS (a reset, a timeout), which the caller treats as a network failure.
pub fn describe_io_handshake_error(err: &io::Error, files: Option<&TlsFiles>) -> Option<String> {
    rustls_error_of(err).map(|e| describe_handshake_error_for(e, files))
}

fn context_time(err: &CertificateError) -> String {
    match err {
        CertificateError::ExpiredContext { time, not_after } => format!(
            " (on {} UTC; now {})",
            utc_date_time(unix_of(not_after)),
            utc_date_time(unix_of(time))
        ),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            " (valid from {} UTC; now {})",
            utc_date_time(unix_of(not_before)),
            utc_date_time(unix_of(time))
        ),
        _ => String::new(),
    }
}

fn unix_of(t: &rustls::pki_types::UnixTime) -> i64 {
    i64::try_from(t.as_secs()).unwrap_or(i64::MAX)
}

fn presented_names(err: &CertificateError) -> String {
    match err {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            " (expected {}, the certificate names {})",
            expected.to_str(),
            presented.join(", ")
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(utc_date_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_date_time(1_609_459_200), "2021-01-01 00:00:00");
        assert_eq!(utc_date_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_date_time(-1), "1969-12-31 23:59:59");
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let files = TlsFiles {
            ca_cert: ca.clone(),
            client_cert: None,
            client_key: None,
        };
        let err = client_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        std::fs::write(&ca, "no pem here\n").unwrap();
        let err = client_config(&files).unwrap_err();
        assert!(matches!(err, TlsError::NoCaCertificate { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
    }

    #[test]
    fn half_identity_and_open_key_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_pem_key(&key).unwrap_err();
        assert!(
            matches!(err, TlsError::KeyTooOpen { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_pem_key(&key).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
    }

    #[test]
    fn handshake_messages_say_what_to_fix() {
        let files = TlsFiles {
            ca_cert: PathBuf::from("/etc/edge-scribe/ehr-ca.pem"),
            client_cert: Some(PathBuf::from("/etc/edge-scribe/box.crt")),
            client_key: Some(PathBuf::from("/etc/edge-scribe/box.key")),
        };
        let m = describe_handshake_error_for(
            &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            Some(&files),
        );
        assert!(
            m.contains("not signed by the CA in /etc/edge-scribe/ehr-ca.pem"),
            "{m}"
        );
        let m = describe_handshake_error_for(
            &rustls::Error::AlertReceived(AlertDescription::UnknownCA),
            Some(&files),
        );
        assert!(m.contains("does not trust /etc/edge-scribe/box.crt"), "{m}");
        let m = describe_handshake_error(&rustls::Error::AlertReceived(
            AlertDescription::CertificateExpired,
        ));
        assert!(m.contains("has expired"), "{m}");
    }
}
