//! The admin port: an HTTPS API for the clinic's IT, on its own address (loopback by default).
//!
//! Contract: `docs/admin-openapi.json` (served at `/admin/v1/openapi.json`). IT signs in with an
//! admin account for a short-lived bearer token (and, when `admin.client_ca` is set, a client
//! certificate at the TLS layer). Every authenticated call is audited. No endpoint returns
//! transcripts, audio or notes: what it touches is config, devices, badges, models, counts.
//!
//! Config changes go through the daemon (see [`Runtime`]): the server validates a pushed
//! config, records it as a version, writes the file, and asks the daemon to apply it; the
//! daemon applies what it can in place, restarts the components that need it and reports the
//! health check; a config that fails it is rolled back to the version before.

pub mod bundle;
pub mod configs;
pub mod fuzzing;
mod server;
pub mod tls;

pub use self::server::{bind, render_metrics, router, serve, AdminServer, AdminState};

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::service::Heartbeat;

/// File in the data directory holding the admin port's bound address.
pub const ADDR_FILE_NAME: &str = "admin.addr";

/// A config for the daemon to apply. The reply lists what failed the health check (empty:
/// healthy).
pub struct ApplyRequest {
    pub config: Arc<Config>,
    pub reply: oneshot::Sender<Vec<String>>,
}

/// The admin server's handle on the running daemon.
#[derive(Clone)]
pub struct Runtime {
    pub apply: mpsc::Sender<ApplyRequest>,
    pub current: watch::Receiver<Arc<Config>>,
    pub health: Arc<Health>,
}

/// State of a component that may be off, starting, up or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ComponentState {
    Off = 0,
    Starting = 1,
    Up = 2,
    Failed = 3,
}

impl ComponentState {
    fn from_u8(v: u8) -> ComponentState {
        match v {
            1 => ComponentState::Starting,
            2 => ComponentState::Up,
            3 => ComponentState::Failed,
            _ => ComponentState::Off,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ComponentState::Off => "off",
            ComponentState::Starting => "starting",
            ComponentState::Up => "up",
            ComponentState::Failed => "failed",
        }
    }
}

/// What `/ready` reports, updated by the daemon's components.
#[derive(Debug)]
pub struct Health {
    review: AtomicU8,
    sender: AtomicU8,
    /// The processing thread's heartbeat (the same one that feeds the systemd watchdog).
    processing: Arc<Heartbeat>,
    processing_started: AtomicBool,
    draining: AtomicBool,
}

/// A processing thread silent this long (outside a declared long step) is stalled.
const PROCESSING_STALL: Duration = Duration::from_secs(60);

impl Health {
    pub fn new(processing: Arc<Heartbeat>) -> Health {
        Health {
            review: AtomicU8::new(ComponentState::Off as u8),
            sender: AtomicU8::new(ComponentState::Off as u8),
            processing,
            processing_started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }
    pub fn set_review(&self, state: ComponentState) {
        self.review.store(state as u8, Ordering::SeqCst);
    }
    pub fn review(&self) -> ComponentState {
        ComponentState::from_u8(self.review.load(Ordering::SeqCst))
    }
    pub fn set_sender(&self, state: ComponentState) {
        self.sender.store(state as u8, Ordering::SeqCst);
    }
    pub fn sender(&self) -> ComponentState {
        ComponentState::from_u8(self.sender.load(Ordering::SeqCst))
    }
    /// The processing thread opened the store and its workers' settings; from now on its
    /// heartbeat counts.
    pub fn processing_started(&self) {
        self.processing_started.store(true, Ordering::SeqCst);
    }
    pub fn processing(&self) -> ComponentState {
        if !self.processing_started.load(Ordering::SeqCst) {
            ComponentState::Starting
        } else if self.processing.is_alive(PROCESSING_STALL) {
            ComponentState::Up
        } else {
            ComponentState::Failed
        }
    }
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
