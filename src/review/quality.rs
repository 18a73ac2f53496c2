//! Quality signals for operations, from signed encounters: how much of the AI's text clinicians
//! keep, how much they change, how often sections are flagged, and how long sign-off takes.
//! Grouped by clinician, specialty and template; counts and ratios only, no patient content.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::store::review::QualitySignal;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityGroup {
    /// `clinician`, `specialty` or `template`.
    pub by: &'static str,
    pub key: String,
    pub signed_notes: u64,
    /// Share of AI statements kept as drafted.
    pub acceptance_rate: f64,
    pub modified_rate: f64,
    pub rejected_rate: f64,
    /// Clinician statements added per note.
    pub added_per_note: f64,
    /// Characters changed between draft and signed note, over the draft's length.
    pub edit_ratio: f64,
    /// Share of sections flagged `insufficient_input`.
    pub flagged_section_rate: f64,
    /// Time from the draft being ready to sign-off, in seconds.
    pub median_time_to_sign_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QualityReport {
    pub signed_notes: u64,
    pub groups: Vec<QualityGroup>,
}

pub fn report(signals: &[QualitySignal]) -> QualityReport {
    let mut groups = Vec::new();
    type KeyFn = fn(&QualitySignal) -> String;
    let dimensions: [(&'static str, KeyFn); 3] = [
        ("clinician", |s| s.clinician_id.clone()),
        ("specialty", |s| {
            s.specialty.clone().unwrap_or_else(|| "unspecified".into())
        }),
        ("template", |s| s.template.clone()),
    ];
    for (by, key_of) in dimensions {
        let mut buckets: BTreeMap<String, Vec<&QualitySignal>> = BTreeMap::new();
        for signal in signals {
            buckets.entry(key_of(signal)).or_default().push(signal);
        }
        groups.extend(
            buckets
                .into_iter()
                .map(|(key, members)| summarize(by, key, &members)),
        );
    }
    QualityReport {
        signed_notes: signals.len() as u64,
        groups,
    }
}

fn summarize(by: &'static str, key: String, members: &[&QualitySignal]) -> QualityGroup {
    let sum = |f: fn(&QualitySignal) -> u64| members.iter().map(|s| f(s)).sum::<u64>();
    let ratio = |num: u64, den: u64| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let ai = sum(|s| s.ai_statements);
    let mut times: Vec<i64> = members
        .iter()
        .map(|s| (s.signed_at_ms - s.drafted_at_ms).max(0))
        .collect();
    times.sort_unstable();
    let median_ms = match times.len() {
        0 => 0.0,
        n if n % 2 == 1 => times[n / 2] as f64,
        n => (times[n / 2 - 1] + times[n / 2]) as f64 / 2.0,
    };
    QualityGroup {
        by,
        key,
        signed_notes: members.len() as u64,
        acceptance_rate: ratio(sum(|s| s.accepted), ai),
        modified_rate: ratio(sum(|s| s.modified), ai),
        rejected_rate: ratio(sum(|s| s.rejected), ai),
        added_per_note: ratio(sum(|s| s.added), members.len() as u64),
        edit_ratio: ratio(sum(|s| s.edit_distance), sum(|s| s.draft_chars)),
        flagged_section_rate: ratio(sum(|s| s.flagged_sections), sum(|s| s.sections)),
        median_time_to_sign_s: median_ms / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signal(
        clinician: &str,
        accepted: u64,
        modified: u64,
        rejected: u64,
        t: i64,
    ) -> QualitySignal {
        QualitySignal {
            encounter_id: format!("e-{clinician}-{t}"),
            clinician_id: clinician.into(),
            specialty: Some("family-medicine".into()),
            template: "soap".into(),
            ai_statements: accepted + modified + rejected,
            accepted,
            modified,
            rejected,
            added: 1,
            edit_distance: 10,
            draft_chars: 100,
            sections: 4,
            flagged_sections: 1,
            drafted_at_ms: 0,
            signed_at_ms: t,
        }
    }

    #[test]
    fn groups_by_clinician_specialty_and_template() {
        let report = report(&[
            signal("a", 8, 1, 1, 60_000),
            signal("a", 6, 2, 2, 120_000),
            signal("b", 10, 0, 0, 30_000),
        ]);
        assert_eq!(report.signed_notes, 3);
        let a = report
            .groups
            .iter()
            .find(|g| g.by == "clinician" && g.key == "a")
            .unwrap();
        assert_eq!(a.signed_notes, 2);
        assert!((a.acceptance_rate - 0.7).abs() < 1e-9);
        assert!((a.rejected_rate - 0.15).abs() < 1e-9);
        assert!((a.median_time_to_sign_s - 90.0).abs() < 1e-9);
        assert!((a.flagged_section_rate - 0.25).abs() < 1e-9);
        let soap = report.groups.iter().find(|g| g.by == "template").unwrap();
        assert_eq!(soap.signed_notes, 3);
        assert!((soap.edit_ratio - 0.1).abs() < 1e-9);
        assert_eq!(report.groups.len(), 2 + 1 + 1);
    }
}
