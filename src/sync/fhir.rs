//! FHIR R4 write-back: one transaction Bundle per signed note (DocumentReference + Binary +
//! Provenance), conditional create on the note's business identifier, read-back by that
//! identifier, and for an addendum the superseding of the note it corrects (If-Match, re-read
//! on 412).
//!
//! Idempotency: the DocumentReference is created with `ifNoneExist` on its identifier, so a
//! retry after a lost response answers 200 with the existing document instead of a second one;
//! Binary and Provenance have ids derived from the business id and are PUT, so a retry
//! rewrites the same resources. Server answers are classified by status code only: their text
//! may echo the note and is never stored or logged.

use std::time::Duration;

use base64::Engine as _;
use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY, SHA256};
use serde_json::{json, Value};

use super::{OutgoingNote, ReadBack, SendError, Transport};
use crate::config::DestinationSettings;

/// LOINC document types by template: a progress note unless it is a history and physical.
fn loinc_type(template: &str) -> (&'static str, &'static str) {
    match template {
        "history-and-physical" => ("34117-2", "History and physical note"),
        _ => ("11506-3", "Progress note"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error("destination {name} has no url")]
    NoUrl { name: String },
    #[error("TLS setup for {name}: {source}")]
    Tls {
        name: String,
        source: super::tls::TlsError,
    },
}

pub struct FhirTransport {
    agent: ureq::Agent,
    base: String,
    settings: DestinationSettings,
}

impl FhirTransport {
    pub fn new(settings: &DestinationSettings) -> Result<FhirTransport, FhirError> {
        let base = settings.url.clone().ok_or_else(|| FhirError::NoUrl {
            name: settings.name.clone(),
        })?;
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(settings.timeout))
            .max_redirects(0)
            .user_agent(concat!("edge-scribe/", env!("CARGO_PKG_VERSION")));
        if let Some(files) = &settings.tls {
            config = config.tls_config(ureq_tls(files).map_err(|source| FhirError::Tls {
                name: settings.name.clone(),
                source,
            })?);
        }
        Ok(FhirTransport {
            agent: config.build().new_agent(),
            base,
            settings: settings.clone(),
        })
    }

    fn identifier_query(&self, business_id: &str) -> String {
        format!(
            "{}/DocumentReference?identifier={}",
            self.base,
            url_encode(&format!("{}|{business_id}", self.settings.document_system))
        )
    }

    /// GET returning the parsed body and the ETag, or a classified error.
    fn get(&self, url: &str) -> Result<(Value, Option<String>), SendError> {
        let response = self
            .agent
            .get(url)
            .header("accept", "application/fhir+json")
            .call()
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let etag = header(&response, "etag");
        if status != 200 {
            return Err(status_error(status, header(&response, "retry-after")));
        }
        Ok((read_json(response)?, etag))
    }

    /// Marks the note an addendum replaces as superseded, with optimistic concurrency: PUT with
    /// the version just read; on 412 (someone else wrote it) read again and retry.
    fn supersede(&self, old_business_id: &str) -> Result<(), SendError> {
        for _ in 0..3 {
            let (bundle, _) = self.get(&self.identifier_query(old_business_id))?;
            let Some(resource) = bundle["entry"][0]["resource"].as_object().cloned() else {
                // The original is not there (yet): the addendum still goes out; its relatesTo
                // names the original by identifier.
                return Ok(());
            };
            if resource.get("status").and_then(Value::as_str) == Some("superseded") {
                return Ok(());
            }
            let id = resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let version = resource
                .get("meta")
                .and_then(|m| m.get("versionId"))
                .and_then(Value::as_str)
                .unwrap_or("1")
                .to_owned();
            let mut updated = Value::Object(resource);
            updated["status"] = json!("superseded");
            let response = self
                .agent
                .put(&format!("{}/DocumentReference/{id}", self.base))
                .header("content-type", "application/fhir+json")
                .header("if-match", &format!("W/\"{version}\""))
                .send(updated.to_string())
                .map_err(|e| transport_error(&e))?;
            match response.status().as_u16() {
                200 | 201 => return Ok(()),
                412 => continue,
                status => return Err(status_error(status, header(&response, "retry-after"))),
            }
        }
        Err(SendError::Retry {
            status: "http 412 (concurrent writers)".into(),
            retry_after: None,
        })
    }
}

impl Transport for FhirTransport {
    fn deliver(&mut self, note: &OutgoingNote) -> Result<String, SendError> {
        let bundle = transaction_bundle(note, &self.settings, &self.base)?;
        let response = self
            .agent
            .post(&self.base)
            .header("content-type", "application/fhir+json")
            .header("accept", "application/fhir+json")
            .send(bundle.to_string())
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(status_error(status, header(&response, "retry-after")));
        }
        let body = read_json(response)?;
        let remote_id = body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["response"]["location"].as_str())
            .find_map(|location| {
                // Relative ("DocumentReference/7/_history/1") or absolute, as servers differ.
                let (before, rest) = location.split_once("DocumentReference/")?;
                (before.is_empty() || before.ends_with('/'))
                    .then(|| rest.split('/').next().unwrap_or(rest).to_owned())
                    .filter(|id| !id.is_empty())
            })
            .ok_or_else(|| SendError::Retry {
                status: "transaction response without a DocumentReference".into(),
                retry_after: None,
            })?;
        if let Some(old) = &note.replaces {
            self.supersede(old)?;
        }
        Ok(remote_id)
    }

    fn read_back(&mut self, note: &OutgoingNote, remote_id: &str) -> Result<ReadBack, SendError> {
        let (bundle, _) = self.get(&self.identifier_query(&note.business_id))?;
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let [entry] = entries.as_slice() else {
            return Ok(ReadBack::Differs);
        };
        let resource = &entry["resource"];
        let data = resource["content"][0]["attachment"]["data"]
            .as_str()
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok());
        let matches = resource["id"].as_str() == Some(remote_id)
            && data.is_some_and(|bytes| {
                hex(digest(&SHA256, &bytes).as_ref()) == note.note.attestation().note_sha256
            });
        Ok(if matches {
            ReadBack::Matches
        } else {
            ReadBack::Differs
        })
    }
}

/// The transaction for one signed note. Deterministic: the same note gives the same bundle.
pub fn transaction_bundle(
    note: &OutgoingNote,
    settings: &DestinationSettings,
    base: &str,
) -> Result<Value, SendError> {
    let patient = note
        .patient_ref
        .as_deref()
        .ok_or_else(|| SendError::Permanent {
            status: "no patient reference on the encounter".into(),
        })?;
    let attestation = note.note.attestation();
    let text = note.note.note_text();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let doc_uuid = uuid_from(&format!("DocumentReference/{}", note.business_id));
    let binary_id = resource_id("bin", &note.business_id);
    let provenance_id = resource_id("prov", &note.business_id);
    let (code, display) = loinc_type(&note.template);
    let clinician = json!({
        "identifier": {"system": "urn:edge-scribe:user", "value": note.clinician_id},
        "display": note.clinician_name.clone().unwrap_or_else(|| note.clinician_id.clone()),
    });
    let device = json!({
        "identifier": {
            "system": "urn:edge-scribe:device",
            "value": note.note.public_key_hex().get(..16).unwrap_or_default(),
        },
        "display": concat!("edge-scribe ", env!("CARGO_PKG_VERSION")),
    });
    let mut document = json!({
        "resourceType": "DocumentReference",
        "identifier": [{"system": settings.document_system, "value": note.business_id}],
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
        "category": [{"coding": [{
            "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
            "code": "clinical-note",
            "display": "Clinical Note",
        }]}],
        "subject": {"identifier": {"system": settings.patient_system, "value": patient}},
        "date": attestation.signed_at,
        "author": [clinician.clone()],
        "authenticator": clinician.clone(),
        "content": [{"attachment": {
            "contentType": "text/plain; charset=utf-8",
            "language": "en",
            "data": b64(text.as_bytes()),
            "url": format!("Binary/{binary_id}"),
            "size": text.len(),
            "hash": b64(digest(&SHA1_FOR_LEGACY_USE_ONLY, text.as_bytes()).as_ref()),
            "title": if note.replaces.is_some() { "Addendum" } else { display },
            "creation": attestation.signed_at,
        }}],
        "context": {"encounter": [{"identifier": {
            "system": "urn:edge-scribe:encounter", "value": note.encounter_id,
        }}]},
    });
    if let Some(old) = &note.replaces {
        document["relatesTo"] = json!([{
            "code": "replaces",
            "target": {"identifier": {"system": settings.document_system, "value": old}},
        }]);
    }
    let participant = |code: &str, who: &Value| {
        json!({
            "type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": code,
            }]},
            "who": who,
        })
    };
    let mut entities = Vec::new();
    if let Some(audio) = &attestation.audio_sha256 {
        entities.push(json!({
            "role": "source",
            "what": {
                "identifier": {"system": "urn:edge-scribe:audio-sha256", "value": audio},
                "display": "visit audio recording",
            },
        }));
    }
    for model in &attestation.models {
        entities.push(json!({
            "role": "derivation",
            "what": {
                "identifier": {"system": "urn:edge-scribe:model-sha256", "value": model.sha256},
                "display": format!("model {}", model.name),
            },
        }));
    }
    let mut provenance = json!({
        "resourceType": "Provenance",
        "id": provenance_id,
        "target": [{"reference": format!("urn:uuid:{doc_uuid}")}],
        "recorded": attestation.signed_at,
        "activity": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "code": if note.replaces.is_some() { "APPEND" } else { "CREATE" },
        }]},
        "agent": [
            participant("author", &clinician),
            participant("attester", &clinician),
            participant("assembler", &device),
        ],
        "signature": [{
            "type": [{
                "system": "urn:iso-astm:E1762-95:2013",
                "code": "1.2.840.10065.1.12.1.1",
                "display": "Author's Signature",
            }],
            "when": attestation.signed_at,
            "who": clinician,
            "sigFormat": "application/json",
            "data": b64(note.signed_json.as_bytes()),
        }],
    });
    if !entities.is_empty() {
        provenance["entity"] = Value::Array(entities);
    }
    Ok(json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": format!("urn:uuid:{doc_uuid}"),
                "resource": document,
                "request": {
                    "method": "POST",
                    "url": "DocumentReference",
                    "ifNoneExist": format!(
                        "identifier={}",
                        url_encode(&format!("{}|{}", settings.document_system, note.business_id))
                    ),
                },
            },
            {
                "fullUrl": format!("{base}/Binary/{binary_id}"),
                "resource": {
                    "resourceType": "Binary",
                    "id": binary_id,
                    "contentType": "text/plain; charset=utf-8",
                    "data": b64(text.as_bytes()),
                },
                "request": {"method": "PUT", "url": format!("Binary/{binary_id}")},
            },
            {
                "fullUrl": format!("{base}/Provenance/{provenance_id}"),
                "resource": provenance,
                "request": {"method": "PUT", "url": format!("Provenance/{provenance_id}")},
            },
        ],
    }))
}

/// A FHIR id (`[A-Za-z0-9\-\.]{1,64}`) derived from the business id: the same note always
/// lands on the same Binary and Provenance.
fn resource_id(prefix: &str, business_id: &str) -> String {
    let hash = hex(digest(&SHA256, business_id.as_bytes()).as_ref());
    format!("es-{prefix}-{}", &hash[..40])
}

/// A name-based UUID (from SHA-256, version bits set to 8: custom) for the bundle's fullUrl.
fn uuid_from(name: &str) -> String {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest(&SHA256, name.as_bytes()).as_ref()[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes).to_string()
}

fn header(response: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn read_json(response: ureq::http::Response<ureq::Body>) -> Result<Value, SendError> {
    let bytes = response
        .into_body()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| transport_error(&e))?;
    serde_json::from_slice(&bytes).map_err(|_| SendError::Retry {
        status: "unreadable response".into(),
        retry_after: None,
    })
}

/// The retry class of an HTTP status that is not success.
pub fn status_error(status: u16, retry_after: Option<String>) -> SendError {
    let code = format!("http {status}");
    match status {
        429 | 503 => SendError::Retry {
            status: code,
            retry_after: retry_after.as_deref().and_then(parse_retry_after),
        },
        408 | 409 | 412 | 425 | 500..=599 => SendError::Retry {
            status: code,
            retry_after: None,
        },
        _ => SendError::Permanent { status: code },
    }
}

/// `Retry-After` in seconds (the HTTP-date form falls back to the backoff), capped at an hour.
fn parse_retry_after(value: &str) -> Option<Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

fn transport_error(error: &ureq::Error) -> SendError {
    match error {
        ureq::Error::Timeout(_) => SendError::Retry {
            status: "timeout".into(),
            retry_after: None,
        },
        ureq::Error::Rustls(e) => SendError::Permanent {
            status: format!("tls: {}", super::tls::describe_handshake_error(e)),
        },
        ureq::Error::Tls(what) => SendError::Permanent {
            status: format!("tls: {what}"),
        },
        ureq::Error::Io(e) => SendError::Retry {
            status: format!("network: {}", io_kind(e.kind())),
            retry_after: None,
        },
        ureq::Error::HostNotFound => SendError::Retry {
            status: "network: host not found".into(),
            retry_after: None,
        },
        ureq::Error::ConnectionFailed => SendError::Retry {
            status: "network: connection failed".into(),
            retry_after: None,
        },
        _ => SendError::Retry {
            status: "network: protocol error".into(),
            retry_after: None,
        },
    }
}

fn io_kind(kind: std::io::ErrorKind) -> &'static str {
    use std::io::ErrorKind::*;
    match kind {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset",
        ConnectionAborted => "connection aborted",
        UnexpectedEof => "connection closed before the response",
        TimedOut | WouldBlock => "timeout",
        _ => "i/o error",
    }
}

/// ureq's TLS settings from the destination's PEM files (checked by `tls`).
fn ureq_tls(files: &super::tls::TlsFiles) -> Result<ureq::tls::TlsConfig, super::tls::TlsError> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
    let roots: Vec<Certificate<'static>> = super::tls::read_pem_certs(&files.ca_cert)?
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    let mut builder = TlsConfig::builder().root_certs(RootCerts::new_with_certs(&roots));
    if let (Some(cert), Some(key)) = (&files.client_cert, &files.client_key) {
        // The same checks as MLLP: permissions, expiry, key matching the certificate.
        super::tls::client_config(files)?;
        let chain: Vec<Certificate<'static>> = super::tls::read_pem_certs(cert)?
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned())
            .collect();
        // read_pem_key checks the file's permissions and that it holds one key; ureq then
        // takes the same PEM.
        super::tls::read_pem_key(key)?;
        let pem = std::fs::read(key).map_err(|source| super::tls::TlsError::Read {
            path: key.clone(),
            source,
        })?;
        let key = PrivateKey::from_pem(&pem)
            .map_err(|_| super::tls::TlsError::NoKey { path: key.clone() })?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(builder.build())
}

/// Percent-encoding for a query value (RFC 3986 unreserved characters pass).
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_for_the_retry_policy() {
        assert_eq!(
            status_error(429, Some("2".into())),
            SendError::Retry {
                status: "http 429".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert!(matches!(status_error(503, None), SendError::Retry { .. }));
        assert!(matches!(status_error(412, None), SendError::Retry { .. }));
        assert!(matches!(status_error(409, None), SendError::Retry { .. }));
        assert!(matches!(
            status_error(400, None),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            status_error(422, None),
            SendError::Permanent { .. }
        ));
        assert!(matches!(
            status_error(401, None),
            SendError::Permanent { .. }
        ));
        // An HTTP-date Retry-After is not understood: the backoff decides instead.
        assert_eq!(
            status_error(429, Some("Wed, 21 Oct 2026 07:28:00 GMT".into())),
            SendError::Retry {
                status: "http 429".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn ids_are_stable_and_valid_fhir_ids() {
        let a = resource_id("bin", "e1.1");
        assert_eq!(a, resource_id("bin", "e1.1"));
        assert_ne!(a, resource_id("bin", "e1.2"));
        assert!(a.len() <= 64 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let u = uuid_from("x");
        assert_eq!(uuid::Uuid::parse_str(&u).unwrap().to_string(), u);
        assert_eq!(url_encode("urn:a|b c"), "urn%3Aa%7Cb%20c");
    }
}
