//! The transcript of an encounter: segments of recognised speech on the encounter's time base,
//! each with a stable id that draft statements cite as evidence. Plain data, no I/O.

use serde::{Deserialize, Serialize};

/// Who spoke a segment. Until diarization lands every segment is `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Clinician,
    Patient,
    Other,
    Unknown,
}

impl Speaker {
    pub fn as_str(&self) -> &'static str {
        match self {
            Speaker::Clinician => "clinician",
            Speaker::Patient => "patient",
            Speaker::Other => "other",
            Speaker::Unknown => "unknown",
        }
    }

    pub fn parse(value: &str) -> Speaker {
        match value {
            "clinician" => Speaker::Clinician,
            "patient" => Speaker::Patient,
            "other" => Speaker::Other,
            _ => Speaker::Unknown,
        }
    }
}

/// One segment as written to `transcript.json`: times in seconds from the encounter start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: String,
    pub start: f64,
    pub end: f64,
    pub speaker: Speaker,
    pub text: String,
    pub confidence: f32,
}

impl Segment {
    pub fn start_ms(&self) -> i64 {
        (self.start * 1000.0).round() as i64
    }
    pub fn end_ms(&self) -> i64 {
        (self.end * 1000.0).round() as i64
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub segments: Vec<Segment>,
}

impl Transcript {
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id == id)
    }

    /// The id of the `index`-th segment (0-based) of an encounter: ids are stable, so a
    /// statement's evidence keeps pointing at the same words however the draft is regenerated.
    pub fn segment_id(index: usize) -> String {
        format!("s{}", index + 1)
    }

    pub fn word_count(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.text.split_whitespace().count())
            .sum()
    }
}
