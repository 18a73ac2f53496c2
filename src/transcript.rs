//! The transcript of an encounter: segments of recognised speech on the encounter's time base,
//! each with a stable id that draft statements cite as evidence. Plain data, no I/O.

use serde::{Deserialize, Serialize};

/// Who spoke a segment: the clinician, the patient, another person in the room (numbered from
/// 1: companion, interpreter), or unknown (single-channel audio without diarization). Written as
/// `clinician`, `patient`, `other-N` or `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Speaker {
    Clinician,
    Patient,
    Other(u8),
    #[default]
    Unknown,
}

impl Speaker {
    /// Highest `other-N` a clinician may assign at review.
    pub const MAX_ASSIGNABLE_OTHER: u8 = 9;

    pub fn label(&self) -> String {
        match self {
            Speaker::Clinician => "clinician".to_string(),
            Speaker::Patient => "patient".to_string(),
            Speaker::Other(n) => format!("other-{n}"),
            Speaker::Unknown => "unknown".to_string(),
        }
    }

    pub fn parse(value: &str) -> Speaker {
        match value {
            "clinician" => Speaker::Clinician,
            "patient" => Speaker::Patient,
            "other" => Speaker::Other(1),
            other => other
                .strip_prefix("other-")
                .and_then(|n| n.parse().ok())
                .map_or(Speaker::Unknown, Speaker::Other),
        }
    }

    /// A speaker a clinician may give a segment at review, spelled exactly: `clinician`,
    /// `patient` or `other-1` to `other-9`. Anything else (`unknown`, `other`, `Patient`,
    /// `other-01`) is `None`.
    pub fn assignable(value: &str) -> Option<Speaker> {
        let speaker = Speaker::parse(value);
        let allowed = match speaker {
            Speaker::Clinician | Speaker::Patient => true,
            Speaker::Other(n) => (1..=Speaker::MAX_ASSIGNABLE_OTHER).contains(&n),
            Speaker::Unknown => false,
        };
        (allowed && speaker.label() == value).then_some(speaker)
    }
}

impl From<Speaker> for String {
    fn from(speaker: Speaker) -> String {
        speaker.label()
    }
}

impl From<String> for Speaker {
    fn from(value: String) -> Speaker {
        Speaker::parse(&value)
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
    /// Another voice talks during part of this segment (room audio only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlap: bool,
}

impl Segment {
    pub fn start_ms(&self) -> i64 {
        (self.start * 1000.0).round() as i64
    }
    pub fn end_ms(&self) -> i64 {
        (self.end * 1000.0).round() as i64
    }
}

/// Why a dialogue text could not be read. Positions only: the words are patient data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DialogueError {
    #[error("line {line}: a speaker tag opens with '[' but never closes")]
    UnclosedTag { line: usize },
    #[error(
        "line {line}: the dialogue must start with a speaker tag such as [doctor] or [patient]"
    )]
    NoSpeakerTag { line: usize },
    #[error("the dialogue has no turns")]
    Empty,
}

fn speaker_for_tag(tag: &str) -> Speaker {
    match tag.trim().to_ascii_lowercase().as_str() {
        "doctor" | "clinician" | "provider" | "physician" | "nurse_practitioner" => {
            Speaker::Clinician
        }
        "patient" => Speaker::Patient,
        _ => Speaker::Other(1),
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

    /// Reads a dialogue in the ACI-Bench form: one turn per line, each starting with a speaker
    /// tag such as `[doctor]` or `[patient]`. A line without a tag continues the previous turn.
    /// Each turn becomes one segment; times are turn indices, since a text dialogue has no clock.
    pub fn from_dialogue(text: &str) -> Result<Transcript, DialogueError> {
        let mut turns: Vec<(Speaker, String)> = Vec::new();
        for (line_index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let Some((tag, words)) = rest.split_once(']') else {
                    return Err(DialogueError::UnclosedTag {
                        line: line_index + 1,
                    });
                };
                turns.push((speaker_for_tag(tag), words.trim().to_string()));
            } else if let Some((_, words)) = turns.last_mut() {
                words.push(' ');
                words.push_str(line);
            } else {
                return Err(DialogueError::NoSpeakerTag {
                    line: line_index + 1,
                });
            }
        }
        turns.retain(|(_, words)| !words.is_empty());
        if turns.is_empty() {
            return Err(DialogueError::Empty);
        }
        let segments = turns
            .into_iter()
            .enumerate()
            .map(|(i, (speaker, text))| Segment {
                id: Transcript::segment_id(i),
                start: i as f64,
                end: i as f64 + 1.0,
                speaker,
                text,
                confidence: 1.0,
                overlap: false,
            })
            .collect();
        Ok(Transcript { segments })
    }

    pub fn word_count(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.text.split_whitespace().count())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dialogue_becomes_one_segment_per_turn_with_speakers() {
        let t = Transcript::from_dialogue(
            "[doctor] hi , how are you ?\n[patient] my knee hurts .\nstill .\n\n[guest] hello",
        )
        .unwrap();
        assert_eq!(t.segments.len(), 3);
        assert_eq!(t.segments[0].speaker, Speaker::Clinician);
        assert_eq!(t.segments[1].speaker, Speaker::Patient);
        assert_eq!(t.segments[1].text, "my knee hurts . still .");
        assert_eq!(t.segments[2].speaker, Speaker::Other(1));
        assert_eq!(t.segments[2].id, "s3");
    }

    #[test]
    fn speakers_round_trip_as_labels() {
        for speaker in [
            Speaker::Clinician,
            Speaker::Patient,
            Speaker::Other(2),
            Speaker::Unknown,
        ] {
            let json = serde_json::to_string(&speaker).unwrap();
            assert_eq!(serde_json::from_str::<Speaker>(&json).unwrap(), speaker);
        }
        assert_eq!(
            serde_json::to_string(&Speaker::Other(2)).unwrap(),
            "\"other-2\""
        );
        assert_eq!(Speaker::parse("other"), Speaker::Other(1));
        assert_eq!(Speaker::parse("other-x"), Speaker::Unknown);
    }

    #[test]
    fn only_exact_role_labels_are_assignable() {
        assert_eq!(Speaker::assignable("clinician"), Some(Speaker::Clinician));
        assert_eq!(Speaker::assignable("patient"), Some(Speaker::Patient));
        assert_eq!(Speaker::assignable("other-1"), Some(Speaker::Other(1)));
        assert_eq!(Speaker::assignable("other-9"), Some(Speaker::Other(9)));
        for refused in [
            "unknown", "other", "other-0", "other-10", "other-01", "Patient", " patient", "",
            "other-", "dr smith",
        ] {
            assert_eq!(Speaker::assignable(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn malformed_dialogues_say_where() {
        assert_eq!(
            Transcript::from_dialogue("hello\n[doctor] hi"),
            Err(DialogueError::NoSpeakerTag { line: 1 })
        );
        assert_eq!(
            Transcript::from_dialogue("[doctor hi"),
            Err(DialogueError::UnclosedTag { line: 1 })
        );
        assert_eq!(Transcript::from_dialogue("  \n"), Err(DialogueError::Empty));
    }
}
