//! Visits heard live in an exam room: the desk where a clinician starts one, records the
//! patient's consent and ends it (through the review service), and where the daemon's
//! processing thread picks them up and reports how far it got.
//!
//! The desk holds ids, rooms, clinician ids, flags, times and states — never audio or text. The
//! box hears one room at a time (its two cores run one visit's front end and recognition while
//! drafting the last one); a start while a visit is being heard is refused, not queued.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

/// Finished visits kept for the clinicians' list.
const FINISHED_KEPT: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VisitError {
    #[error("room {0:?} has no array assigned on this box")]
    UnknownRoom(String),
    #[error("a visit is already being heard (in room {room}); this box hears one room at a time")]
    Busy { room: String },
    #[error("no such visit")]
    NotFound,
    #[error("the visit has already ended")]
    Ended,
    #[error("consent was already recorded for this visit")]
    ConsentTwice,
    #[error("the box is not listening for visits (no daemon, or it is shutting down)")]
    Closed,
}

/// Where a visit is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum VisitState {
    /// Started; the daemon has not opened the room's devices yet.
    Starting,
    Listening,
    /// Ended; the last chunks are being recognised and the note drafted.
    Finishing,
    /// Stored as encounter `encounter_id`, with its draft.
    Stored {
        encounter_id: String,
    },
    /// Ended without consent: nothing was kept and nothing stored.
    Discarded,
    /// The devices could not be opened or processing failed; `reason` names the step, never
    /// patient data.
    Failed {
        reason: String,
    },
}

impl VisitState {
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            VisitState::Stored { .. } | VisitState::Discarded | VisitState::Failed { .. }
        )
    }
}

/// What the clinician asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisitRequest {
    pub room: String,
    /// The account id of the clinician whose visit it is.
    pub clinician_id: String,
    /// Consent given at the start: audio is kept from the first frame.
    pub consent: bool,
    /// The patient's identifier in the EHR (patient data: never in [`VisitStatus`]).
    pub patient_ref: Option<String>,
}

/// A visit as the review page shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisitStatus {
    pub id: String,
    pub room: String,
    #[serde(skip)]
    pub clinician_id: String,
    pub consent: bool,
    /// Milliseconds since the epoch.
    pub started_at_ms: i64,
    /// Audio heard so far (all of it, kept or not), in milliseconds.
    pub heard_ms: u64,
    #[serde(flatten)]
    pub state: VisitState,
}

/// The daemon's side of a visit in progress: the flags the clinician's requests set.
#[derive(Debug, Default)]
pub struct VisitControl {
    consent: AtomicBool,
    end: AtomicBool,
}

impl VisitControl {
    /// A control with consent given (or not) from the start.
    pub fn new(consent: bool) -> VisitControl {
        VisitControl {
            consent: AtomicBool::new(consent),
            end: AtomicBool::new(false),
        }
    }

    pub fn consented(&self) -> bool {
        self.consent.load(Ordering::SeqCst)
    }

    pub fn ended(&self) -> bool {
        self.end.load(Ordering::SeqCst)
    }

    pub fn give_consent(&self) {
        self.consent.store(true, Ordering::SeqCst);
    }

    pub fn end(&self) {
        self.end.store(true, Ordering::SeqCst);
    }
}

/// A visit handed to the daemon.
pub struct StartedVisit {
    pub id: String,
    pub request: VisitRequest,
    pub control: Arc<VisitControl>,
}

struct Entry {
    status: VisitStatus,
    control: Arc<VisitControl>,
    patient_ref: Option<String>,
}

#[derive(Default)]
struct Desk {
    /// Rooms with an array assigned, as the running config says.
    rooms: Vec<String>,
    visits: Vec<Entry>,
    /// Visits started and not yet picked up by the daemon.
    pending: VecDeque<String>,
    open: bool,
}

/// The shared desk: one per daemon.
#[derive(Default)]
pub struct VisitDesk {
    desk: Mutex<Desk>,
    started: Condvar,
}

impl VisitDesk {
    /// A desk for `rooms` (names of rooms with an array), open for visits.
    pub fn new(rooms: Vec<String>) -> Arc<VisitDesk> {
        Arc::new(VisitDesk {
            desk: Mutex::new(Desk {
                rooms,
                open: true,
                ..Desk::default()
            }),
            started: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Desk> {
        // A panic while holding the lock leaves plain data behind; it stays usable.
        self.desk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The rooms visits may be started in (a new config replaces them).
    pub fn set_rooms(&self, rooms: Vec<String>) {
        self.lock().rooms = rooms;
    }

    pub fn rooms(&self) -> Vec<String> {
        self.lock().rooms.clone()
    }

    /// Starts a visit for the requesting clinician.
    pub fn start(&self, request: VisitRequest, now_ms: i64) -> Result<VisitStatus, VisitError> {
        let mut desk = self.lock();
        if !desk.open {
            return Err(VisitError::Closed);
        }
        if !desk.rooms.contains(&request.room) {
            return Err(VisitError::UnknownRoom(request.room));
        }
        if let Some(busy) = desk.visits.iter().find(|e| !e.status.state.is_finished()) {
            return Err(VisitError::Busy {
                room: busy.status.room.clone(),
            });
        }
        let id = uuid::Uuid::new_v4().to_string();
        let status = VisitStatus {
            id: id.clone(),
            room: request.room.clone(),
            clinician_id: request.clinician_id.clone(),
            consent: request.consent,
            started_at_ms: now_ms,
            heard_ms: 0,
            state: VisitState::Starting,
        };
        desk.visits.push(Entry {
            status: status.clone(),
            control: Arc::new(VisitControl::new(request.consent)),
            patient_ref: request.patient_ref,
        });
        desk.pending.push_back(id);
        drop(desk);
        self.started.notify_all();
        Ok(status)
    }

    /// Records consent from now on. Only the visit's clinician may; anyone else is told there
    /// is no such visit.
    pub fn consent(&self, id: &str, clinician_id: &str) -> Result<VisitStatus, VisitError> {
        let mut desk = self.lock();
        let entry = find_own(&mut desk, id, clinician_id)?;
        if entry.status.state.is_finished() || entry.control.ended() {
            return Err(VisitError::Ended);
        }
        if entry.status.consent {
            return Err(VisitError::ConsentTwice);
        }
        entry.status.consent = true;
        entry.control.give_consent();
        Ok(entry.status.clone())
    }

    /// Ends the visit: listening stops, the rest is recognised, stored and drafted.
    pub fn end(&self, id: &str, clinician_id: &str) -> Result<VisitStatus, VisitError> {
        let mut desk = self.lock();
        let entry = find_own(&mut desk, id, clinician_id)?;
        if entry.status.state.is_finished() || entry.control.ended() {
            return Err(VisitError::Ended);
        }
        entry.control.end();
        if matches!(
            entry.status.state,
            VisitState::Starting | VisitState::Listening
        ) {
            entry.status.state = VisitState::Finishing;
        }
        Ok(entry.status.clone())
    }

    /// One visit of the clinician's.
    pub fn get(&self, id: &str, clinician_id: &str) -> Result<VisitStatus, VisitError> {
        let mut desk = self.lock();
        Ok(find_own(&mut desk, id, clinician_id)?.status.clone())
    }

    /// The clinician's visits, newest first.
    pub fn list(&self, clinician_id: &str) -> Vec<VisitStatus> {
        let desk = self.lock();
        let mut out: Vec<VisitStatus> = desk
            .visits
            .iter()
            .filter(|e| e.status.clinician_id == clinician_id)
            .map(|e| e.status.clone())
            .collect();
        out.reverse();
        out
    }

    /// The daemon waits up to `timeout` for a started visit.
    pub fn next_started(&self, timeout: Duration) -> Option<StartedVisit> {
        let mut desk = self.lock();
        if desk.pending.is_empty() {
            desk = self
                .started
                .wait_timeout(desk, timeout)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        let id = desk.pending.pop_front()?;
        let entry = desk.visits.iter().find(|e| e.status.id == id)?;
        Some(StartedVisit {
            id: id.clone(),
            request: VisitRequest {
                room: entry.status.room.clone(),
                clinician_id: entry.status.clinician_id.clone(),
                consent: entry.status.consent,
                patient_ref: entry.patient_ref.clone(),
            },
            control: entry.control.clone(),
        })
    }

    /// The daemon reports progress on a visit.
    pub fn report(&self, id: &str, state: Option<VisitState>, heard_ms: Option<u64>) {
        let mut desk = self.lock();
        if let Some(entry) = desk.visits.iter_mut().find(|e| e.status.id == id) {
            if let Some(heard) = heard_ms {
                entry.status.heard_ms = heard;
            }
            if let Some(state) = state {
                // Once the clinician has ended it, "listening" is old news.
                let ended = entry.control.ended();
                if !(ended && state == VisitState::Listening) {
                    entry.status.state = state;
                }
                if entry.status.state.is_finished() {
                    entry.patient_ref = None;
                }
            }
        }
        let finished = desk
            .visits
            .iter()
            .filter(|e| e.status.state.is_finished())
            .count();
        if finished > FINISHED_KEPT {
            let mut drop = finished - FINISHED_KEPT;
            desk.visits.retain(|e| {
                let gone = drop > 0 && e.status.state.is_finished();
                drop -= usize::from(gone);
                !gone
            });
        }
    }

    /// No more visits (shutdown): new starts are refused, visits in progress are ended.
    pub fn close(&self) {
        let mut desk = self.lock();
        desk.open = false;
        for entry in &desk.visits {
            if !entry.status.state.is_finished() {
                entry.control.end();
            }
        }
        drop(desk);
        self.started.notify_all();
    }
}

fn find_own<'d>(
    desk: &'d mut Desk,
    id: &str,
    clinician_id: &str,
) -> Result<&'d mut Entry, VisitError> {
    desk.visits
        .iter_mut()
        .find(|e| e.status.id == id && e.status.clinician_id == clinician_id)
        .ok_or(VisitError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(room: &str, clinician: &str, consent: bool) -> VisitRequest {
        VisitRequest {
            room: room.into(),
            clinician_id: clinician.into(),
            consent,
            patient_ref: Some("MRN-1".into()),
        }
    }

    #[test]
    fn a_visit_goes_from_start_to_stored_and_only_its_clinician_controls_it() {
        let desk = VisitDesk::new(vec!["exam-1".into(), "exam-2".into()]);
        assert_eq!(
            desk.start(request("exam-9", "c1", true), 0),
            Err(VisitError::UnknownRoom("exam-9".into()))
        );
        let visit = desk.start(request("exam-1", "c1", false), 5).unwrap();
        assert_eq!(visit.state, VisitState::Starting);
        // One room at a time.
        assert!(matches!(
            desk.start(request("exam-2", "c2", true), 6),
            Err(VisitError::Busy { .. })
        ));
        let started = desk.next_started(Duration::ZERO).unwrap();
        assert_eq!(started.id, visit.id);
        assert_eq!(started.request.patient_ref.as_deref(), Some("MRN-1"));
        assert!(!started.control.consented());
        desk.report(&visit.id, Some(VisitState::Listening), Some(1_000));
        // Another clinician cannot see or touch it.
        assert_eq!(desk.consent(&visit.id, "c2"), Err(VisitError::NotFound));
        assert!(desk.list("c2").is_empty());
        assert!(desk.consent(&visit.id, "c1").unwrap().consent);
        assert!(started.control.consented());
        assert_eq!(desk.consent(&visit.id, "c1"), Err(VisitError::ConsentTwice));
        assert_eq!(
            desk.end(&visit.id, "c1").unwrap().state,
            VisitState::Finishing
        );
        assert!(started.control.ended());
        assert_eq!(desk.end(&visit.id, "c1"), Err(VisitError::Ended));
        // A late "listening" report does not undo the end.
        desk.report(&visit.id, Some(VisitState::Listening), Some(2_000));
        assert_eq!(
            desk.get(&visit.id, "c1").unwrap().state,
            VisitState::Finishing
        );
        desk.report(
            &visit.id,
            Some(VisitState::Stored {
                encounter_id: "e1".into(),
            }),
            None,
        );
        let listed = desk.list("c1");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].heard_ms, 2_000);
        // The patient reference is not kept once the visit is over, and never serialised.
        let json = serde_json::to_string(&listed[0]).unwrap();
        assert!(!json.contains("MRN") && !json.contains("c1"), "{json}");
        assert!(json.contains("\"state\":\"stored\""), "{json}");
        // The room is free again.
        assert!(desk.start(request("exam-2", "c2", true), 7).is_ok());
    }

    #[test]
    fn closing_the_desk_ends_visits_and_refuses_new_ones() {
        let desk = VisitDesk::new(vec!["exam-1".into()]);
        desk.start(request("exam-1", "c1", true), 0).unwrap();
        let started = desk.next_started(Duration::ZERO).unwrap();
        desk.close();
        assert!(started.control.ended());
        assert_eq!(
            desk.start(request("exam-1", "c1", true), 1),
            Err(VisitError::Closed)
        );
    }
}
