//! The admin port's TLS: the clinic's certificate when configured, otherwise a self-signed one
//! made at first start and kept in `<data_dir>/admin-tls/` (its SHA-256 fingerprint is logged so
//! IT can pin it); client certificates required when a client CA is configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

use crate::config::AdminSettings;
use crate::sync::tls::{read_pem_certs, read_pem_key, TlsError};

/// Directory (in the data dir) of the generated certificate.
pub const SELF_SIGNED_DIR: &str = "admin-tls";

#[derive(Debug, thiserror::Error)]
pub enum AdminTlsError {
    #[error(transparent)]
    Files(#[from] TlsError),
    #[error("cannot make the admin port's self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the admin TLS settings are unusable: {0}")]
    Config(String),
}

/// Certificate and key files the admin port presents.
#[derive(Debug, Clone)]
pub struct ServerIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the leaf certificate (DER), hex with colons, for pinning.
    pub fingerprint: String,
}

/// The configured identity, or the self-signed one (made now if missing).
pub fn server_identity(
    settings: &AdminSettings,
    data_dir: &Path,
) -> Result<ServerIdentity, AdminTlsError> {
    let (cert, key) = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => ensure_self_signed(data_dir)?,
    };
    let certs = read_pem_certs(&cert)?;
    let fingerprint = certs
        .first()
        .map(|leaf| fingerprint(leaf))
        .unwrap_or_default();
    Ok(ServerIdentity {
        cert,
        key,
        fingerprint,
    })
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    digest::digest(&digest::SHA256, cert.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn ensure_self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), AdminTlsError> {
    let dir = data_dir.join(SELF_SIGNED_DIR);
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).map_err(|source| AdminTlsError::Write {
        path: dir.clone(),
        source,
    })?;
    let host = hostname();
    // IP names too: IT often reaches the box by address before DNS knows it.
    let names = vec![
        "localhost".to_string(),
        host,
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| AdminTlsError::Generate(e.to_string()))?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    write_private(&cert, generated.cert.pem().as_bytes())?;
    tracing::info!(path = %cert.display(), "made a self-signed certificate for the admin port");
    Ok((cert, key))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge-scribe".into())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AdminTlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|source| AdminTlsError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The rustls server configuration: HTTP/1.1 only, client certificates verified against the
/// configured CA when there is one.
pub fn server_config(
    settings: &AdminSettings,
    identity: &ServerIdentity,
) -> Result<Arc<ServerConfig>, AdminTlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_pem_certs(&identity.cert)?;
    let key = read_pem_key(&identity.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| AdminTlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_pem_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| AdminTlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| AdminTlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| AdminTlsError::Config(format!("{}: {e}", identity.cert.display())))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_self_signed_identity_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let settings = crate::config::Config::defaults().unwrap().admin;
        let first = server_identity(&settings, dir.path()).unwrap();
        let mode = std::fs::metadata(&first.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = server_identity(&settings, dir.path()).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        server_config(&settings, &first).unwrap();
    }
}
