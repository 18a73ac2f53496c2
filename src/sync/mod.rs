//! Write-back to the EHR: the sender that drains the durable outbox (`store::outbox`) into each
//! configured destination, FHIR R4 (`fhir`) or HL7 v2 MDM^T02 over MLLP (`hl7`, `mllp`), over
//! TLS with a client certificate where configured (`tls`).
//!
//! Exactly once rests on three things: the note is queued in the transaction that signs it;
//! every attempt carries the note's stable business identifier, and the EHR creates the document
//! only if none with that identifier exists (FHIR conditional create); and an attempt whose
//! outcome is unknown (a lost response, a killed process) is simply made again. After the EHR
//! accepts a document, it is read back and its content hash compared; a mismatch queues it again.
//!
//! Retry policy: 429 waits for `Retry-After`; 5xx, timeouts and network errors back off
//! exponentially with full jitter; 409/412 retry; any other 4xx, and a destination that keeps
//! failing for `max_attempts`, moves the item to the dead-letter state for an admin to retry or
//! cancel. What is logged and stored about an attempt is codes and ids, never the note or the
//! server's reply text (which may echo the note).

pub mod fhir;
pub mod hl7;
mod hl7_transport;
pub mod mllp;
pub mod tls;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::attest::{self, SignedNote};
use crate::config::{DestinationKind, DestinationSettings, SyncSettings};
use crate::store::outbox::{DeliveryOutcome, OutboxItem};
use crate::store::{now_ms, Store, StoreError};

/// Why an attempt failed, classified for the retry policy. `status` is a short code for the
/// outbox and the audit log (`http 503`, `network`, `mllp AE`), never server text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth trying again; `retry_after` is the server's own wait, if it said one.
    Retry {
        status: String,
        retry_after: Option<Duration>,
    },
    /// Will fail the same way every time (bad request, refused certificate, no patient).
    Permanent { status: String },
}

/// What a read-back found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBack {
    /// Exactly one document with the business identifier, with the signed note's hash.
    Matches,
    /// Missing, duplicated or different content: send again.
    Differs,
}

/// A signed note ready to go out, with what the destinations need to file it.
#[derive(Clone)]
pub struct OutgoingNote {
    pub business_id: String,
    pub encounter_id: String,
    pub signed_seq: u32,
    /// The business id of the note this one corrects (an addendum).
    pub replaces: Option<String>,
    pub patient_ref: Option<String>,
    pub clinician_id: String,
    pub clinician_name: Option<String>,
    pub template: String,
    pub note: SignedNote,
    /// The signed note file, carried in the Provenance so the EHR can verify it offline.
    pub signed_json: String,
}

impl std::fmt::Debug for OutgoingNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingNote")
            .field("business_id", &self.business_id)
            .field("signed_seq", &self.signed_seq)
            .field("note_bytes", &self.note.note_text().len())
            .finish_non_exhaustive()
    }
}

/// A way to deliver notes to one destination.
pub trait Transport: Send {
    /// Files the note; the EHR's id for it on success.
    fn deliver(&mut self, note: &OutgoingNote) -> Result<String, SendError>;
    /// Checks what the EHR holds for the note.
    fn read_back(&mut self, note: &OutgoingNote, remote_id: &str) -> Result<ReadBack, SendError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("destination {name}: {message}")]
    Destination { name: String, message: String },
}

/// The delay before attempt `attempt + 1`: exponential with full jitter (a uniformly random
/// wait up to the exponential bound), so many boxes retrying one EHR do not pulse together.
pub fn backoff(attempt: u32, base: Duration, max: Duration, random: f64) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(20));
    let bound = exp.min(max);
    bound.mul_f64(random.clamp(0.0, 1.0))
}

/// What happens to an item after a failed attempt.
pub fn outcome_of_failure(
    error: &SendError,
    attempts: u32,
    settings: &DestinationSettings,
    now_ms: i64,
    random: f64,
) -> DeliveryOutcome {
    match error {
        SendError::Permanent { status } => DeliveryOutcome::Dead {
            status: status.clone(),
        },
        SendError::Retry { status, .. } if attempts >= settings.max_attempts => {
            DeliveryOutcome::Dead {
                status: format!("{status}; gave up after {attempts} attempts"),
            }
        }
        SendError::Retry {
            status,
            retry_after,
        } => {
            let wait = retry_after.unwrap_or_else(|| {
                backoff(
                    attempts.saturating_sub(1),
                    settings.backoff_base,
                    settings.backoff_max,
                    random,
                )
            });
            DeliveryOutcome::Retry {
                next_attempt_ms: now_ms + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
                status: status.clone(),
            }
        }
    }
}

/// Builds the note to send for an outbox item from the store: the signed document (checked
/// against the box's own key), the patient reference and the clinician.
pub fn outgoing_note(
    store: &Store,
    item: &OutboxItem,
    public_key: &[u8],
) -> Result<OutgoingNote, SendError> {
    let permanent = |status: &str| SendError::Permanent {
        status: status.to_owned(),
    };
    let signed_json = store
        .signed_note(&item.encounter_id, item.signed_seq)
        .map_err(|e| store_failure(&e))?
        .ok_or_else(|| permanent("signed note missing"))?;
    let note = attest::verify_signed_note(&signed_json, Some(public_key))
        .map_err(|_| permanent("signed note does not verify"))?
        .into_signed_note();
    let patient_ref = store
        .patient_ref(&item.encounter_id)
        .map_err(|e| store_failure(&e))?;
    let clinician_id = note.attestation().clinician_id.clone();
    let clinician_name = store
        .user_by_id(&clinician_id)
        .map_err(|e| store_failure(&e))?
        .map(|u| u.username);
    Ok(OutgoingNote {
        business_id: item.business_id.clone(),
        encounter_id: item.encounter_id.clone(),
        signed_seq: item.signed_seq,
        replaces: (item.signed_seq > 1)
            .then(|| crate::store::outbox::business_id(&item.encounter_id, 1)),
        patient_ref,
        clinician_id,
        clinician_name,
        template: note.attestation().template_id.clone(),
        note,
        signed_json,
    })
}

fn store_failure(e: &StoreError) -> SendError {
    match e {
        // The encounter was deleted (crypto-shredded) while its note waited: nothing to send.
        StoreError::DataKeyGone { .. } | StoreError::UnknownEncounter { .. } => {
            SendError::Permanent {
                status: "encounter deleted".into(),
            }
        }
        _ => SendError::Retry {
            status: "local store".into(),
            retry_after: None,
        },
    }
}

/// Drains the outbox until `shutdown`: claims due items, delivers or reads back each, records
/// the outcome. Runs on its own thread with its own store connection.
pub fn run_sender(
    store: &Store,
    settings: &SyncSettings,
    public_key: &[u8],
    shutdown: &AtomicBool,
) -> Result<(), SyncError> {
    let mut transports: HashMap<String, Box<dyn Transport>> = HashMap::new();
    for destination in &settings.destinations {
        transports.insert(destination.name.clone(), open_transport(destination)?);
    }
    let by_name: HashMap<&str, &DestinationSettings> = settings
        .destinations
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    let requeued = store.requeue_interrupted_deliveries()?;
    if requeued > 0 {
        tracing::warn!(
            items = requeued,
            "deliveries interrupted by a restart are queued again"
        );
    }
    let mut random = Jitter::seeded();
    // A destination that answered "slow down" (429/503 with Retry-After) or failed is paused
    // as a whole until then: its other items wait instead of hammering it, and one item probes
    // it when the pause ends.
    let mut paused_until: HashMap<String, i64> = HashMap::new();
    while !shutdown.load(Ordering::SeqCst) {
        let now = now_ms();
        paused_until.retain(|_, until| *until > now);
        let paused: Vec<String> = paused_until.keys().cloned().collect();
        let items = store.claim_due_deliveries(now, 16, &paused)?;
        if items.is_empty() {
            std::thread::sleep(settings.poll_interval);
            continue;
        }
        for item in items {
            if let Some(until) = paused_until.get(&item.destination).copied() {
                store.defer_delivery(&item, until)?;
                continue;
            }
            let (Some(transport), Some(destination)) = (
                transports.get_mut(&item.destination),
                by_name.get(item.destination.as_str()),
            ) else {
                store.record_delivery(
                    &item.id,
                    &DeliveryOutcome::Dead {
                        status: "destination no longer configured".into(),
                    },
                )?;
                continue;
            };
            store.audit_delivery_attempt(&item)?;
            let outcome = attempt(
                store,
                &item,
                transport.as_mut(),
                destination,
                public_key,
                &mut random,
            );
            log_outcome(&item, &outcome);
            if let DeliveryOutcome::Retry {
                next_attempt_ms, ..
            } = &outcome
            {
                paused_until.insert(item.destination.clone(), *next_attempt_ms);
            }
            store.record_delivery(&item.id, &outcome)?;
        }
    }
    Ok(())
}

fn attempt(
    store: &Store,
    item: &OutboxItem,
    transport: &mut dyn Transport,
    destination: &DestinationSettings,
    public_key: &[u8],
    random: &mut Jitter,
) -> DeliveryOutcome {
    let fail = |e: &SendError, random: &mut Jitter| {
        outcome_of_failure(e, item.attempts, destination, now_ms(), random.next())
    };
    let note = match outgoing_note(store, item, public_key) {
        Ok(note) => note,
        Err(e) => return fail(&e, random),
    };
    match (&item.state, &item.remote_id) {
        // Accepted earlier: this is the read-back.
        (crate::store::outbox::DeliveryState::Sent, Some(remote_id)) => {
            match transport.read_back(&note, remote_id) {
                Ok(ReadBack::Matches) => DeliveryOutcome::Confirmed,
                Ok(ReadBack::Differs) => DeliveryOutcome::Retry {
                    next_attempt_ms: now_ms(),
                    status: "read-back mismatch".into(),
                },
                Err(e) => fail(&e, random),
            }
        }
        _ => match transport.deliver(&note) {
            Ok(remote_id) if destination.read_back => DeliveryOutcome::Sent { remote_id },
            Ok(_) => DeliveryOutcome::Confirmed,
            Err(e) => fail(&e, random),
        },
    }
}

fn log_outcome(item: &OutboxItem, outcome: &DeliveryOutcome) {
    match outcome {
        DeliveryOutcome::Sent { remote_id } => tracing::info!(
            outbox = %item.id, destination = %item.destination, remote_id = %remote_id,
            "note accepted by the EHR"
        ),
        DeliveryOutcome::Confirmed => tracing::info!(
            outbox = %item.id, destination = %item.destination, "note confirmed in the chart"
        ),
        DeliveryOutcome::Retry {
            status,
            next_attempt_ms,
        } => tracing::warn!(
            outbox = %item.id, destination = %item.destination, status = %status,
            attempt = item.attempts, retry_in_ms = next_attempt_ms - now_ms(),
            "delivery failed; will retry"
        ),
        DeliveryOutcome::Dead { status } => tracing::error!(
            outbox = %item.id, destination = %item.destination, status = %status,
            attempt = item.attempts,
            "delivery dead-lettered: an admin must retry or cancel it (admin API /api/outbox)"
        ),
    }
}

/// Opens every destination's transport without sending anything, so a config can be checked
/// (certificates load, keys are private, not expired) before it goes live. One problem per
/// failing destination.
pub fn check_destinations(settings: &SyncSettings) -> Vec<String> {
    settings
        .destinations
        .iter()
        .filter_map(|d| open_transport(d).err().map(|e| e.to_string()))
        .collect()
}

fn open_transport(destination: &DestinationSettings) -> Result<Box<dyn Transport>, SyncError> {
    let err = |message: String| SyncError::Destination {
        name: destination.name.clone(),
        message,
    };
    match destination.kind {
        DestinationKind::Fhir => Ok(Box::new(
            fhir::FhirTransport::new(destination).map_err(|e| err(e.to_string()))?,
        )),
        DestinationKind::Hl7 => Ok(Box::new(
            hl7_transport::MdmTransport::new(destination).map_err(|e| err(e.to_string()))?,
        )),
    }
}

/// A small xorshift source of jitter, seeded from the clock: retries need spread, not secrecy.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Jitter {
        Jitter((now_ms() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1))
    }

    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DestinationSettings {
        DestinationSettings {
            name: "ehr".into(),
            kind: DestinationKind::Fhir,
            url: Some("http://127.0.0.1:1/fhir".into()),
            address: None,
            tls: None,
            timeout: Duration::from_secs(5),
            max_attempts: 5,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            read_back: true,
            document_system: "urn:edge-scribe:note".into(),
            patient_system: "urn:clinic:mrn".into(),
            server_name: None,
        }
    }

    #[test]
    fn backoff_grows_exponentially_under_full_jitter_and_is_capped() {
        let base = Duration::from_millis(500);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, base, max, 1.0), base);
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, 1.0), max);
        assert_eq!(backoff(3, base, max, 0.0), Duration::ZERO);
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_secs(2));
        let mut jitter = Jitter::seeded();
        let draws: Vec<f64> = (0..1000).map(|_| jitter.next()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn retry_after_wins_permanent_errors_die_and_attempts_run_out() {
        let s = settings();
        let retry_after = SendError::Retry {
            status: "http 429".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            outcome_of_failure(&retry_after, 1, &s, 1_000, 0.9),
            DeliveryOutcome::Retry {
                next_attempt_ms: 3_000,
                status: "http 429".into()
            }
        );
        let permanent = SendError::Permanent {
            status: "http 400".into(),
        };
        assert!(matches!(
            outcome_of_failure(&permanent, 1, &s, 0, 0.5),
            DeliveryOutcome::Dead { .. }
        ));
        let network = SendError::Retry {
            status: "network".into(),
            retry_after: None,
        };
        match outcome_of_failure(&network, 3, &s, 0, 1.0) {
            DeliveryOutcome::Retry {
                next_attempt_ms, ..
            } => assert_eq!(next_attempt_ms, 2_000),
            other => panic!("{other:?}"),
        }
        match outcome_of_failure(&network, 5, &s, 0, 1.0) {
            DeliveryOutcome::Dead { status } => assert!(status.contains("5 attempts"), "{status}"),
            other => panic!("{other:?}"),
        }
    }
}
