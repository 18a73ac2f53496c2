//! HL7 v2 MDM^T02 over MLLP as a destination: the message from `hl7`, the wire from `mllp`.
//!
//! MLLP has no read-back, so an AA acknowledgement is the confirmation. The document id
//! (TXA-12) is the note's business id, so a receiver that deduplicates on it files a resent
//! message once; each attempt has its own message control id, as HL7 requires.

use std::time::Duration;

use super::hl7::{self, AckCode, MdmDocument, SendingApp};
use super::mllp::MllpClient;
use super::{OutgoingNote, ReadBack, SendError, Transport};
use crate::config::DestinationSettings;

pub struct MdmTransport {
    client: MllpClient,
    app: SendingApp,
}

#[derive(Debug, thiserror::Error)]
pub enum MdmTransportError {
    #[error("destination {name} has no address")]
    NoAddress { name: String },
    #[error("TLS setup for {name}: {source}")]
    Tls {
        name: String,
        source: super::tls::TlsError,
    },
    #[error("destination {name}: {message}")]
    ServerName { name: String, message: String },
}

impl MdmTransport {
    pub fn new(settings: &DestinationSettings) -> Result<MdmTransport, MdmTransportError> {
        let address = settings
            .address
            .clone()
            .ok_or_else(|| MdmTransportError::NoAddress {
                name: settings.name.clone(),
            })?;
        let tls = match &settings.tls {
            None => None,
            Some(files) => {
                let config =
                    super::tls::client_config(files).map_err(|source| MdmTransportError::Tls {
                        name: settings.name.clone(),
                        source,
                    })?;
                let host = settings.server_name.clone().unwrap_or_else(|| {
                    address
                        .rsplit_once(':')
                        .map_or(address.clone(), |(host, _)| host.to_owned())
                });
                let name = rustls::pki_types::ServerName::try_from(host).map_err(|_| {
                    MdmTransportError::ServerName {
                        name: settings.name.clone(),
                        message: "server_name is not a valid DNS name or IP address".into(),
                    }
                })?;
                Some((config, name))
            }
        };
        let mut client = MllpClient::new(address, tls, settings.timeout);
        if let Some(files) = &settings.tls {
            client = client.with_tls_files(files.clone());
        }
        Ok(MdmTransport {
            client,
            app: SendingApp {
                application: "EDGE-SCRIBE".into(),
                facility: "CLINIC".into(),
                receiving_application: "EHR".into(),
                receiving_facility: "CLINIC".into(),
            },
        })
    }
}

impl Transport for MdmTransport {
    fn deliver(&mut self, note: &OutgoingNote) -> Result<String, SendError> {
        let patient = note
            .patient_ref
            .clone()
            .ok_or_else(|| SendError::Permanent {
                status: "no patient reference on the encounter".into(),
            })?;
        let attestation = note.note.attestation();
        let document = MdmDocument {
            message_control_id: uuid::Uuid::new_v4().simple().to_string()[..20].to_owned(),
            document_id: note.business_id.clone(),
            parent_document_id: note.replaces.clone(),
            patient_id: patient,
            encounter_id: note.encounter_id.clone(),
            clinician_id: note.clinician_id.clone(),
            clinician_name: note.clinician_name.clone(),
            document_type: note.template.to_uppercase(),
            signed_at: attestation.signed_at.clone(),
            note_text: note.note.note_text().to_owned(),
            note_sha256: attestation.note_sha256.clone(),
        };
        let message =
            hl7::try_build_mdm_t02(&document, &self.app).map_err(|_| SendError::Permanent {
                status: "mllp: the note cannot be written as MDM^T02".into(),
            })?;
        let ack = self.client.send(&message).map_err(|e| {
            if e.is_retryable() {
                SendError::Retry {
                    status: format!("mllp: {}", e.code()),
                    retry_after: None,
                }
            } else {
                SendError::Permanent {
                    status: format!("mllp: {}", e.code()),
                }
            }
        })?;
        match ack.code {
            AckCode::AA | AckCode::CA => Ok(document.document_id),
            // AE: the receiver could not process it now; AR: it refused the message.
            AckCode::AE | AckCode::CE => Err(SendError::Retry {
                status: "mllp AE".into(),
                retry_after: Some(Duration::from_secs(5)),
            }),
            AckCode::AR | AckCode::CR => Err(SendError::Permanent {
                status: "mllp AR".into(),
            }),
        }
    }

    fn read_back(&mut self, _note: &OutgoingNote, _remote_id: &str) -> Result<ReadBack, SendError> {
        // The AA was the receiver's confirmation; MLLP offers nothing to read back.
        Ok(ReadBack::Matches)
    }
}
