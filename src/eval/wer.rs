//! Word error rate between a reference transcript and an ASR hypothesis.
//!
//! Both texts go through the same normalization first ([`normalize_words`]), so the score counts
//! words that were heard wrong, not differences in how the same words are written: case,
//! punctuation, "10" versus "ten", "140/90" versus "140 over 90", "%" versus "percent". The
//! alignment is a word-level Levenshtein distance in O(n·m) time and O(m) memory. This module is
//! pure computation: no I/O, no logging, and it never keeps the texts it is given.

/// Edit counts from aligning a hypothesis against a reference, and the rate they give.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WerReport {
    /// Reference words replaced by a different hypothesis word.
    pub substitutions: usize,
    /// Reference words missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis words with no counterpart in the reference.
    pub insertions: usize,
    /// Number of reference words after normalization.
    pub reference_words: usize,
    /// `(S + D + I) / N`. With an empty reference the denominator is taken as 1, so an empty
    /// hypothesis scores 0 and any hypothesis word scores at least 1 (never NaN or infinity,
    /// which would poison averages and JSON output).
    pub wer: f64,
}

impl WerReport {
    /// Total edits: substitutions + deletions + insertions.
    #[must_use]
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }
}

/// Compares `hypothesis` with `reference` word by word after [`normalize_words`].
#[must_use]
pub fn word_error_rate(reference: &str, hypothesis: &str) -> WerReport {
    let reference = normalize_words(reference);
    let hypothesis = normalize_words(hypothesis);
    let (substitutions, deletions, insertions) = align(&reference, &hypothesis);
    let errors = substitutions + deletions + insertions;
    WerReport {
        substitutions,
        deletions,
        insertions,
        reference_words: reference.len(),
        wer: errors as f64 / reference.len().max(1) as f64,
    }
}

/// Edit counts along one cheapest path to a cell of the alignment table.
#[derive(Debug, Clone, Copy)]
struct Edits {
    sub: usize,
    del: usize,
    ins: usize,
}

impl Edits {
    fn cost(self) -> usize {
        self.sub + self.del + self.ins
    }
}

/// Levenshtein alignment over words, returning (substitutions, deletions, insertions).
///
/// Only one row of the table is kept. Each cell carries its S/D/I split rather than just the
/// total, so no backtrace (and no n·m table) is needed to report the split.
fn align(reference: &[String], hypothesis: &[String]) -> (usize, usize, usize) {
    let mut row: Vec<Edits> = (0..=hypothesis.len())
        .map(|j| Edits {
            sub: 0,
            del: 0,
            ins: j,
        })
        .collect();
    for (i, ref_word) in reference.iter().enumerate() {
        // `diag` is the previous row's value at j-1, overwritten as the row advances.
        let mut diag = row[0];
        row[0] = Edits {
            sub: 0,
            del: i + 1,
            ins: 0,
        };
        for (j, hyp_word) in hypothesis.iter().enumerate() {
            let above = row[j + 1];
            let mut best = diag;
            if ref_word != hyp_word {
                best.sub += 1;
            }
            // Ties keep the diagonal, then the deletion: a fixed preference so the S/D/I split is
            // reproducible; the total is the same either way.
            let deletion = Edits {
                del: above.del + 1,
                ..above
            };
            if deletion.cost() < best.cost() {
                best = deletion;
            }
            let left = row[j];
            let insertion = Edits {
                ins: left.ins + 1,
                ..left
            };
            if insertion.cost() < best.cost() {
                best = insertion;
            }
            diag = above;
            row[j + 1] = best;
        }
    }
    let last = row[hypothesis.len()];
    (last.sub, last.del, last.ins)
}

/// Splits text into normalized words so that differently written forms of the same speech compare
/// equal.
///
/// - lowercase; curly apostrophes become `'`; an apostrophe is kept only between two letters
///   ("don't" stays, quotes around a word go);
/// - everything that is not a letter, digit or one of the symbols below separates words, so
///   punctuation disappears and hyphens split ("follow-up" → "follow up");
/// - digits become words: "10" → "ten", "128" → "one hundred twenty eight", "1,000" → "one
///   thousand", "98.6" → "ninety eight point six", "3rd" → "third"; a number glued to letters is
///   split ("10mg" → "ten milligrams");
/// - "140/90" → "one hundred forty over ninety"; "%" → "percent"; "°" → "degrees"; "&" → "and";
/// - an "and" inside a spelled-out number is dropped ("one hundred and forty" → "one hundred
///   forty"), matching how digits are spelled out here;
/// - hesitation sounds (um, uh, hmm, mm, mhm) are dropped and a few spellings Whisper uses for the
///   same spoken word are unified ("ok" → "okay", "mg" → "milligrams", "dr" → "doctor").
#[must_use]
pub fn normalize_words(text: &str) -> Vec<String> {
    let mut raw = Vec::new();
    tokenize(text, &mut raw);
    let mut words = Vec::with_capacity(raw.len());
    for (k, word) in raw.iter().enumerate() {
        if word == "and" && joins_number_words(&raw, k) {
            continue;
        }
        if FILLERS.contains(&word.as_str()) {
            continue;
        }
        match SPELLINGS.iter().find(|(from, _)| *from == word.as_str()) {
            Some((_, to)) => words.push((*to).to_string()),
            None => words.push(word.clone()),
        }
    }
    words
}

/// Hesitations that Whisper leaves out of its transcripts but human references often keep.
const FILLERS: &[&str] = &[
    "um", "umm", "uh", "uhm", "er", "erm", "hmm", "mm", "mmm", "mhm",
];

/// Written variants of one spoken word; the right-hand side is the form kept.
const SPELLINGS: &[(&str, &str)] = &[
    ("ok", "okay"),
    ("mg", "milligrams"),
    ("mgs", "milligrams"),
    ("dr", "doctor"),
    ("mr", "mister"),
    ("mrs", "missus"),
];

/// Whether `raw[k]` ("and") sits between a scale word and another number word, as in "one hundred
/// and forty", where it is a spoken filler rather than a conjunction.
fn joins_number_words(raw: &[String], k: usize) -> bool {
    let before = k.checked_sub(1).and_then(|b| raw.get(b));
    let after = raw.get(k + 1);
    matches!(
        (before, after),
        (Some(b), Some(a)) if SCALES.contains(&b.as_str()) && is_number_word(a)
    )
}

const SCALES: &[&str] = &["hundred", "thousand", "million", "billion"];

fn is_number_word(word: &str) -> bool {
    ONES.contains(&word) || TENS.contains(&word) || SCALES.contains(&word)
}

/// Number words by value (shared with the draft verifier).
pub(crate) const ONES: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];

/// Tens words by value ÷ 10; the first two are unused.
pub(crate) const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];

/// Scans `text` into lowercase word tokens, spelling out numbers and symbols as it goes.
fn tokenize(text: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = text
        .chars()
        .map(|c| {
            if matches!(c, '\u{2019}' | '\u{2018}') {
                '\''
            } else {
                c
            }
        })
        .collect();
    let mut i = 0;
    // Index just past the last number token, so "/" right after it can be read as "over".
    let mut number_end = None;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() {
            let (number, next) = scan_number(&chars, i);
            i = next;
            let suffix_end = ordinal_suffix_end(&chars, i);
            match (suffix_end, number.fraction.is_empty()) {
                (Some(end), true) => {
                    spell_ordinal(&number.integer, out);
                    i = end;
                }
                _ => spell_number(&number, out),
            }
            number_end = Some(i);
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphabetic()
                    || (chars[i] == '\'' && chars.get(i + 1).is_some_and(|n| n.is_alphabetic())))
            {
                i += 1;
            }
            out.push(chars[start..i].iter().collect::<String>().to_lowercase());
        } else {
            let spoken = match c {
                '%' => Some("percent"),
                '°' => Some("degrees"),
                '&' => Some("and"),
                '/' if number_end == Some(i)
                    && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit()) =>
                {
                    Some("over")
                }
                _ => None,
            };
            if let Some(word) = spoken {
                out.push(word.to_string());
            }
            i += 1;
        }
    }
}

/// A number as written: its integer digits (thousands separators removed) and any decimals.
struct Number {
    integer: String,
    fraction: String,
}

/// Reads digits from `start`, accepting "," before exactly three digits (a thousands separator)
/// and "." before a digit (a decimal point). Returns the number and the index after it.
fn scan_number(chars: &[char], start: usize) -> (Number, usize) {
    let mut integer = String::new();
    let mut i = start;
    loop {
        while i < chars.len() && chars[i].is_ascii_digit() {
            integer.push(chars[i]);
            i += 1;
        }
        let group_follows = chars.get(i) == Some(&',')
            && (1..=3).all(|k| chars.get(i + k).is_some_and(|c| c.is_ascii_digit()))
            && !chars.get(i + 4).is_some_and(|c| c.is_ascii_digit());
        if group_follows {
            i += 1;
        } else {
            break;
        }
    }
    let mut fraction = String::new();
    if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        i += 1;
        while i < chars.len() && chars[i].is_ascii_digit() {
            fraction.push(chars[i]);
            i += 1;
        }
    }
    (Number { integer, fraction }, i)
}

/// If an ordinal suffix ("st", "nd", "rd", "th") starts at `i` and ends the token, returns the
/// index after it.
fn ordinal_suffix_end(chars: &[char], i: usize) -> Option<usize> {
    let pair: String = chars
        .get(i..i + 2)?
        .iter()
        .collect::<String>()
        .to_lowercase();
    let ends_token = !chars.get(i + 2).is_some_and(|c| c.is_alphanumeric());
    (ends_token && matches!(pair.as_str(), "st" | "nd" | "rd" | "th")).then_some(i + 2)
}

fn spell_number(number: &Number, out: &mut Vec<String>) {
    spell_integer(&number.integer, out);
    if !number.fraction.is_empty() {
        out.push("point".to_string());
        spell_digits(&number.fraction, out);
    }
}

/// Spells a digit string as a cardinal. Numbers that are not read as quantities ("007", or past
/// the billions) are spelled digit by digit, which is also how people read them aloud.
fn spell_integer(digits: &str, out: &mut Vec<String>) {
    let leading_zero = digits.len() > 1 && digits.starts_with('0');
    match digits.parse::<u64>() {
        Ok(value) if !leading_zero && value < 1_000_000_000_000 => spell_value(value, out),
        _ => spell_digits(digits, out),
    }
}

fn spell_digits(digits: &str, out: &mut Vec<String>) {
    for d in digits.chars().filter_map(|c| c.to_digit(10)) {
        out.push(ONES[d as usize].to_string());
    }
}

fn spell_value(value: u64, out: &mut Vec<String>) {
    if value == 0 {
        out.push(ONES[0].to_string());
        return;
    }
    let groups = [
        (1_000_000_000, "billion"),
        (1_000_000, "million"),
        (1_000, "thousand"),
    ];
    let mut rest = value;
    for (scale, name) in groups {
        if rest >= scale {
            spell_below_thousand(rest / scale, out);
            out.push(name.to_string());
            rest %= scale;
        }
    }
    if rest > 0 {
        spell_below_thousand(rest, out);
    }
}

/// Spells 1..=999 without "and", e.g. "one hundred forty".
fn spell_below_thousand(value: u64, out: &mut Vec<String>) {
    let hundreds = value / 100;
    let rest = (value % 100) as usize;
    if hundreds > 0 {
        out.push(ONES[hundreds as usize].to_string());
        out.push("hundred".to_string());
    }
    if rest >= 20 {
        out.push(TENS[rest / 10].to_string());
        let units = rest % 10;
        if units > 0 {
            out.push(ONES[units].to_string());
        }
    } else if rest > 0 {
        out.push(ONES[rest].to_string());
    }
}

/// Spells a digit string as an ordinal by turning its last word into its ordinal form
/// ("21" → "twenty first").
fn spell_ordinal(digits: &str, out: &mut Vec<String>) {
    let start = out.len();
    spell_integer(digits, out);
    if let Some(last) = out.get_mut(start..).and_then(|words| words.last_mut()) {
        *last = ordinal_of(last);
    }
}

fn ordinal_of(cardinal: &str) -> String {
    match cardinal {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        tens if tens.ends_with('y') => format!("{}ieth", &tens[..tens.len() - 1]),
        other => format!("{other}th"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        normalize_words(text)
    }

    fn split(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_string).collect()
    }

    fn counts(report: &WerReport) -> (usize, usize, usize, usize) {
        (
            report.substitutions,
            report.deletions,
            report.insertions,
            report.reference_words,
        )
    }

    #[test]
    fn normalize_lowercases_and_strips_punctuation() {
        assert_eq!(
            words("Hello, Doctor Evans! How are you?"),
            split("hello doctor evans how are you")
        );
    }

    #[test]
    fn normalize_keeps_inner_apostrophes_only() {
        assert_eq!(
            words("I'm fine, don't worry -- it's 'nothing' the doctors' said"),
            split("i'm fine don't worry it's nothing the doctors said")
        );
        assert_eq!(words("I\u{2019}ve"), split("i've"));
    }

    #[test]
    fn normalize_splits_hyphens() {
        assert_eq!(
            words("follow-up in two-week"),
            split("follow up in two week")
        );
        assert_eq!(words("forty-two"), split("forty two"));
    }

    #[test]
    fn normalize_spells_digits_like_number_words() {
        assert_eq!(words("10"), words("ten"));
        assert_eq!(words("0"), split("zero"));
        assert_eq!(words("7"), split("seven"));
        assert_eq!(words("19"), split("nineteen"));
        assert_eq!(words("20"), split("twenty"));
        assert_eq!(words("76"), split("seventy six"));
        assert_eq!(words("100"), split("one hundred"));
        assert_eq!(words("105"), split("one hundred five"));
        assert_eq!(words("128"), split("one hundred twenty eight"));
        assert_eq!(words("999"), split("nine hundred ninety nine"));
        assert_eq!(words("1000"), split("one thousand"));
        assert_eq!(words("2500"), split("two thousand five hundred"));
        assert_eq!(words("1,000,001"), split("one million one"));
    }

    #[test]
    fn normalize_drops_and_inside_spelled_numbers() {
        assert_eq!(words("one hundred and forty"), words("140"));
        assert_eq!(words("two thousand and five"), words("2005"));
        // An ordinary "and" stays.
        assert_eq!(words("salt and pepper"), split("salt and pepper"));
        assert_eq!(words("a hundred and then"), split("a hundred and then"));
    }

    #[test]
    fn normalize_reads_blood_pressure_as_over() {
        assert_eq!(words("140/90"), words("140 over 90"));
        assert_eq!(
            words("BP 128/82."),
            split("bp one hundred twenty eight over eighty two")
        );
        // Not between numbers: just a separator.
        assert_eq!(words("and/or"), split("and or"));
        assert_eq!(words("5/ day"), split("five day"));
    }

    #[test]
    fn normalize_decimals_and_thousands() {
        assert_eq!(words("98.6"), split("ninety eight point six"));
        assert_eq!(words("0.5"), split("zero point five"));
        assert_eq!(words("100.05"), split("one hundred point zero five"));
        assert_eq!(words("1,200"), split("one thousand two hundred"));
        // A sentence-final period is not a decimal point, nor a comma in a list a separator.
        assert_eq!(words("It was 98."), split("it was ninety eight"));
        assert_eq!(words("5,6"), split("five six"));
    }

    #[test]
    fn normalize_symbols_and_units() {
        assert_eq!(words("98%"), words("98 percent"));
        assert_eq!(words("10mg"), words("10 milligrams"));
        assert_eq!(words("10 mg"), split("ten milligrams"));
        assert_eq!(words("101°F"), split("one hundred one degrees f"));
        assert_eq!(words("Dr. Evans"), split("doctor evans"));
        assert_eq!(words("OK."), split("okay"));
        assert_eq!(words("salt & pepper"), split("salt and pepper"));
    }

    #[test]
    fn normalize_ordinals() {
        assert_eq!(words("1st"), split("first"));
        assert_eq!(words("2nd 3rd 4th"), split("second third fourth"));
        assert_eq!(words("12th"), split("twelfth"));
        assert_eq!(words("20th"), split("twentieth"));
        assert_eq!(words("21st"), split("twenty first"));
        assert_eq!(words("100th"), split("one hundredth"));
        // A suffix-like word that goes on is not an ordinal suffix.
        assert_eq!(words("3rdly"), split("three rdly"));
    }

    #[test]
    fn normalize_leading_zeros_and_huge_numbers_spell_digits() {
        assert_eq!(words("007"), split("zero zero seven"));
        assert_eq!(words("99999999999999999999"), vec!["nine".to_string(); 20]);
    }

    #[test]
    fn normalize_drops_fillers() {
        assert_eq!(words("Um, I, uh, feel mm-hmm fine"), split("i feel fine"));
    }

    #[test]
    fn normalize_empty_and_punctuation_only() {
        assert!(words("").is_empty());
        assert!(words("  ... , ; -- !? ").is_empty());
    }

    #[test]
    fn identical_texts_score_zero() {
        let text = "Your blood pressure today is 128 over 82.";
        let report = word_error_rate(text, text);
        // 5 words, "128" spoken as 4, "over", "82" as 2.
        assert_eq!(counts(&report), (0, 0, 0, 12));
        assert_eq!(report.wer, 0.0);
    }

    #[test]
    fn formatting_differences_score_zero() {
        let reference =
            "Your temperature is 98.4, and the pressure is one hundred and forty over ninety.";
        let hypothesis = "your temperature is ninety-eight point four and the pressure is 140/90";
        let report = word_error_rate(reference, hypothesis);
        assert_eq!(report.errors(), 0, "{report:?}");
    }

    #[test]
    fn empty_reference_and_hypothesis_score_zero() {
        let report = word_error_rate("", "");
        assert_eq!(counts(&report), (0, 0, 0, 0));
        assert_eq!(report.wer, 0.0);
    }

    #[test]
    fn empty_reference_counts_every_hypothesis_word_as_insertion() {
        let report = word_error_rate("", "thank you");
        assert_eq!(counts(&report), (0, 0, 2, 0));
        assert_eq!(report.wer, 2.0);
        assert!(report.wer.is_finite());
    }

    #[test]
    fn empty_hypothesis_deletes_everything() {
        let report = word_error_rate("no chest pain", "");
        assert_eq!(counts(&report), (0, 3, 0, 3));
        assert_eq!(report.wer, 1.0);
    }

    #[test]
    fn one_substitution() {
        let report = word_error_rate("the cat sat on the mat", "the cat sat on the hat");
        assert_eq!(counts(&report), (1, 0, 0, 6));
        assert!((report.wer - 1.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn one_deletion() {
        let report = word_error_rate("no chest pain today", "no pain today");
        assert_eq!(counts(&report), (0, 1, 0, 4));
        assert_eq!(report.wer, 0.25);
    }

    #[test]
    fn one_insertion() {
        let report = word_error_rate("no chest pain", "no chest pain today");
        assert_eq!(counts(&report), (0, 0, 1, 3));
        assert!((report.wer - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn mixed_edits_are_counted_separately() {
        // reference: a b c d e f ; hypothesis: a x c e f g
        // b→x substitution, d deleted, g inserted.
        let report = word_error_rate("a b c d e f", "a x c e f g");
        assert_eq!(counts(&report), (1, 1, 1, 6));
        assert_eq!(report.wer, 0.5);
    }

    #[test]
    fn classic_levenshtein_example() {
        // kitten → sitting as words: 2 substitutions and 1 insertion, distance 3.
        let report = word_error_rate("k i t t e n", "s i t t i n g");
        assert_eq!(counts(&report), (2, 0, 1, 6));
        assert_eq!(report.wer, 0.5);
    }

    #[test]
    fn wer_can_exceed_one() {
        let report = word_error_rate("yes", "no no no");
        assert_eq!(counts(&report), (1, 0, 2, 1));
        assert_eq!(report.wer, 3.0);
    }

    #[test]
    fn number_words_versus_digits_are_not_errors() {
        let report = word_error_rate(
            "take ibuprofen 400 milligrams three times a day for 2 weeks",
            "Take ibuprofen four hundred mg 3 times a day for two weeks.",
        );
        assert_eq!(report.errors(), 0, "{report:?}");
    }

    #[test]
    fn wrong_number_is_an_error_per_spoken_word() {
        // 76 → 78 differs in one spoken word ("six" vs "eight").
        let report = word_error_rate("heart rate is 76", "heart rate is 78");
        assert_eq!(counts(&report), (1, 0, 0, 5));
    }

    #[test]
    fn counts_match_total_distance_on_longer_input() {
        // Cross-check the S/D/I split against a full-table Levenshtein distance.
        let reference =
            words("good morning i'm doctor evans what brings you in today my back hurts");
        let hypothesis =
            words("good morning doctor evans what bring you today oh my back hurts a lot");
        let report = word_error_rate(&reference.join(" "), &hypothesis.join(" "));
        assert_eq!(
            report.errors(),
            full_table_distance(&reference, &hypothesis)
        );
    }

    #[test]
    fn split_is_consistent_with_distance_on_generated_inputs() {
        // A fixed LCG instead of a rand dependency: many small cases over a tiny vocabulary, so
        // repeats and ties (the tricky part of an alignment) are common.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % bound
        };
        let vocab = ["a", "b", "c", "d"];
        for _ in 0..2000 {
            let reference: Vec<String> = (0..next(9))
                .map(|_| vocab[next(4) as usize].to_string())
                .collect();
            let hypothesis: Vec<String> = (0..next(9))
                .map(|_| vocab[next(4) as usize].to_string())
                .collect();
            let report = word_error_rate(&reference.join(" "), &hypothesis.join(" "));
            assert_eq!(
                report.errors(),
                full_table_distance(&reference, &hypothesis),
                "{reference:?} vs {hypothesis:?}"
            );
            // Every reference word is matched, substituted or deleted; every hypothesis word is
            // matched, substituted or inserted; the matched counts must agree.
            assert_eq!(
                reference.len() - report.deletions,
                hypothesis.len() - report.insertions,
                "{reference:?} vs {hypothesis:?}: {report:?}"
            );
            assert!(report.substitutions + report.deletions <= reference.len());
        }
    }

    fn full_table_distance(a: &[String], b: &[String]) -> usize {
        let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in table.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, cell) in table[0].iter_mut().enumerate() {
            *cell = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let sub = table[i - 1][j - 1] + usize::from(a[i - 1] != b[j - 1]);
                table[i][j] = sub.min(table[i - 1][j] + 1).min(table[i][j - 1] + 1);
            }
        }
        table[a.len()][b.len()]
    }
}
