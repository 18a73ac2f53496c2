//! What the patient has and has not: symptoms (with site, laterality, severity, duration),
//! pertinent negatives, past medical history, family history and social history — from the
//! patient's own statements and from bare yes/no answers to the clinician's questions.
//!
//! Laterality is only ever the word right before the body site ("right knee"), never inferred
//! from elsewhere in the turn; a symptom in a question is no fact until a reply asserts it.

use std::ops::Range;
use std::sync::LazyLock;

use super::collect::{Candidate, Collector, Doc, Evidence, Role};
use super::context::{self, Context, FAMILY_WORDS};
use super::qa::{self, Reply};
use super::text::{as_sentence, read_number, render, Lexicon, Seg, Token};
use super::{Assertion, Detail, FactKind, Laterality};

static SYMPTOMS: LazyLock<Lexicon> =
    LazyLock::new(|| Lexicon::parse(include_str!("lexicon/symptoms.txt")));
static CONDITIONS: LazyLock<Lexicon> =
    LazyLock::new(|| Lexicon::parse(include_str!("lexicon/conditions.txt")));

const BODY_SITES: &[(&str, &str)] = &[
    ("knee", "knee"),
    ("knees", "knee"),
    ("shoulder", "shoulder"),
    ("shoulders", "shoulder"),
    ("elbow", "elbow"),
    ("elbows", "elbow"),
    ("wrist", "wrist"),
    ("wrists", "wrist"),
    ("hand", "hand"),
    ("hands", "hand"),
    ("finger", "finger"),
    ("fingers", "finger"),
    ("thumb", "thumb"),
    ("hip", "hip"),
    ("hips", "hip"),
    ("ankle", "ankle"),
    ("ankles", "ankle"),
    ("foot", "foot"),
    ("feet", "foot"),
    ("toe", "toe"),
    ("toes", "toe"),
    ("heel", "heel"),
    ("leg", "leg"),
    ("legs", "leg"),
    ("arm", "arm"),
    ("arms", "arm"),
    ("calf", "calf"),
    ("thigh", "thigh"),
    ("back", "back"),
    ("neck", "neck"),
    ("head", "head"),
    ("chest", "chest"),
    ("abdomen", "abdominal"),
    ("belly", "abdominal"),
    ("stomach", "abdominal"),
    ("flank", "flank"),
    ("groin", "groin"),
    ("ear", "ear"),
    ("ears", "ear"),
    ("eye", "eye"),
    ("eyes", "eye"),
    ("jaw", "jaw"),
    ("breast", "breast"),
];

const COMPLAINT_WORDS: &[(&str, &str)] = &[
    ("pain", "pain"),
    ("pains", "pain"),
    ("ache", "pain"),
    ("aches", "pain"),
    ("aching", "pain"),
    ("hurts", "pain"),
    ("hurt", "pain"),
    ("hurting", "pain"),
    ("sore", "pain"),
    ("soreness", "pain"),
    ("swelling", "swelling"),
    ("swollen", "swelling"),
    ("numbness", "numbness"),
    ("numb", "numbness"),
    ("stiffness", "stiffness"),
    ("stiff", "stiffness"),
    ("tingling", "tingling"),
    ("weakness", "weakness"),
];

const SEVERITIES: &[&str] = &[
    "mild",
    "moderate",
    "severe",
    "slight",
    "sharp",
    "dull",
    "throbbing",
    "constant",
    "intermittent",
    "terrible",
    "bad",
];

fn site_at(tokens: &[Token], i: usize) -> Option<&'static str> {
    let token = tokens.get(i)?;
    BODY_SITES
        .iter()
        .find(|(word, _)| token.is(word))
        .map(|(_, site)| *site)
}

fn complaint_at(tokens: &[Token], i: usize) -> Option<&'static str> {
    let token = tokens.get(i)?;
    COMPLAINT_WORDS
        .iter()
        .find(|(word, _)| token.is(word))
        .map(|(_, c)| *c)
}

/// The laterality word right before a body site, if any.
fn laterality_before(tokens: &[Token], site: usize) -> Option<(Laterality, usize)> {
    let before = site.checked_sub(1)?;
    let laterality = match tokens[before].text.as_str() {
        "right" => Laterality::Right,
        "left" => Laterality::Left,
        "both" | "bilateral" => Laterality::Bilateral,
        _ => return None,
    };
    // "both knees" is bilateral; "both knee" is not something anyone says.
    let plural = tokens[site].text.ends_with('s') || tokens[site].is("feet");
    if laterality == Laterality::Bilateral && !plural {
        return None;
    }
    if laterality != Laterality::Bilateral && plural {
        return None;
    }
    Some((laterality, before))
}

#[derive(Debug, Clone)]
struct Finding {
    name: String,
    site: Option<String>,
    laterality: Option<Laterality>,
    severity: Option<String>,
    /// The words naming the finding (site, laterality and complaint).
    tokens: Range<usize>,
}

/// Symptoms named in `range`: body-site complaints first ("right knee pain", "pain in my left
/// hip", "my back hurts"), then lexicon symptoms not overlapping them.
fn findings_in(seg: &Seg, range: Range<usize>) -> Vec<Finding> {
    let tokens = &seg.tokens;
    let stop = range.end.min(tokens.len());
    let mut found: Vec<Finding> = Vec::new();
    for i in range.start..stop {
        let Some(site) = site_at(tokens, i) else {
            continue;
        };
        // "knee pain", "knee hurts", "knee is hurting", "knee has been really sore".
        let after = (i + 1..(i + 5).min(stop)).find_map(|k| {
            let between_ok = tokens[i + 1..k].iter().all(|t| {
                t.is_any(&[
                    "is", "has", "been", "really", "very", "so", "kind", "of", "a", "little",
                    "bit", "was", "still", "starts", "started", "keeps",
                ])
            });
            complaint_at(tokens, k)
                .filter(|_| between_ok)
                .map(|c| (k, c))
        });
        // "pain in my right knee", "swelling in the left ankle".
        let before = (range.start..i).rev().take(4).find_map(|k| {
            let between_ok = tokens[k + 1..i].iter().all(|t| {
                t.is_any(&[
                    "in", "on", "my", "the", "of", "right", "left", "both", "around", "behind",
                    "her", "his", "your",
                ])
            });
            complaint_at(tokens, k)
                .filter(|_| {
                    between_ok && tokens[k + 1].is_any(&["in", "on", "of", "around", "behind"])
                })
                .map(|c| (k, c))
        });
        let Some((complaint_index, complaint)) = after.or(before) else {
            continue;
        };
        let laterality = laterality_before(tokens, i);
        let start = laterality.map(|(_, k)| k).unwrap_or(i).min(complaint_index);
        let end = (i + 1).max(complaint_index + 1);
        let severity = start
            .checked_sub(1)
            .filter(|k| *k >= range.start && tokens[*k].is_any(SEVERITIES))
            .map(|k| tokens[k].text.clone());
        let name = if site == "chest" && complaint == "pain" {
            "chest pain".to_string()
        } else {
            format!("{site} {complaint}")
        };
        if found
            .iter()
            .any(|f| f.tokens.start < end && start < f.tokens.end)
        {
            continue;
        }
        found.push(Finding {
            name,
            site: Some(site.to_string()),
            laterality: laterality.map(|(l, _)| l),
            severity,
            tokens: start..end,
        });
    }
    for m in SYMPTOMS.find(tokens, range.start..stop) {
        if found
            .iter()
            .any(|f| f.tokens.start < m.tokens.end && m.tokens.start < f.tokens.end)
        {
            continue;
        }
        let severity = m
            .tokens
            .start
            .checked_sub(1)
            .filter(|k| *k >= range.start && tokens[*k].is_any(SEVERITIES))
            .map(|k| tokens[k].text.clone());
        found.push(Finding {
            name: SYMPTOMS.name(&m).to_string(),
            site: None,
            laterality: None,
            severity,
            tokens: m.tokens,
        });
    }
    found.sort_by_key(|f| f.tokens.start);
    found
}

/// "for about two weeks", "for a couple of days", "since last week".
fn duration_in(seg: &Seg, clause: &Range<usize>) -> Option<(String, Range<usize>)> {
    let tokens = &seg.tokens;
    const UNITS: &[&str] = &[
        "day", "days", "week", "weeks", "month", "months", "year", "years", "hours",
    ];
    for i in clause.clone() {
        if !tokens[i].is_any(&["for", "past", "last"]) {
            continue;
        }
        let reach = (i + 6).min(clause.end);
        let unit = (i + 1..reach).find(|k| tokens[*k].is_any(UNITS))?;
        let quantity_ok = tokens[i + 1..unit].iter().enumerate().all(|(offset, t)| {
            t.is_any(&[
                "about", "around", "like", "over", "almost", "the", "a", "an", "couple", "few",
                "of", "past", "last", "several", "maybe", "probably", "nearly",
            ]) || read_number(tokens, i + 1 + offset, unit).is_some()
        });
        if quantity_ok {
            return Some((render(seg, i..unit + 1), i..unit + 1));
        }
    }
    None
}

fn finding_text(finding: &Finding, assertion: Assertion, duration: Option<&str>) -> String {
    let mut name = String::new();
    if let Some(severity) = &finding.severity {
        name.push_str(severity);
        name.push(' ');
    }
    match finding.laterality {
        Some(Laterality::Right) => name.push_str("right "),
        Some(Laterality::Left) => name.push_str("left "),
        Some(Laterality::Bilateral) => name.push_str("bilateral "),
        None => {}
    }
    name.push_str(&finding.name);
    match assertion {
        Assertion::Absent => format!("Denies {name}."),
        Assertion::Possible => format!("Possible {name}."),
        Assertion::Historical => format!("History of {name}."),
        _ => match duration {
            Some(duration) => as_sentence(&format!("{name} {duration}")),
            None => as_sentence(&name),
        },
    }
}

fn finding_candidate(
    finding: &Finding,
    assertion: Assertion,
    duration: Option<(String, Range<usize>)>,
    evidence: Vec<Evidence>,
) -> Candidate {
    let kind = if assertion == Assertion::Absent {
        FactKind::PertinentNegative
    } else {
        FactKind::Symptom
    };
    let duration_text = duration.as_ref().map(|(d, _)| d.clone());
    let laterality_key = format!("{:?}", finding.laterality);
    Candidate::new(
        kind,
        assertion,
        finding_text(finding, assertion, duration_text.as_deref()),
        Detail::Finding {
            name: finding.name.clone(),
            onset: None,
            duration: duration_text.clone(),
            severity: finding.severity.clone(),
            laterality: finding.laterality,
            site: finding.site.clone(),
        },
        evidence,
        format!(
            "{}:{laterality_key}:{:?}:{}",
            finding.name,
            assertion,
            duration_text.unwrap_or_default()
        ),
    )
}

pub(crate) fn extract(doc: &Doc, out: &mut Collector) {
    for seg in &doc.segs {
        for sentence in &seg.sentences {
            if seg.is_question(sentence) {
                answered_findings(doc, seg, sentence, out);
                answered_history(doc, seg, sentence, out);
                continue;
            }
            if doc.role(seg.index) != Role::Clinician {
                stated_findings(seg, sentence, out);
            }
            stated_history(doc, seg, sentence, out);
        }
    }
    social_history(doc, out);
}

fn stated_findings(seg: &Seg, sentence: &Range<usize>, out: &mut Collector) {
    for finding in findings_in(seg, sentence.clone()) {
        let ctx = context::assess(seg, sentence, &finding.tokens);
        if ctx.hypothetical || ctx.assertion == Assertion::OtherPerson {
            continue;
        }
        let clause = context::clause(seg, sentence, &finding.tokens);
        let mut range = finding.tokens.clone();
        if let Some(trigger) = &ctx.trigger {
            range.start = range.start.min(trigger.start);
            range.end = range.end.max(trigger.end);
        }
        let duration = (ctx.assertion == Assertion::Present)
            .then(|| duration_in(seg, &clause))
            .flatten();
        if let Some((_, d)) = &duration {
            range.start = range.start.min(d.start);
            range.end = range.end.max(d.end);
        }
        let Some(evidence) = Evidence::of(seg, range) else {
            continue;
        };
        out.push(finding_candidate(
            &finding,
            ctx.assertion,
            duration,
            vec![evidence],
        ));
    }
}

/// The assertion a bare reply gives to a finding the question names plainly.
fn answered_assertion(ctx: &Context, reply: Reply, findings: usize) -> Option<Assertion> {
    if ctx.assertion != Assertion::Present {
        return None;
    }
    match reply {
        Reply::No => Some(Assertion::Absent),
        // A "yes" to "fever or chills?" does not say which.
        Reply::Yes if findings == 1 => Some(Assertion::Present),
        Reply::Yes => None,
    }
}

fn question_context(seg: &Seg, sentence: &Range<usize>, target: &Range<usize>) -> Context {
    let mut ctx = context::assess(seg, sentence, target);
    let conditional = seg.tokens[sentence.start..target.start]
        .iter()
        .any(|t| t.is_any(&["if", "when", "after"]));
    if conditional {
        ctx.assertion = Assertion::Possible;
    }
    ctx
}

fn answered_findings(doc: &Doc, seg: &Seg, sentence: &Range<usize>, out: &mut Collector) {
    let Some(answered) = qa::answered(doc, seg.index) else {
        return;
    };
    if answered.question != *sentence {
        return;
    }
    let Some(reply_seg) = doc.segs.get(answered.reply_seg) else {
        return;
    };
    let Some(reply_evidence) = Evidence::of(reply_seg, answered.reply_tokens.clone()) else {
        return;
    };
    let findings = findings_in(seg, sentence.clone());
    let count = findings.len();
    for finding in findings {
        let ctx = question_context(seg, sentence, &finding.tokens);
        let Some(assertion) = answered_assertion(&ctx, answered.reply, count) else {
            continue;
        };
        let Some(question_evidence) = Evidence::of(seg, finding.tokens.clone()) else {
            continue;
        };
        out.push(finding_candidate(
            &finding,
            assertion,
            None,
            vec![question_evidence, reply_evidence],
        ));
    }
}

fn family_member(seg: &Seg, trigger: &Option<Range<usize>>) -> Option<String> {
    let trigger = trigger.as_ref()?;
    let word = seg.tokens.get(trigger.start)?;
    let member = match word.text.as_str() {
        "mom" | "mum" | "mama" => "mother",
        "dad" => "father",
        "grandma" => "grandmother",
        "grandpa" => "grandfather",
        "family" | "parents" | "parent" | "kids" => return None,
        other if FAMILY_WORDS.contains(&other) => other,
        _ => return None,
    };
    Some(member.to_string())
}

fn stated_history(doc: &Doc, seg: &Seg, sentence: &Range<usize>, out: &mut Collector) {
    for m in CONDITIONS.find(&seg.tokens, sentence.clone()) {
        let ctx = context::assess(seg, sentence, &m.tokens);
        if ctx.hypothetical || ctx.assertion == Assertion::Possible {
            continue;
        }
        let condition = CONDITIONS.name(&m).to_string();
        let mut range = m.tokens.clone();
        if let Some(trigger) = &ctx.trigger {
            range.start = range.start.min(trigger.start);
            range.end = range.end.max(trigger.end);
        }
        let Some(evidence) = Evidence::of(seg, range) else {
            continue;
        };
        let candidate = match ctx.assertion {
            Assertion::OtherPerson => {
                // Only the patient's own family: "my mother", "my dad's side".
                let about_family = seg.tokens[sentence.clone()]
                    .iter()
                    .any(|t| t.is_any(&["my", "your", "family"]));
                if !about_family {
                    continue;
                }
                let member = family_member(seg, &ctx.trigger);
                let text = match &member {
                    Some(member) => format!("Family history of {condition} ({member})."),
                    None => format!("Family history of {condition}."),
                };
                Candidate::new(
                    FactKind::FamilyHistory,
                    Assertion::OtherPerson,
                    text,
                    Detail::Text,
                    vec![evidence],
                    format!("{condition}:{}", member.unwrap_or_default()),
                )
            }
            Assertion::Absent => {
                // A clinician's "no signs of heart failure" is an exam or assessment remark.
                if doc.role(seg.index) == Role::Clinician {
                    continue;
                }
                Candidate::new(
                    FactKind::MedicalHistory,
                    Assertion::Absent,
                    format!("No history of {condition}."),
                    Detail::Text,
                    vec![evidence],
                    format!("{condition}:absent"),
                )
            }
            assertion => Candidate::new(
                FactKind::MedicalHistory,
                if assertion == Assertion::Historical {
                    Assertion::Present
                } else {
                    assertion
                },
                format!("History of {condition}."),
                Detail::Text,
                vec![evidence],
                condition.clone(),
            ),
        };
        out.push(candidate);
    }
}

fn answered_history(doc: &Doc, seg: &Seg, sentence: &Range<usize>, out: &mut Collector) {
    let Some(answered) = qa::answered(doc, seg.index) else {
        return;
    };
    if answered.question != *sentence || answered.reply != Reply::No {
        return;
    }
    let Some(reply_seg) = doc.segs.get(answered.reply_seg) else {
        return;
    };
    let Some(reply_evidence) = Evidence::of(reply_seg, answered.reply_tokens.clone()) else {
        return;
    };
    let family = seg.tokens[sentence.clone()]
        .iter()
        .any(|t| t.is_any(&["family", "relatives"]));
    for m in CONDITIONS.find(&seg.tokens, sentence.clone()) {
        let ctx = context::assess(seg, sentence, &m.tokens);
        let plain = matches!(ctx.assertion, Assertion::Present | Assertion::OtherPerson)
            || (ctx.assertion == Assertion::Historical);
        if !plain {
            continue;
        }
        let condition = CONDITIONS.name(&m).to_string();
        let Some(question_evidence) = Evidence::of(seg, m.tokens.clone()) else {
            continue;
        };
        let evidence = vec![question_evidence, reply_evidence];
        let candidate = if family {
            Candidate::new(
                FactKind::FamilyHistory,
                Assertion::Absent,
                format!("No family history of {condition}."),
                Detail::Text,
                evidence,
                format!("{condition}:absent"),
            )
        } else if ctx.assertion == Assertion::OtherPerson {
            continue;
        } else {
            Candidate::new(
                FactKind::MedicalHistory,
                Assertion::Absent,
                format!("No history of {condition}."),
                Detail::Text,
                evidence,
                format!("{condition}:absent"),
            )
        };
        out.push(candidate);
    }
}

const TOPICS: &[(&str, &[&str], &str)] = &[
    (
        "tobacco",
        &[
            "smoke",
            "smoking",
            "smoker",
            "smoked",
            "cigarettes",
            "cigarette",
            "tobacco",
            "vape",
            "vaping",
            "cigars",
            "chew",
        ],
        "Denies tobacco use.",
    ),
    (
        "alcohol",
        &[
            "alcohol", "drink", "drinking", "drinks", "beer", "beers", "wine", "liquor",
        ],
        "Denies alcohol use.",
    ),
    (
        "drugs",
        &[
            "drugs",
            "marijuana",
            "weed",
            "cocaine",
            "recreational",
            "cannabis",
            "heroin",
        ],
        "Denies drug use.",
    ),
];

/// Words that make an alcohol-sounding word about something else ("drink water").
const NOT_ALCOHOL: &[&str] = &[
    "water", "fluids", "coffee", "soda", "juice", "milk", "tea", "plenty",
];

fn topic_in(tokens: &[Token], range: Range<usize>) -> Option<(usize, &'static str, &'static str)> {
    let words = &tokens[range.clone()];
    for (i, token) in words.iter().enumerate() {
        for (topic, triggers, denial) in TOPICS {
            if token.is_any(triggers) {
                if *topic == "alcohol" && words.iter().any(|t| t.is_any(NOT_ALCOHOL)) {
                    return None;
                }
                if *topic == "drugs"
                    && !words.iter().any(|t| {
                        t.is_any(&[
                            "recreational",
                            "street",
                            "illicit",
                            "marijuana",
                            "weed",
                            "cocaine",
                            "cannabis",
                            "heroin",
                        ])
                    })
                {
                    continue;
                }
                return Some((range.start + i, topic, denial));
            }
        }
    }
    None
}

fn social_history(doc: &Doc, out: &mut Collector) {
    for seg in &doc.segs {
        if !doc.may_be_clinician(seg.index) {
            continue;
        }
        let Some(question) = seg.last_question() else {
            continue;
        };
        let Some((topic_index, topic, denial)) = topic_in(&seg.tokens, question.clone()) else {
            continue;
        };
        let Some(question_evidence) = Evidence::of(seg, topic_index..topic_index + 1) else {
            continue;
        };
        let reply_index = seg.index + 1;
        let Some(reply) = doc.segs.get(reply_index) else {
            continue;
        };
        if doc.role(reply_index) == Role::Clinician {
            continue;
        }
        if let Some(answered) = qa::answered(doc, seg.index) {
            if answered.reply != Reply::No {
                continue;
            }
            let Some(reply_evidence) = Evidence::of(reply, answered.reply_tokens.clone()) else {
                continue;
            };
            out.push(Candidate::new(
                FactKind::SocialHistory,
                Assertion::Absent,
                denial.to_string(),
                Detail::Social {
                    topic: topic.to_string(),
                    value: "denies".to_string(),
                },
                vec![question_evidence, reply_evidence],
                format!("{topic}:absent"),
            ));
            continue;
        }
        // A fuller reply: its first sentence is the history, in the patient's words.
        let Some(first) = reply.sentences.first().cloned() else {
            continue;
        };
        let words = first.len();
        if !(2..=30).contains(&words) || reply.is_question(&first) {
            continue;
        }
        let value = render(reply, first.clone());
        let mentions_other = reply.tokens[first.clone()]
            .iter()
            .any(|t| t.is_any(FAMILY_WORDS));
        if value.is_empty() || mentions_other {
            continue;
        }
        let historical = reply.tokens[first.clone()]
            .iter()
            .any(|t| t.is_any(&["quit", "stopped", "used", "former", "ago"]));
        let negated = reply.tokens[first.clone()]
            .iter()
            .take(3)
            .any(|t| t.is_any(&["no", "not", "never", "don't", "nope"]));
        let assertion = if historical {
            Assertion::Historical
        } else if negated {
            Assertion::Absent
        } else {
            Assertion::Present
        };
        let Some(reply_evidence) = Evidence::of(reply, first) else {
            continue;
        };
        let label = match topic {
            "tobacco" => "Tobacco",
            "alcohol" => "Alcohol",
            _ => "Drugs",
        };
        out.push(Candidate::new(
            FactKind::SocialHistory,
            assertion,
            format!("{label}: {}", as_sentence(&value)),
            Detail::Social {
                topic: topic.to_string(),
                value,
            },
            vec![question_evidence, reply_evidence],
            format!("{topic}:{assertion:?}:{}", reply.index),
        ));
    }
    stated_social(doc, out);
}

const LIFESTYLE: &[(&str, &[&[&str]])] = &[
    (
        "occupation",
        &[
            &["i", "work", "as"],
            &["i", "work", "at"],
            &["i", "work", "for"],
            &["i'm", "retired"],
            &["my", "job"],
        ],
    ),
    (
        "exercise",
        &[
            &["i", "exercise"],
            &["i", "go", "to", "the", "gym"],
            &["i", "work", "out"],
            &["i", "run"],
            &["i", "walk"],
            &["i", "swim"],
            &["i", "bike"],
        ],
    ),
    (
        "living situation",
        &[
            &["i", "live", "with"],
            &["i", "live", "alone"],
            &["i", "live", "by", "myself"],
        ],
    ),
];

fn stated_social(doc: &Doc, out: &mut Collector) {
    for seg in &doc.segs {
        if doc.role(seg.index) == Role::Clinician {
            continue;
        }
        for sentence in &seg.sentences {
            if seg.is_question(sentence) || sentence.len() > 30 {
                continue;
            }
            let tokens = &seg.tokens;
            for i in sentence.clone() {
                for (topic, phrases) in LIFESTYLE {
                    let hit = phrases.iter().find(|p| {
                        i + p.len() <= sentence.end
                            && p.iter().zip(&tokens[i..]).all(|(w, t)| t.is(w))
                    });
                    let Some(phrase) = hit else {
                        continue;
                    };
                    let clause = context::clause(seg, sentence, &(i..i + phrase.len()));
                    let end = clause.end.min(i + 15);
                    let value = render(seg, i..end);
                    let Some(evidence) = Evidence::of(seg, i..end) else {
                        continue;
                    };
                    let mut label = topic.to_string();
                    label[..1].make_ascii_uppercase();
                    out.push(Candidate::new(
                        FactKind::SocialHistory,
                        Assertion::Present,
                        format!("{label}: {}", as_sentence(&value)),
                        Detail::Social {
                            topic: topic.to_string(),
                            value,
                        },
                        vec![evidence],
                        format!("{topic}:{}:{i}", seg.index),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::clinical::{extract, Assertion, Detail, Fact, FactKind, Laterality};
    use crate::transcript::Transcript;

    fn facts(dialogue: &str) -> Vec<Fact> {
        extract(&Transcript::from_dialogue(dialogue).expect("dialogue"))
    }

    #[test]
    fn a_no_to_a_symptom_question_is_a_pertinent_negative_citing_both_turns() {
        let found = facts("[doctor] any fever or chills ?\n[patient] no .");
        let negatives: Vec<&Fact> = found
            .iter()
            .filter(|f| f.kind == FactKind::PertinentNegative)
            .collect();
        let texts: Vec<&str> = negatives.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["Denies fever.", "Denies chills."]);
        for fact in negatives {
            assert_eq!(fact.assertion, Assertion::Absent);
            let segments: Vec<&str> = fact.evidence.iter().map(|e| e.segment.as_str()).collect();
            assert_eq!(segments, ["s1", "s2"]);
        }
    }

    #[test]
    fn a_yes_to_two_symptoms_asserts_neither() {
        let found = facts("[doctor] any nausea or vomiting ?\n[patient] yeah .");
        assert!(!found.iter().any(|f| f.kind == FactKind::Symptom));
        let one = facts("[doctor] any nausea ?\n[patient] yeah .");
        assert!(one
            .iter()
            .any(|f| f.kind == FactKind::Symptom && f.text == "Nausea."));
    }

    #[test]
    fn laterality_comes_only_from_the_word_before_the_site() {
        let found = facts(
            "[patient] my right knee has been hurting for about two weeks . i left my left \
             glove at home and my back hurts .",
        );
        let knee = found
            .iter()
            .find(|f| matches!(&f.detail, Detail::Finding { site: Some(s), .. } if s == "knee"))
            .expect("knee pain");
        assert_eq!(knee.text, "Right knee pain for about 2 weeks.");
        assert!(matches!(
            knee.detail,
            Detail::Finding {
                laterality: Some(Laterality::Right),
                ..
            }
        ));
        let back = found
            .iter()
            .find(|f| matches!(&f.detail, Detail::Finding { site: Some(s), .. } if s == "back"))
            .expect("back pain");
        assert!(matches!(
            back.detail,
            Detail::Finding {
                laterality: None,
                ..
            }
        ));
        assert_eq!(back.text, "Back pain.");
    }

    #[test]
    fn negation_stops_at_but() {
        let found = facts("[patient] i have no fever but i do have a cough .");
        let by_text: Vec<(&str, Assertion)> = found
            .iter()
            .map(|f| (f.text.as_str(), f.assertion))
            .collect();
        assert!(by_text.contains(&("Denies fever.", Assertion::Absent)));
        assert!(by_text.contains(&("Cough.", Assertion::Present)));
    }

    #[test]
    fn family_history_is_not_the_patients_history() {
        let found = facts("[patient] my mother had breast cancer and i have high blood pressure .");
        let family = found
            .iter()
            .find(|f| f.kind == FactKind::FamilyHistory)
            .expect("family history");
        assert_eq!(family.assertion, Assertion::OtherPerson);
        assert_eq!(family.text, "Family history of breast cancer (mother).");
        let own: Vec<&str> = found
            .iter()
            .filter(|f| f.kind == FactKind::MedicalHistory)
            .map(|f| f.text.as_str())
            .collect();
        assert_eq!(own, ["History of hypertension."]);
    }

    #[test]
    fn smoking_history_pairs_question_and_answer() {
        let found = facts("[doctor] do you smoke ?\n[patient] i quit five years ago .");
        let tobacco = found
            .iter()
            .find(|f| f.kind == FactKind::SocialHistory)
            .expect("tobacco");
        assert_eq!(tobacco.assertion, Assertion::Historical);
        assert_eq!(tobacco.text, "Tobacco: I quit 5 years ago.");
        assert_eq!(tobacco.evidence.len(), 2);

        let denied = facts("[doctor] do you drink alcohol ?\n[patient] no .");
        assert!(denied.iter().any(|f| f.kind == FactKind::SocialHistory
            && f.assertion == Assertion::Absent
            && f.text == "Denies alcohol use."));
    }
}
