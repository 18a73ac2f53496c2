use std::collections::BTreeMap;

use super::*;
use crate::clinical::{Assertion, FactKind, Laterality, PlanCategory};

fn shipped() -> RuleSet {
    RuleSet::load_dir(&default_dir()).unwrap_or_else(|e| panic!("{e}"))
}

fn fact(id: &str, kind: FactKind, text: &str, detail: Detail) -> Fact {
    Fact {
        id: id.to_owned(),
        kind,
        assertion: Assertion::Present,
        text: text.to_owned(),
        detail,
        evidence: vec![Span {
            segment: format!("s{}", &id[1..]),
            start: 0,
            end: text.chars().count(),
        }],
        attributes: BTreeMap::new(),
    }
}

fn vital(id: &str, vital: VitalKind, value: &str, unit: &str) -> Fact {
    fact(
        id,
        FactKind::Vital,
        &format!("{value} {unit}"),
        Detail::Vital {
            vital,
            value: value.to_owned(),
            unit: unit.to_owned(),
        },
    )
}

fn text(id: &str, kind: FactKind, words: &str) -> Fact {
    fact(id, kind, words, Detail::Text)
}

fn plan(id: &str, category: PlanCategory, words: &str) -> Fact {
    fact(id, FactKind::Plan, words, Detail::Plan { category })
}

fn finding(id: &str, kind: FactKind, name: &str) -> Fact {
    fact(
        id,
        kind,
        name,
        Detail::Finding {
            name: name.to_owned(),
            onset: None,
            duration: None,
            severity: None,
            laterality: None,
            site: None,
        },
    )
}

fn with_finding(mut f: Fact, edit: impl FnOnce(&mut Detail)) -> Fact {
    edit(&mut f.detail);
    f
}

fn medication(id: &str, name: &str, dose: Option<&str>, frequency: Option<&str>) -> Fact {
    let mut f = fact(
        id,
        FactKind::Medication,
        &format!("start {name}"),
        Detail::Medication {
            name: name.to_owned(),
            dose: dose.map(str::to_owned),
            route: None,
            frequency: frequency.map(str::to_owned),
        },
    );
    f.attributes.insert("status".to_owned(), "start".to_owned());
    f
}

fn social(id: &str, topic: &str, value: &str) -> Fact {
    fact(
        id,
        FactKind::SocialHistory,
        value,
        Detail::Social {
            topic: topic.to_owned(),
            value: value.to_owned(),
        },
    )
}

/// The gaps one shipped rule finds.
fn gaps_of(rule: &str, facts: &[Fact]) -> Vec<Gap> {
    evaluate(&shipped(), facts)
        .into_iter()
        .filter(|g| g.rule == rule)
        .collect()
}

fn fires(rule: &str, facts: &[Fact]) -> bool {
    !gaps_of(rule, facts).is_empty()
}

#[test]
fn the_shipped_rules_load() {
    let set = shipped();
    let ids: Vec<&str> = set.ids().collect();
    for id in [
        "sep1-sirs-without-interpretation",
        "sep1-lactate-without-repeat",
        "sep1-fluids-below-30-ml-kg",
        "symptom-without-duration",
        "pain-without-severity",
        "limb-finding-without-laterality",
        "new-medication-without-dose-or-frequency",
        "assessment-without-plan",
        "tobacco-without-cessation-counseling",
        "elevated-bp-without-assessment",
    ] {
        assert!(ids.contains(&id), "{id} not shipped");
    }
    assert!(number_re().is_some() && volume_re().is_some());
}

#[test]
fn sirs_criteria_without_an_interpretation_fire_with_their_values() {
    // Seed 003: temperature 38.4 °C and HR 112, no interpretation stated.
    let facts = [
        vital("f1", VitalKind::Temperature, "38.4", "°C"),
        vital("f2", VitalKind::HeartRate, "112", "bpm"),
    ];
    let gaps = gaps_of("sep1-sirs-without-interpretation", &facts);
    assert_eq!(gaps.len(), 1);
    assert!(
        gaps[0]
            .message
            .contains("(temperature, heart rate: 38.4°C, 112 bpm)"),
        "{}",
        gaps[0].message
    );
    assert_eq!(gaps[0].fact_ids, ["f1", "f2"]);
    assert_eq!(gaps[0].evidence.len(), 2);

    // °F is converted: 101.2 °F = 38.4 °C.
    let fahrenheit = [
        vital("f1", VitalKind::Temperature, "101.2", "°F"),
        vital("f2", VitalKind::RespiratoryRate, "24", "breaths/min"),
    ];
    assert!(fires("sep1-sirs-without-interpretation", &fahrenheit));
}

#[test]
fn sirs_rule_is_quiet_with_one_criterion_or_an_interpretation() {
    let one = [
        vital("f1", VitalKind::Temperature, "100.4", "°F"),
        vital("f2", VitalKind::HeartRate, "112", "bpm"),
    ];
    assert!(!fires("sep1-sirs-without-interpretation", &one));
    let mut addressed = vec![
        vital("f1", VitalKind::Temperature, "38.4", "°C"),
        vital("f2", VitalKind::HeartRate, "112", "bpm"),
    ];
    let mut possible = text(
        "f3",
        FactKind::Assessment,
        "concern for sepsis from a urinary source",
    );
    possible.assertion = Assertion::Possible;
    addressed.push(possible);
    assert!(!fires("sep1-sirs-without-interpretation", &addressed));
}

#[test]
fn high_lactate_needs_a_repeat() {
    let lactate = text("f1", FactKind::Result, "lactate is back at 4.2");
    let gaps = gaps_of(
        "sep1-lactate-without-repeat",
        std::slice::from_ref(&lactate),
    );
    assert_eq!(gaps.len(), 1);
    assert!(
        gaps[0].message.contains("is 4.2 (above"),
        "{}",
        gaps[0].message
    );

    let repeat = plan("f2", PlanCategory::Test, "repeat lactate in 2 hours");
    assert!(!fires(
        "sep1-lactate-without-repeat",
        &[lactate.clone(), repeat]
    ));
    let second = text("f2", FactKind::Result, "repeat lactate 2.8");
    assert!(!fires("sep1-lactate-without-repeat", &[lactate, second]));
    let normal = text("f1", FactKind::Result, "lactate 1.6");
    assert!(!fires("sep1-lactate-without-repeat", &[normal]));
}

#[test]
fn fluids_are_compared_with_30_ml_per_kg_only_when_weight_is_stated() {
    let bolus = plan("f1", PlanCategory::Prescription, "2 L normal saline bolus");
    let weight = vital("f2", VitalKind::Weight, "68", "kg");
    let gaps = gaps_of("sep1-fluids-below-30-ml-kg", &[bolus.clone(), weight]);
    assert_eq!(gaps.len(), 1);
    assert!(
        gaps[0].message.contains("29.4 mL/kg"),
        "{}",
        gaps[0].message
    );

    assert!(!fires(
        "sep1-fluids-below-30-ml-kg",
        std::slice::from_ref(&bolus)
    ));
    let heavy_enough = vital("f2", VitalKind::Weight, "140", "lb"); // 63.5 kg: 31.5 mL/kg
    assert!(!fires("sep1-fluids-below-30-ml-kg", &[bolus, heavy_enough]));
    let per_kg = plan(
        "f1",
        PlanCategory::Prescription,
        "30 mL/kg crystalloid bolus",
    );
    let weight = vital("f2", VitalKind::Weight, "68", "kg");
    assert!(!fires("sep1-fluids-below-30-ml-kg", &[per_kg, weight]));
}

#[test]
fn a_symptom_without_duration_fires_per_symptom() {
    let cough = finding("f1", FactKind::Symptom, "cough");
    let fever = with_finding(finding("f2", FactKind::Symptom, "fever"), |d| {
        if let Detail::Finding { duration, .. } = d {
            *duration = Some("three days".to_owned());
        }
    });
    let gaps = gaps_of("symptom-without-duration", &[cough, fever]);
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].fact_ids, ["f1"]);
    assert!(gaps[0].message.contains("cough"));
    let mut denied = finding("f3", FactKind::Symptom, "chest pain");
    denied.assertion = Assertion::Absent;
    assert!(!fires("symptom-without-duration", &[denied]));
}

#[test]
fn pain_without_severity_fires_unless_scored() {
    let pain = finding("f1", FactKind::ChiefComplaint, "low back pain");
    assert!(fires("pain-without-severity", std::slice::from_ref(&pain)));
    let scored = vital("f2", VitalKind::PainScore, "6", "/10");
    assert!(!fires("pain-without-severity", &[pain, scored]));
    let severe = with_finding(finding("f1", FactKind::Symptom, "headache pain"), |d| {
        if let Detail::Finding { severity, .. } = d {
            *severity = Some("severe".to_owned());
        }
    });
    assert!(!fires("pain-without-severity", &[severe]));
    assert!(!fires(
        "pain-without-severity",
        &[finding("f1", FactKind::Symptom, "cough")]
    ));
}

#[test]
fn limb_findings_need_a_side() {
    let knee = finding("f1", FactKind::Symptom, "knee swelling");
    let gaps = gaps_of(
        "limb-finding-without-laterality",
        std::slice::from_ref(&knee),
    );
    assert_eq!(gaps.len(), 1);
    assert!(gaps[0].message.contains("knee swelling"));
    let sided = with_finding(knee, |d| {
        if let Detail::Finding { laterality, .. } = d {
            *laterality = Some(Laterality::Right);
        }
    });
    assert!(!fires("limb-finding-without-laterality", &[sided]));
    assert!(!fires(
        "limb-finding-without-laterality",
        &[finding("f1", FactKind::Symptom, "headache")]
    ));
}

#[test]
fn a_new_medication_needs_dose_and_frequency() {
    let gaps = gaps_of(
        "new-medication-without-dose-or-frequency",
        &[medication("f1", "amoxicillin", Some("500 mg"), None)],
    );
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        gaps[0].message,
        "The frequency of the new medication amoxicillin is not documented."
    );
    let both = gaps_of(
        "new-medication-without-dose-or-frequency",
        &[medication("f1", "lisinopril", None, None)],
    );
    assert!(both[0].message.contains("dose and frequency"));
    assert!(!fires(
        "new-medication-without-dose-or-frequency",
        &[medication(
            "f1",
            "amoxicillin",
            Some("500 mg"),
            Some("three times a day")
        )]
    ));
    let mut current = medication("f1", "metformin", None, None);
    current
        .attributes
        .insert("status".to_owned(), "current".to_owned());
    assert!(!fires(
        "new-medication-without-dose-or-frequency",
        &[current]
    ));
}

#[test]
fn an_assessment_needs_a_plan_item() {
    let assessment = text("f1", FactKind::Assessment, "acute bronchitis");
    assert!(fires(
        "assessment-without-plan",
        std::slice::from_ref(&assessment)
    ));
    let follow_up = plan("f2", PlanCategory::FollowUp, "follow up in two weeks");
    assert!(!fires("assessment-without-plan", &[assessment, follow_up]));
    assert!(!fires("assessment-without-plan", &[]));
}

#[test]
fn current_tobacco_use_needs_cessation_counseling() {
    let smoker = social("f1", "tobacco", "smokes a pack a day");
    assert!(fires(
        "tobacco-without-cessation-counseling",
        std::slice::from_ref(&smoker)
    ));
    let counseled = plan(
        "f2",
        PlanCategory::Counseling,
        "discussed smoking cessation",
    );
    assert!(!fires(
        "tobacco-without-cessation-counseling",
        &[smoker, counseled]
    ));
    let former = social("f1", "tobacco", "quit five years ago");
    assert!(!fires("tobacco-without-cessation-counseling", &[former]));
    let alcohol = social("f1", "alcohol", "two beers a week");
    assert!(!fires("tobacco-without-cessation-counseling", &[alcohol]));
}

#[test]
fn elevated_bp_needs_an_assessment() {
    let high = vital("f1", VitalKind::BloodPressure, "152/88", "mmHg");
    let gaps = gaps_of(
        "elevated-bp-without-assessment",
        std::slice::from_ref(&high),
    );
    assert_eq!(gaps.len(), 1);
    assert!(gaps[0].message.contains("152 mmHg"), "{}", gaps[0].message);
    let diastolic = vital("f1", VitalKind::BloodPressure, "132/94", "mmHg");
    assert!(fires("elevated-bp-without-assessment", &[diastolic]));
    let normal = vital("f1", VitalKind::BloodPressure, "128/82", "mmHg");
    assert!(!fires("elevated-bp-without-assessment", &[normal]));
    let addressed = text("f2", FactKind::Assessment, "Hypertension, not at goal");
    assert!(!fires("elevated-bp-without-assessment", &[high, addressed]));
}

/// The error for one rule file's text.
fn invalid(toml: &str) -> String {
    let err = RuleSet::default()
        .add_str(toml, Path::new("config/gaps/site.toml"))
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("config/gaps/site.toml"), "{message}");
    message
}

const HEAD: &str = "[[rule]]\nid = \"r1\"\ntitle = \"t\"\nmessage = \"m\"\n";

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let message = invalid(&format!(
        "{HEAD}when = [{{ kind = \"vital\", vitl = \"heart_rate\" }}]"
    ));
    assert!(message.contains("vitl"), "{message}");
    let message = invalid(&format!("{HEAD}whenn = [{{ kind = \"vital\" }}]"));
    assert!(message.contains("whenn"), "{message}");
}

#[test]
fn rule_errors_name_the_rule_and_what_is_wrong() {
    let cases = [
        ("when = [{ kind = \"vitals\" }]", "unknown kind \"vitals\""),
        (
            "when = [{ kind = \"vital\", vital = \"heart_rate\", op = \">\" }]",
            "`op` and `value` go together",
        ),
        (
            "when = [{ kind = \"vital\", vital = \"temperature\", op = \">\", value = 38 }]",
            "need a `unit`",
        ),
        (
            "when = [{ kind = \"vital\", vital = \"temperature\", op = \">\", value = 38, unit = \"kg\" }]",
            "unit \"kg\" does not fit temperature",
        ),
        (
            "when = [{ kind = \"vital\", vital = \"blood_pressure\", op = \">\", value = 140 }]",
            "component",
        ),
        (
            "when = [{ kind = \"result\", text_matches = \"lactate\", op = \">\", value = 2 }]",
            "needs `quantity`",
        ),
        ("when = [{ kind = \"assessment\", text_matches = \"(sepsis\" }]", "when[0].text_matches is not a valid regular expression"),
        ("when = [{ kind = \"plan\", vital = \"heart_rate\" }]", "`vital` applies only to kind \"vital\""),
        ("when = [{ kind = \"vital\", missing = [\"dose\"] }]", "no field \"dose\""),
        ("when = [{ kind = \"plan\", assertion = \"maybe\" }]", "unknown assertion \"maybe\""),
        ("when = [{ kind = \"plan\" }]\nmin_match = 2", "min_match = 2"),
        ("unless = [{ kind = \"plan\" }]", "needs `for_each` or at least one `when`"),
    ];
    for (body, expected) in cases {
        let message = invalid(&format!("{HEAD}{body}"));
        assert!(
            message.contains("rule \"r1\"") && message.contains(expected),
            "for {body:?}: {message}"
        );
    }
    let message = invalid(
        "[[rule]]\nid = \"r1\"\ntitle = \"t\"\nmessage = \"about {subject}\"\nwhen = [{ kind = \"plan\" }]",
    );
    assert!(message.contains("{subject} needs `for_each`"), "{message}");
    let message = invalid(
        "[[rule]]\nid = \"r1\"\ntitle = \"t\"\nmessage = \"{value}\"\nwhen = [{ kind = \"plan\" }]",
    );
    assert!(message.contains("uses {value}"), "{message}");
    let message = invalid(
        "[[rule]]\nid = \"Bad Id\"\ntitle = \"t\"\nmessage = \"m\"\nwhen = [{ kind = \"plan\" }]",
    );
    assert!(message.contains("a-z, 0-9"), "{message}");
}

#[test]
fn duplicate_ids_across_files_are_refused() {
    let mut set = RuleSet::default();
    let rule = format!("{HEAD}when = [{{ kind = \"plan\" }}]");
    set.add_str(&rule, Path::new("a.toml")).unwrap();
    let err = set.add_str(&rule, Path::new("b.toml")).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("\"r1\"") && message.contains("a.toml") && message.contains("b.toml"),
        "{message}"
    );
}

#[test]
fn a_directory_with_a_broken_file_loads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("a.toml"),
        format!("{HEAD}when = [{{ kind = \"plan\" }}]"),
    )
    .unwrap();
    fs::write(dir.path().join("b.toml"), "[[rule]]\nid = 3").unwrap();
    fs::write(dir.path().join("notes.txt"), "not a rule file").unwrap();
    let err = RuleSet::load_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("b.toml"), "{err}");
    fs::remove_file(dir.path().join("b.toml")).unwrap();
    assert_eq!(RuleSet::load_dir(dir.path()).unwrap().len(), 1);
}
