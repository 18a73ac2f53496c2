//! Evaluation metrics.

pub mod aci;
pub mod recall;
pub mod rouge;
pub mod support;
pub mod wer;
