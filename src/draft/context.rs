//! What drafting needs besides the transcript, loaded once when the daemon or a command starts:
//! the templates, the ICD-10-CM table and the documentation-gap rules.

use super::template::{Template, TemplateError, TemplateSet};
use super::Draft;
use crate::coding::{self, CodingError, Icd10Index};
use crate::config::Config;
use crate::gaps::{self, GapsError, RuleSet};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Gaps(#[from] GapsError),
    #[error(transparent)]
    Coding(#[from] CodingError),
}

pub struct DraftingContext {
    pub templates: TemplateSet,
    /// The configured default template's id (checked to exist at load).
    pub default_template: String,
    /// `None` when coding support is switched off in the config.
    pub icd10: Option<Icd10Index>,
    pub gap_rules: RuleSet,
}

impl DraftingContext {
    /// Loads and checks everything the config names, so a bad template, rule file or a missing
    /// code set stops the box at start with the reason rather than at the first visit.
    pub fn load(config: &Config) -> Result<DraftingContext, ContextError> {
        let settings = &config.drafting;
        let templates = TemplateSet::with_overrides(&settings.templates_dir)?;
        templates.get(&settings.template)?;
        let icd10 = if settings.suggest_codes {
            Some(Icd10Index::load_installed(&config.models_dir)?)
        } else {
            None
        };
        Ok(DraftingContext {
            templates,
            default_template: settings.template.clone(),
            icd10,
            gap_rules: RuleSet::with_overrides(&settings.gaps_dir)?,
        })
    }

    /// The template named by id, or the configured default.
    pub fn template(&self, id: Option<&str>) -> Result<&Template, TemplateError> {
        self.templates.get(id.unwrap_or(&self.default_template))
    }

    /// Adds code suggestions and documentation gaps, both computed from the draft's facts.
    pub fn annotate(&self, draft: &mut Draft) {
        if let Some(index) = &self.icd10 {
            draft.codes = coding::suggest(index, &draft.facts);
        }
        draft.gaps = gaps::evaluate(&self.gap_rules, &draft.facts);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::transcript::Transcript;

    fn config(models_dir: &Path, extra: &str) -> Config {
        let text = format!(
            "[models]\ndir = {:?}\n[drafting]\ntemplates_dir = \"absent\"\ngaps_dir = \"absent\"\n{extra}",
            models_dir.display().to_string()
        );
        Config::from_toml(&text, Path::new("/nonexistent")).unwrap()
    }

    #[test]
    fn a_missing_code_set_stops_drafting_setup_with_the_fix() {
        let empty = tempfile::tempdir().unwrap();
        let error = DraftingContext::load(&config(empty.path(), ""))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("models fetch"), "{error}");
        let without_codes =
            DraftingContext::load(&config(empty.path(), "suggest_codes = false\n")).unwrap();
        assert!(without_codes.icd10.is_none());
        assert!(!without_codes.gap_rules.is_empty());
        assert!(without_codes.template(Some("nonexistent")).is_err());
    }

    #[test]
    fn a_drafted_visit_gets_codes_and_gaps_from_its_facts() {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let context = DraftingContext::load(&config(&models, ""))
            .expect("the icd10cm code set is installed by `edge-scribe models fetch`");
        let transcript = Transcript::from_dialogue(
            "[doctor] what brings you in ?\n[patient] my right knee hurts .\n\
             [doctor] your blood pressure is 160 over 100 .\n\
             [doctor] i think you have high blood pressure , we will start lisinopril 10 mg daily .",
        )
        .unwrap();
        let mut draft = crate::draft::compose::compose_draft(
            &transcript,
            context.template(None).unwrap(),
            None,
            &crate::draft::DraftSettings {
                max_tokens: 10,
                temperature: 0.0,
                seed: 0,
                max_statements_per_section: 1,
                time_budget: std::time::Duration::ZERO,
            },
        )
        .unwrap();
        context.annotate(&mut draft);
        let codes: Vec<&str> = draft.codes.iter().map(|c| c.code.as_str()).collect();
        assert!(codes.contains(&"I10"), "{codes:?}");
        assert!(!draft.gaps.is_empty());
        let text = crate::draft::render_text(&draft);
        assert!(text.contains("SUGGESTED ICD-10-CM CODES"), "{text}");
    }
}
