//! Coding support: ICD-10-CM code suggestions for a note, each with the facts it rests on and,
//! when the documentation does not allow a more specific code, the reason why.
//!
//! The code set is the CMS ICD-10-CM tabular list (public domain), installed by
//! `edge-scribe models fetch` as the pinned `icd10cm` entry of `models/manifest.toml` and loaded
//! once into an [`Icd10Index`]. Every suggested code comes from that table; the only hand-made
//! data is `synonyms.toml`, which maps everyday wordings to the table's words, never to codes.
//!
//! What it may not do: invent codes, read anything but the installed table, or log note text
//! (errors name files, never facts). Suggestions are for the clinician to accept or reject.

mod suggest;
mod tabular;
mod terms;

use std::path::{Path, PathBuf};

pub use suggest::{suggest, CodeSuggestion};
pub use tabular::{CodeInfo, Icd10Index};

/// Name of the code set's entry in `models/manifest.toml` (its directory under the models dir).
pub const CODE_SET_NAME: &str = "icd10cm";

/// File name of the tabular list inside that directory.
pub const TABULAR_FILE: &str = "icd10cm-tabular.xml";

#[derive(Debug, thiserror::Error)]
pub enum CodingError {
    #[error(
        "the ICD-10-CM code set is not installed ({path} is missing); run `edge-scribe models \
         fetch` (or `edge-scribe models fetch icd10cm`) to install it"
    )]
    NotInstalled { path: PathBuf },

    #[error("could not read the ICD-10-CM table {path}: {source}; check the file's permissions")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "the ICD-10-CM table {path} is not valid: {reason}; delete its directory and run \
         `edge-scribe models fetch` to reinstall it"
    )]
    Parse { path: PathBuf, reason: String },
}

impl Icd10Index {
    /// Loads the code set installed under `models_dir` (`<models_dir>/icd10cm/`).
    pub fn load_installed(models_dir: &Path) -> Result<Icd10Index, CodingError> {
        let path = models_dir.join(CODE_SET_NAME).join(TABULAR_FILE);
        if !path.is_file() {
            return Err(CodingError::NotInstalled { path });
        }
        Icd10Index::load(&path)
    }
}
