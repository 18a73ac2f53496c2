//! edge-scribe: an on-premises ambient clinical scribe.
//!
//! The library holds every stage of the pipeline; `main.rs` only parses the command line and
//! hands over. See ARCHITECTURE.md for the map and the invariants.

pub mod admin;
pub mod attest;
pub mod audio;
pub mod auth;
pub mod capture;
pub mod cli;
pub mod clinical;
pub mod coding;
pub mod config;
pub mod daemon;
pub mod draft;
pub mod eval;
pub mod frontend;
pub mod gaps;
pub mod http_body;
pub mod inference;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod pipeline;
pub mod report;
pub mod review;
pub mod room;
pub mod service;
pub mod store;
pub mod sync;
#[cfg(test)]
mod test_support;
pub mod transcript;
pub mod visits;
