//! The durable outbox: signed notes waiting to reach the EHR, one row per note and destination.
//!
//! A note is enqueued in the transaction that stores its signature, so a signed note is never
//! without its delivery, and a delivery never without its note. The sender claims due items,
//! and records each outcome here; every state change is audited by id. An item left `sending`
//! by a crash is put back in the queue at start-up: delivery is idempotent on the EHR side (a
//! stable business identifier and conditional create), so sending it again is safe.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::audit::{self, Actor, AuditAction, AuditDetail, AuditEntry};
use super::{now_ms, Store, StoreError};

/// Where an item is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Queued,
    /// Claimed by the sender; back to `queued` if the process dies.
    Sending,
    /// Accepted by the EHR; read-back pending.
    Sent,
    /// Read back from the EHR with the right content.
    Confirmed,
    /// Failed for good or too often; waits for an admin.
    Dead,
    Cancelled,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Queued,
        DeliveryState::Sending,
        DeliveryState::Sent,
        DeliveryState::Confirmed,
        DeliveryState::Dead,
        DeliveryState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::Confirmed => "confirmed",
            DeliveryState::Dead => "dead",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// The state named `s`, if any (for query parameters).
    pub fn parse_name(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
    }

    fn parse(s: &str) -> Result<DeliveryState, StoreError> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| StoreError::Unrecognised {
                what: format!("outbox state {s:?}"),
            })
    }
}

/// An outbox row. Ids, counts, codes: no patient content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxItem {
    pub id: String,
    pub encounter_id: String,
    pub signed_seq: u32,
    pub destination: String,
    /// Stable across retries: the EHR deduplicates on it.
    pub business_id: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_status: Option<String>,
    pub remote_id: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub confirmed_ms: Option<i64>,
}

/// What one delivery attempt ended in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// The EHR holds the document; `remote_id` is its id there. Read-back comes next.
    Sent { remote_id: String },
    /// Read back with the right content.
    Confirmed,
    /// Try again at `next_attempt_ms`. `status` is a code such as `http 429` or `network`.
    Retry {
        next_attempt_ms: i64,
        status: String,
    },
    /// Will not succeed by retrying; to the dead-letter state.
    Dead { status: String },
}

const COLUMNS: &str = "id, encounter_id, signed_seq, destination, business_id, state, attempts, \
                       next_attempt_ms, last_status, remote_id, created_ms, updated_ms, confirmed_ms";

fn item_from_row(row: &Row<'_>) -> rusqlite::Result<(OutboxItem, String)> {
    let state: String = row.get(5)?;
    Ok((
        OutboxItem {
            id: row.get(0)?,
            encounter_id: row.get(1)?,
            signed_seq: row.get(2)?,
            destination: row.get(3)?,
            business_id: row.get(4)?,
            state: DeliveryState::Queued,
            attempts: row.get(6)?,
            next_attempt_ms: row.get(7)?,
            last_status: row.get(8)?,
            remote_id: row.get(9)?,
            created_ms: row.get(10)?,
            updated_ms: row.get(11)?,
            confirmed_ms: row.get(12)?,
        },
        state,
    ))
}

fn query_items(
    conn: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<OutboxItem>, StoreError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM outbox {clause}"))?;
    let rows = stmt.query_map(args, item_from_row)?;
    let mut items = Vec::new();
    for row in rows {
        let (mut item, state) = row?;
        item.state = DeliveryState::parse(&state)?;
        items.push(item);
    }
    Ok(items)
}

/// The identifier the EHR sees for a signed note: the encounter and the note's place in it.
pub fn business_id(encounter_id: &str, signed_seq: u32) -> String {
    format!("{encounter_id}.{signed_seq}")
}

/// Queues a signed note for every destination, inside the caller's transaction.
pub(crate) fn enqueue_in(
    tx: &Connection,
    encounter_id: &str,
    signed_seq: u32,
    destinations: &[String],
    actor: &Actor,
) -> Result<(), StoreError> {
    let now = now_ms();
    for destination in destinations {
        let id = uuid::Uuid::new_v4().to_string();
        tx.execute(
            "INSERT INTO outbox (id, encounter_id, signed_seq, destination, business_id, state,
                                 next_attempt_ms, created_ms, updated_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?6, ?6)",
            params![
                id,
                encounter_id,
                signed_seq,
                destination,
                business_id(encounter_id, signed_seq),
                now
            ],
        )?;
        audit::append_in(
            tx,
            &AuditEntry {
                actor: actor.clone(),
                action: AuditAction::DeliveryQueued,
                subject: encounter_id.to_owned(),
                detail: AuditDetail {
                    outbox_id: Some(id),
                    destination: Some(destination.clone()),
                    ..AuditDetail::default()
                },
            },
        )?;
    }
    Ok(())
}

impl Store {
    /// Puts items a crashed sender left `sending` back in the queue. Run once at start-up,
    /// before the sender starts. Returns how many.
    pub fn requeue_interrupted_deliveries(&self) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "UPDATE outbox SET state = 'queued', updated_ms = ?1 WHERE state = 'sending'",
            [now_ms()],
        )?)
    }

    /// Claims up to `limit` items due at `now_ms` (queued ones, and sent ones awaiting their
    /// read-back), oldest first, marking queued ones `sending` and counting the attempt.
    pub fn claim_due_deliveries(
        &self,
        now_ms: i64,
        limit: u32,
        paused_destinations: &[String],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let tx = self.write_transaction()?;
        // A paused destination (throttling us, or down) keeps its items queued, unclaimed.
        let paused = serde_json::to_string(paused_destinations).map_err(StoreError::AuditEncode)?;
        let mut items = query_items(
            &tx,
            "WHERE state IN ('queued', 'sent') AND next_attempt_ms <= ?1
               AND destination NOT IN (SELECT value FROM json_each(?3))
             ORDER BY next_attempt_ms, created_ms LIMIT ?2",
            params![now_ms, limit, paused],
        )?;
        for item in &mut items {
            if item.state != DeliveryState::Queued {
                continue;
            }
            item.attempts += 1;
            item.state = DeliveryState::Sending;
            tx.execute(
                "UPDATE outbox SET state = 'sending', attempts = ?2, updated_ms = ?3 WHERE id = ?1",
                params![item.id, item.attempts, now_ms],
            )?;
        }
        tx.commit()?;
        Ok(items)
    }

    /// Audits that an attempt is about to go on the wire (so a crash during it leaves a trace).
    pub fn audit_delivery_attempt(&self, item: &OutboxItem) -> Result<(), StoreError> {
        self.append_audit(&AuditEntry {
            actor: Actor::System,
            action: AuditAction::DeliveryAttempted,
            subject: item.encounter_id.clone(),
            detail: AuditDetail {
                outbox_id: Some(item.id.clone()),
                destination: Some(item.destination.clone()),
                attempt: Some(u64::from(item.attempts)),
                ..AuditDetail::default()
            },
        })?;
        Ok(())
    }

    /// Puts a claimed item back without an attempt (its destination was paused meanwhile):
    /// the claim's attempt is not counted.
    pub fn defer_delivery(&self, item: &OutboxItem, until_ms: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE outbox SET state = 'queued', attempts = max(attempts - 1, 0),
                               next_attempt_ms = max(next_attempt_ms, ?2), updated_ms = ?3
             WHERE id = ?1 AND state = 'sending'",
            params![item.id, until_ms, now_ms()],
        )?;
        Ok(())
    }

    /// Records what an attempt (or a read-back) ended in.
    pub fn record_delivery(
        &self,
        item_id: &str,
        outcome: &DeliveryOutcome,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let item = query_items(&tx, "WHERE id = ?1", [item_id])?
            .pop()
            .ok_or_else(|| StoreError::UnknownOutboxItem {
                id: item_id.to_owned(),
            })?;
        let now = now_ms();
        let (action, status, remote_id) = match outcome {
            DeliveryOutcome::Sent { remote_id } => {
                // The read-back is due at once.
                tx.execute(
                    "UPDATE outbox SET state = 'sent', remote_id = ?2, last_status = 'accepted',
                                       next_attempt_ms = ?3, updated_ms = ?3 WHERE id = ?1",
                    params![item_id, remote_id, now],
                )?;
                (AuditAction::DeliverySent, None, Some(remote_id.clone()))
            }
            DeliveryOutcome::Confirmed => {
                tx.execute(
                    "UPDATE outbox SET state = 'confirmed', last_status = 'confirmed',
                                       confirmed_ms = ?2, updated_ms = ?2 WHERE id = ?1",
                    params![item_id, now],
                )?;
                (AuditAction::DeliveryConfirmed, None, item.remote_id.clone())
            }
            DeliveryOutcome::Retry {
                next_attempt_ms,
                status,
            } => {
                tx.execute(
                    "UPDATE outbox SET state = 'queued', last_status = ?2, next_attempt_ms = ?3,
                                       updated_ms = ?4 WHERE id = ?1",
                    params![item_id, status, next_attempt_ms, now],
                )?;
                (AuditAction::DeliveryRetrying, Some(status.clone()), None)
            }
            DeliveryOutcome::Dead { status } => {
                tx.execute(
                    "UPDATE outbox SET state = 'dead', last_status = ?2, updated_ms = ?3
                     WHERE id = ?1",
                    params![item_id, status, now],
                )?;
                (
                    AuditAction::DeliveryDeadLettered,
                    Some(status.clone()),
                    None,
                )
            }
        };
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: Actor::System,
                action,
                subject: item.encounter_id.clone(),
                detail: AuditDetail {
                    outbox_id: Some(item.id.clone()),
                    destination: Some(item.destination.clone()),
                    attempt: Some(u64::from(item.attempts)),
                    status,
                    remote_id,
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// An admin's decision on a dead (or queued) item: send it again from scratch, or give up.
    pub fn resolve_dead_delivery(
        &self,
        item_id: &str,
        retry: bool,
        actor: &Actor,
    ) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        let item = query_items(&tx, "WHERE id = ?1", [item_id])?
            .pop()
            .ok_or_else(|| StoreError::UnknownOutboxItem {
                id: item_id.to_owned(),
            })?;
        if !matches!(item.state, DeliveryState::Dead | DeliveryState::Queued) {
            return Err(StoreError::DeliveryNotPending {
                id: item_id.to_owned(),
                state: item.state.as_str(),
            });
        }
        let now = now_ms();
        if retry {
            tx.execute(
                "UPDATE outbox SET state = 'queued', attempts = 0, next_attempt_ms = ?2,
                                   updated_ms = ?2 WHERE id = ?1",
                params![item_id, now],
            )?;
        } else {
            tx.execute(
                "UPDATE outbox SET state = 'cancelled', updated_ms = ?2 WHERE id = ?1",
                params![item_id, now],
            )?;
        }
        audit::append_in(
            &tx,
            &AuditEntry {
                actor: actor.clone(),
                action: if retry {
                    AuditAction::DeliveryRequeued
                } else {
                    AuditAction::DeliveryCancelled
                },
                subject: item.encounter_id.clone(),
                detail: AuditDetail {
                    outbox_id: Some(item.id.clone()),
                    destination: Some(item.destination.clone()),
                    ..AuditDetail::default()
                },
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Items in `state` (all if `None`), newest first.
    pub fn outbox_items(
        &self,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        match state {
            Some(state) => query_items(
                &self.conn,
                "WHERE state = ?1 ORDER BY created_ms DESC LIMIT ?2",
                params![state.as_str(), limit],
            ),
            None => query_items(
                &self.conn,
                "ORDER BY created_ms DESC LIMIT ?1",
                params![limit],
            ),
        }
    }

    /// The deliveries of one encounter, for the review page's status line.
    pub fn deliveries_of(&self, encounter_id: &str) -> Result<Vec<OutboxItem>, StoreError> {
        query_items(
            &self.conn,
            "WHERE encounter_id = ?1 ORDER BY signed_seq, destination",
            [encounter_id],
        )
    }

    /// How many items are in each state, for metrics.
    pub fn outbox_counts(&self) -> Result<Vec<(DeliveryState, u64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT state, count(*) FROM outbox GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut counts = Vec::new();
        for row in rows {
            let (state, n) = row?;
            counts.push((DeliveryState::parse(&state)?, u64::try_from(n).unwrap_or(0)));
        }
        Ok(counts)
    }

    /// One signed document of an encounter by its sequence number (1 = the original).
    pub fn signed_note(&self, encounter_id: &str, seq: u32) -> Result<Option<String>, StoreError> {
        let exists: Option<u32> = self
            .conn
            .query_row(
                "SELECT seq FROM signed_notes WHERE encounter_id = ?1 AND seq = ?2",
                params![encounter_id, seq],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(None);
        }
        Ok(self
            .signed_notes(encounter_id)?
            .into_iter()
            .nth(seq as usize - 1))
    }
}
