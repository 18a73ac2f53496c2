//! The clinician's review service: a JSON API and the web page, served by the daemon (axum).
//!
//! Contract: `docs/REVIEW_API.md`. Every handler names the [`Permission`] it needs and, for an
//! encounter, checks that the user owns it (clinician) or is assigned to it (reviewer); the
//! role table lives in `crate::auth`. Database work and password hashing run on the blocking
//! pool, never on the async runtime's threads. Errors carry ids and reasons, never patient
//! text; reads of patient content are audited.
//!
//! [`Permission`]: crate::auth::Permission

pub mod note;
pub mod quality;
mod server;

pub use self::server::{bind, router, serve, AppState, ReviewServer, ServeError, ServiceConfig};

use std::net::SocketAddr;
use std::time::Duration;

/// The review service's settings (config `[review]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewSettings {
    /// Where to listen; `None` turns the service off.
    pub listen: Option<SocketAddr>,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after login whatever happens.
    pub session_max: Duration,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        ReviewSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
            session_idle: Duration::from_secs(15 * 60),
            session_max: Duration::from_secs(12 * 3600),
        }
    }
}

/// File in the data directory holding the address the service is bound to, for scripts and
/// tests that ask for port 0.
pub const ADDR_FILE_NAME: &str = "review.addr";
