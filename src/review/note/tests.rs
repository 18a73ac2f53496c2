use super::*;
use crate::draft::{Origin, Section, Statement};

fn statement(text: &str, evidence: &[&str]) -> Statement {
    Statement {
        text: text.into(),
        evidence: evidence.iter().map(|s| s.to_string()).collect(),
        facts: vec![],
        origin: Origin::Extraction,
        verifier: String::new(),
    }
}

fn draft_note() -> ReviewNote {
    ReviewNote {
        sections: vec![
            ReviewSection {
                name: "Subjective".into(),
                status: SectionStatus::Drafted,
                statements: vec![
                    ReviewStatement {
                        id: "ai-1-1".into(),
                        text: "Cough for three days.".into(),
                        evidence: vec!["s1".into()],
                        origin: "extraction".into(),
                        state: StatementState::Pending,
                    },
                    ReviewStatement {
                        id: "ai-1-2".into(),
                        text: "No fever.".into(),
                        evidence: vec!["s2".into()],
                        origin: "llm".into(),
                        state: StatementState::Pending,
                    },
                ],
            },
            ReviewSection {
                name: "Plan".into(),
                status: SectionStatus::InsufficientInput,
                statements: vec![],
            },
        ],
    }
}

fn sent(id: &str, text: &str, state: StatementState) -> SubmittedStatement {
    SubmittedStatement {
        id: id.into(),
        text: text.into(),
        state,
        evidence: Some(serde_json::json!(["s99"])),
        origin: None,
    }
}

fn save(
    subjective: Vec<SubmittedStatement>,
    plan: Vec<SubmittedStatement>,
) -> Vec<SubmittedSection> {
    vec![
        SubmittedSection {
            name: "Subjective".into(),
            status: None,
            statements: subjective,
        },
        SubmittedSection {
            name: "Plan".into(),
            status: None,
            statements: plan,
        },
    ]
}

#[test]
fn ids_evidence_and_states_come_from_the_draft() {
    let draft = crate::draft::Draft {
        sections: vec![Section {
            name: "Subjective".into(),
            status: SectionStatus::Drafted,
            statements: vec![statement("a", &["s1"]), statement("b", &["s2", "s3"])],
        }],
        ..serde_json::from_value(serde_json::json!({
            "template": "soap", "prompt_version": "p", "model": "m", "sections": [],
            "verifier": {"proposed": 0, "accepted": 0, "extraction": {"proposed": 0, "accepted": 0},
                         "llm": {"proposed": 0, "accepted": 0}, "rejected": []}
        }))
        .unwrap()
    };
    let note = ReviewNote::from_draft(&draft);
    let ids: Vec<_> = note.sections[0]
        .statements
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ids, ["ai-1-1", "ai-1-2"]);
    assert_eq!(note.sections[0].statements[1].evidence, ["s2", "s3"]);
    assert!(note.sections[0]
        .statements
        .iter()
        .all(|s| s.state == StatementState::Pending));
}

#[test]
fn a_save_edits_rejects_accepts_and_adds_and_the_diff_says_so() {
    let draft = draft_note();
    let next = apply_save(
        &draft,
        &save(
            vec![
                sent("ai-1-1", "Cough for four days.", StatementState::Accepted),
                sent("ai-1-2", "No fever.", StatementState::Rejected),
            ],
            vec![sent("new-1", "Return if worse.", StatementState::Added)],
        ),
    )
    .unwrap();
    let s = &next.sections[0].statements;
    // Changed words make an edit even though the client said "accepted".
    assert_eq!(s[0].state, StatementState::Edited);
    // Evidence cannot be replaced by the client.
    assert_eq!(s[0].evidence, ["s1"]);
    assert_eq!(next.sections[1].statements[0].origin, "clinician");
    assert!(next.sections[1].statements[0].evidence.is_empty());

    let changes = diff(&draft, &next);
    let kinds: Vec<_> = changes
        .iter()
        .map(|c| (c.statement.as_str(), c.kind))
        .collect();
    assert_eq!(
        kinds,
        [
            ("ai-1-1", ChangeKind::Edited),
            ("ai-1-2", ChangeKind::Rejected),
            ("new-1", ChangeKind::Added)
        ]
    );
    let counts = count_changes(&changes);
    assert_eq!((counts.edited, counts.rejected, counts.added), (1, 1, 1));

    let text = next.render_text();
    assert!(text.contains("Cough for four days."));
    assert!(!text.contains("No fever."), "rejected text is left out");
    assert!(text.contains("Return if worse."));
    let ai = next.ai_statements();
    assert_eq!(ai.modified, ["ai-1-1"]);
    assert_eq!(ai.rejected, ["ai-1-2"]);
    assert!(ai.accepted.is_empty());
}

#[test]
fn restoring_a_rejected_statement_is_a_change() {
    let draft = draft_note();
    let rejected = apply_save(
        &draft,
        &save(
            vec![
                sent("ai-1-1", "Cough for three days.", StatementState::Rejected),
                sent("ai-1-2", "No fever.", StatementState::Pending),
            ],
            vec![],
        ),
    )
    .unwrap();
    let restored = apply_save(
        &draft,
        &save(
            vec![
                sent("ai-1-1", "Cough for three days.", StatementState::Accepted),
                sent("ai-1-2", "No fever.", StatementState::Pending),
            ],
            vec![],
        ),
    )
    .unwrap();
    let changes = diff(&rejected, &restored);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].kind, ChangeKind::Restored);
    // Signing untouched statements counts them as accepted.
    assert_eq!(draft.ai_statements().accepted, ["ai-1-1", "ai-1-2"]);
}

#[test]
fn bad_saves_are_refused_with_the_reason() {
    let draft = draft_note();
    let ok1 = || sent("ai-1-1", "Cough for three days.", StatementState::Pending);
    let ok2 = || sent("ai-1-2", "No fever.", StatementState::Pending);
    let cases: Vec<(Vec<SubmittedSection>, &str)> = vec![
        (save(vec![ok1()], vec![]), "missing"),
        (
            save(
                vec![ok1(), ok2(), sent("ai-9-9", "x", StatementState::Pending)],
                vec![],
            ),
            "not part",
        ),
        (save(vec![ok1(), ok2(), ok1()], vec![]), "twice"),
        (save(vec![ok1()], vec![ok2()]), "belongs to"),
        (
            save(
                vec![ok1(), sent("ai-1-2", "No fever.", StatementState::Added)],
                vec![],
            ),
            "cannot be marked",
        ),
        (
            save(
                vec![ok1(), sent("ai-1-2", "  ", StatementState::Accepted)],
                vec![],
            ),
            "empty",
        ),
        (
            save(
                vec![
                    ok1(),
                    sent(
                        "ai-1-2",
                        &"x".repeat(MAX_STATEMENT_CHARS + 1),
                        StatementState::Accepted,
                    ),
                ],
                vec![],
            ),
            "longer",
        ),
        (vec![save(vec![ok1(), ok2()], vec![]).remove(0)], "sections"),
        (
            save(
                vec![ok1(), ok2(), sent("new-<b>", "x", StatementState::Added)],
                vec![],
            ),
            "not part",
        ),
    ];
    for (submitted, expected) in cases {
        let err = apply_save(&draft, &submitted).unwrap_err().to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
        assert!(!err.contains("Cough"), "errors carry no note text: {err}");
    }
}

#[test]
fn flagged_sections_say_so_in_the_signed_text() {
    let text = draft_note().render_text();
    assert!(text.contains("Plan:\nNot documented."));
}

#[test]
fn edit_distance_counts_characters() {
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("same", "same"), 0);
    assert_eq!(edit_distance("naïve", "naive"), 1);
}
