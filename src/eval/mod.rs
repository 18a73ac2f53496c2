//! Evaluation metrics.

pub mod aci;
pub mod diarization;
pub mod recall;
pub mod room;
pub mod rouge;
pub mod support;
pub mod vad;
pub mod wer;
