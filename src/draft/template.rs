//! Note templates as data: IT adds a TOML file to `config/templates/` and the encounter's type
//! selects it. A template names its sections and which kinds of facts fill each one.

use std::path::Path;

use serde::Deserialize;

use crate::clinical::FactKind;

const BUILTIN: [(&str, &str); 3] = [
    (
        "soap.toml",
        include_str!("../../config/templates/soap.toml"),
    ),
    (
        "history-and-physical.toml",
        include_str!("../../config/templates/history-and-physical.toml"),
    ),
    (
        "follow-up.toml",
        include_str!("../../config/templates/follow-up.toml"),
    ),
];

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
    /// Tell the section's facts in the patient's own sentences (third person) where they were
    /// said, as a history is written; facts not said by the patient keep their wording.
    #[serde(default)]
    pub narrative: bool,
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

impl Template {
    /// Parses and checks one template file; `path` only names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Template, TemplateError> {
        let invalid = |message: String| TemplateError::Invalid {
            path: path.into(),
            message,
        };
        let template: Template = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if template.id.trim().is_empty()
            || !template
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(format!(
                "id {:?} must be non-empty letters, digits, '-' or '_'",
                template.id
            )));
        }
        if template.sections.is_empty() {
            return Err(invalid("a template needs at least one [[sections]]".into()));
        }
        let mut seen_names = Vec::new();
        let mut seen_kinds = Vec::new();
        for section in &template.sections {
            if section.name.trim().is_empty() {
                return Err(invalid("a section has an empty name".into()));
            }
            if seen_names.contains(&section.name.to_lowercase()) {
                return Err(invalid(format!("section {:?} appears twice", section.name)));
            }
            seen_names.push(section.name.to_lowercase());
            if section.facts.is_empty() {
                return Err(invalid(format!(
                    "section {:?} lists no fact kinds to fill it",
                    section.name
                )));
            }
            for kind in &section.facts {
                // One home per fact kind keeps every fact in the note exactly once.
                if seen_kinds.contains(kind) {
                    return Err(invalid(format!(
                        "fact kind {kind:?} is given to more than one section (again in {:?})",
                        section.name
                    )));
                }
                seen_kinds.push(*kind);
            }
        }
        Ok(template)
    }

    pub fn section_names(&self) -> Vec<&str> {
        self.sections.iter().map(|s| s.name.as_str()).collect()
    }
}

/// All templates of a box, keyed by id.
#[derive(Debug, Clone, Default)]
pub struct TemplateSet {
    pub templates: Vec<Template>,
}

impl TemplateSet {
    /// The templates built into the binary (the repository's `config/templates/`), so a box
    /// drafts even before IT has installed a templates directory.
    pub fn builtin() -> Result<TemplateSet, TemplateError> {
        let mut set = TemplateSet::default();
        for (name, text) in BUILTIN {
            let path = format!("(built-in) {name}");
            set.add(Template::parse(text, &path)?, &path)?;
        }
        Ok(set)
    }

    /// The built-in templates, with the files of `dir` (if it exists) added on top; a file
    /// whose id matches a built-in one replaces it.
    pub fn with_overrides(dir: &Path) -> Result<TemplateSet, TemplateError> {
        let mut set = Self::builtin()?;
        if !dir.is_dir() {
            return Ok(set);
        }
        for template in Self::load_dir(dir)?.templates {
            set.templates.retain(|t| {
                t.id != template.id
                    && !t
                        .encounter_types
                        .iter()
                        .any(|e| template.encounter_types.contains(e))
            });
            set.templates.push(template);
        }
        Ok(set)
    }

    /// The template the configuration names.
    pub fn configured(
        settings: &crate::config::DraftingSettings,
    ) -> Result<Template, TemplateError> {
        Ok(Self::with_overrides(&settings.templates_dir)?
            .get(&settings.template)?
            .clone())
    }

    /// Reads every `*.toml` in `dir`, in name order, and checks them as a set.
    pub fn load_dir(dir: &Path) -> Result<TemplateSet, TemplateError> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(|source| TemplateError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| TemplateError::Read {
                path: shown.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                paths.push(path);
            }
        }
        paths.sort();
        let mut set = TemplateSet::default();
        for path in paths {
            let shown = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                path: shown.clone(),
                source,
            })?;
            set.add(Template::parse(&text, &shown)?, &shown)?;
        }
        if set.templates.is_empty() {
            return Err(TemplateError::Invalid {
                path: shown,
                message: "the directory holds no *.toml template".into(),
            });
        }
        Ok(set)
    }

    fn add(&mut self, template: Template, path: &str) -> Result<(), TemplateError> {
        let invalid = |message: String| TemplateError::Invalid {
            path: path.into(),
            message,
        };
        if self.templates.iter().any(|t| t.id == template.id) {
            return Err(invalid(format!(
                "template id {:?} is already used by another file",
                template.id
            )));
        }
        for encounter_type in &template.encounter_types {
            if let Some(other) = self.for_encounter_type(encounter_type) {
                return Err(invalid(format!(
                    "encounter type {encounter_type:?} already selects template {:?}",
                    other.id
                )));
            }
        }
        self.templates.push(template);
        Ok(())
    }

    /// The template an encounter type selects, if any.
    pub fn for_encounter_type(&self, encounter_type: &str) -> Option<&Template> {
        self.templates
            .iter()
            .find(|t| t.encounter_types.iter().any(|e| e == encounter_type))
    }

    pub fn ids(&self) -> Vec<&str> {
        self.templates.iter().map(|t| t.id.as_str()).collect()
    }

    pub fn get(&self, id: &str) -> Result<&Template, TemplateError> {
        self.templates
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| TemplateError::Unknown(id.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_templates() -> TemplateSet {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
        TemplateSet::load_dir(&dir).unwrap()
    }

    #[test]
    fn the_shipped_templates_load_and_cover_soap_hp_and_follow_up() {
        let set = repo_templates();
        for id in ["soap", "history-and-physical", "follow-up"] {
            assert!(
                set.get(id).is_ok(),
                "missing template {id}: {:?}",
                set.ids()
            );
        }
        assert_eq!(
            set.get("soap").unwrap().section_names(),
            ["Subjective", "Objective", "Assessment", "Plan"]
        );
        assert_eq!(set.for_encounter_type("follow-up").unwrap().id, "follow-up");
    }

    #[test]
    fn every_fact_kind_has_a_home_in_each_shipped_template() {
        use crate::clinical::FactKind::*;
        let all = [
            ChiefComplaint,
            Symptom,
            PertinentNegative,
            MedicalHistory,
            Vital,
            ExamFinding,
            Result,
            Medication,
            Allergy,
            SocialHistory,
            FamilyHistory,
            Assessment,
            Plan,
        ];
        for template in &repo_templates().templates {
            for kind in all {
                assert!(
                    template.sections.iter().any(|s| s.facts.contains(&kind)),
                    "{} has no section for {kind:?}",
                    template.id
                );
            }
        }
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let cases = [
            ("id = \"x\"\ntitle = \"X\"\nsections = []", "at least one"),
            (
                "id = \"x\"\ntitle = \"X\"\n[[sections]]\nname = \"A\"\nfacts = [\"vital\"]\n[[sections]]\nname = \"B\"\nfacts = [\"vital\"]",
                "more than one section",
            ),
            (
                "id = \"x\"\ntitle = \"X\"\n[[sections]]\nname = \"A\"\nfacts = [\"horoscope\"]",
                "horoscope",
            ),
            (
                "id = \"x y\"\ntitle = \"X\"\n[[sections]]\nname = \"A\"\nfacts = [\"vital\"]",
                "letters, digits",
            ),
            (
                "id = \"x\"\ntitle = \"X\"\ncolour = 1\n[[sections]]\nname = \"A\"\nfacts = [\"vital\"]",
                "colour",
            ),
        ];
        for (text, needle) in cases {
            let error = Template::parse(text, "t.toml").unwrap_err().to_string();
            assert!(error.contains(needle), "{error}");
            assert!(error.contains("t.toml"), "{error}");
        }
    }

    #[test]
    fn a_template_file_overrides_the_built_in_one_with_its_id() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("soap.toml"),
            "id = \"soap\"\ntitle = \"Clinic SOAP\"\n[[sections]]\nname = \"Everything\"\nfacts = [\"vital\"]\n",
        )
        .unwrap();
        let set = TemplateSet::with_overrides(dir.path()).unwrap();
        assert_eq!(set.get("soap").unwrap().title, "Clinic SOAP");
        assert!(set.get("follow-up").is_ok());
        let missing = TemplateSet::with_overrides(&dir.path().join("absent")).unwrap();
        assert_eq!(missing.get("soap").unwrap().title, "SOAP note");
    }

    #[test]
    fn two_templates_claiming_one_encounter_type_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let body = "title = \"X\"\nencounter_types = [\"visit\"]\n[[sections]]\nname = \"A\"\nfacts = [\"vital\"]\n";
        std::fs::write(dir.path().join("a.toml"), format!("id = \"a\"\n{body}")).unwrap();
        std::fs::write(dir.path().join("b.toml"), format!("id = \"b\"\n{body}")).unwrap();
        let error = TemplateSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(error.contains("already selects"), "{error}");
    }
}
