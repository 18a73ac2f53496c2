//! Clinical extraction: the facts a note is made of, found deterministically in a diarized
//! transcript, each with the exact words that support it.
//!
//! Extraction is the trusted half of drafting: every fact points at a segment and a character
//! range of that segment's text, so the verifier and the review screen can check it against the
//! words. The LLM may only rephrase and order facts found here. Pure code, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A character range (Unicode scalar values, end exclusive) of one transcript segment's text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Span {
    pub segment: String,
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    ChiefComplaint,
    Symptom,
    /// A symptom or finding the patient or clinician explicitly denies.
    PertinentNegative,
    MedicalHistory,
    Vital,
    ExamFinding,
    /// Lab, imaging and other results the clinician reads out.
    Result,
    Medication,
    Allergy,
    SocialHistory,
    FamilyHistory,
    Assessment,
    Plan,
}

/// How the words assert the fact (ConText: negation, uncertainty, history, experiencer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assertion {
    Present,
    Absent,
    Possible,
    Historical,
    /// About someone other than the patient (e.g. family history).
    OtherPerson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Laterality {
    Left,
    Right,
    Bilateral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitalKind {
    BloodPressure,
    HeartRate,
    Temperature,
    OxygenSaturation,
    RespiratoryRate,
    Weight,
    Height,
    Bmi,
    PainScore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanCategory {
    Test,
    Prescription,
    MedicationChange,
    Referral,
    FollowUp,
    ReturnPrecaution,
    Procedure,
    Counseling,
    Other,
}

/// The normalized content of a fact; which variant goes with which [`FactKind`] is fixed by the
/// extractor (e.g. `Vital` only for `FactKind::Vital`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Detail {
    Finding {
        /// Normalized name, e.g. "knee pain", "shortness of breath".
        name: String,
        onset: Option<String>,
        duration: Option<String>,
        severity: Option<String>,
        laterality: Option<Laterality>,
        site: Option<String>,
    },
    Vital {
        vital: VitalKind,
        /// As a clinician writes it: "120/80", "98.6", "97".
        value: String,
        /// "mmHg", "bpm", "°F", "°C", "%", "breaths/min", "lb", "kg", "cm", "in", "kg/m2", "/10".
        unit: String,
    },
    Medication {
        /// Generic or brand name as said, lower case.
        name: String,
        dose: Option<String>,
        route: Option<String>,
        frequency: Option<String>,
    },
    Allergy {
        substance: String,
        reaction: Option<String>,
    },
    Social {
        /// "tobacco", "alcohol", "drugs", "occupation", "exercise", "living situation", ...
        topic: String,
        value: String,
    },
    Plan {
        category: PlanCategory,
    },
    /// Facts whose content is their `text` (assessment, history, results).
    Text,
}

/// One extracted fact. `text` is the clinician-readable wording the composer uses when no LLM
/// rephrases it; it only contains words, numbers and units that occur in `evidence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// "f1", "f2", ... in order of first evidence.
    pub id: String,
    pub kind: FactKind,
    pub assertion: Assertion,
    pub text: String,
    pub detail: Detail,
    pub evidence: Vec<Span>,
    /// Extra normalized attributes a rule may test (e.g. "unit_system" = "imperial").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Finds every fact in a transcript. Segments spoken by the clinician carry exam findings,
/// assessment and plan; the patient's answers to the clinician's questions are paired with them.
pub fn extract(transcript: &crate::transcript::Transcript) -> Vec<Fact> {
    let _ = transcript;
    Vec::new()
}
