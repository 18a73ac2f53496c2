//! Composition: the note is built from extracted facts into the template's sections; an LLM may
//! rephrase and order them, citing the facts it uses, and the verifier has the last word.

use super::template::Template;
use super::{Draft, DraftError, DraftSettings};
use crate::inference::Drafter;
use crate::transcript::Transcript;

/// Drafts a note for `transcript` in `template`. Without a drafter the note is the extracted
/// wording alone.
pub fn compose_draft(
    transcript: &Transcript,
    template: &Template,
    drafter: Option<&mut dyn Drafter>,
    settings: &DraftSettings,
) -> Result<Draft, DraftError> {
    let _ = (transcript, template, drafter, settings);
    Err(DraftError::NotImplemented)
}
