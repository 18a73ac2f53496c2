//! Tokens with character offsets, sentences, spoken numbers and lexicon matching: the shared
//! ground every extractor stands on. Offsets are Unicode scalar indices into a segment's text so
//! an evidence span points at exactly the words a fact was read from.

use std::collections::HashMap;
use std::ops::Range;

use crate::transcript::{Segment, Speaker};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Word,
    /// Digits, possibly with a decimal part or a trailing "+" ("1+ edema").
    Number,
    Punct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// Lower-cased.
    pub text: String,
    pub start: usize,
    pub end: usize,
    pub kind: TokenKind,
}

impl Token {
    pub fn is(&self, word: &str) -> bool {
        self.text == word
    }
    pub fn is_any(&self, words: &[&str]) -> bool {
        words.contains(&self.text.as_str())
    }
    pub fn is_sentence_end(&self) -> bool {
        self.kind == TokenKind::Punct && matches!(self.text.as_str(), "." | "?" | "!" | ";")
    }
    pub fn is_punct(&self) -> bool {
        self.kind == TokenKind::Punct
    }
}

/// Splits text into words, numbers and punctuation. Apostrophes and inner hyphens stay inside
/// words ("don't", "x-ray", "mm-hmm"); digits glued to letters are split ("20mg") unless the word
/// starts with a letter ("b12", "a1c").
pub(crate) fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            // Thousands separators ("1,000") and decimals ("98.6") belong to the number.
            while i + 1 < chars.len()
                && (chars[i] == '.' || chars[i] == ',')
                && chars[i + 1].is_ascii_digit()
                && !(chars[i] == ',' && (i + 3 >= chars.len() || !digits_then_break(&chars, i + 1)))
            {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < chars.len() && chars[i] == '+' {
                i += 1;
            }
            let raw: String = chars[start..i].iter().filter(|c| **c != ',').collect();
            tokens.push(Token {
                text: raw,
                start,
                end: i,
                kind: TokenKind::Number,
            });
        } else if c.is_alphabetic() {
            let start = i;
            while i < chars.len() {
                let ch = chars[i];
                let inner = (ch == '\'' || ch == '’' || ch == '-')
                    && i + 1 < chars.len()
                    && chars[i + 1].is_alphanumeric()
                    && i > start;
                if ch.is_alphanumeric() || inner {
                    i += 1;
                } else {
                    break;
                }
            }
            let text: String = chars[start..i]
                .iter()
                .map(|c| if *c == '’' { '\'' } else { *c })
                .collect::<String>()
                .to_lowercase();
            tokens.push(Token {
                text,
                start,
                end: i,
                kind: TokenKind::Word,
            });
        } else if c == '\'' && i + 1 < chars.len() && chars[i + 1].is_alphabetic() {
            // Tokenized contractions in ACI-Bench: "do n't", "it 's".
            let start = i;
            i += 1;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect::<String>().to_lowercase();
            tokens.push(Token {
                text,
                start,
                end: i,
                kind: TokenKind::Word,
            });
        } else {
            tokens.push(Token {
                text: c.to_string(),
                start: i,
                end: i + 1,
                kind: TokenKind::Punct,
            });
            i += 1;
        }
    }
    merge_split_negations(tokens)
}

/// Whether exactly three digits follow position `i` and then a non-digit (a thousands group).
fn digits_then_break(chars: &[char], i: usize) -> bool {
    let digits = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    digits == 3
}

/// "do n't" → one token "don't" spanning both, so negation triggers see one word.
fn merge_split_negations(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    for token in tokens {
        if token.text == "n't" {
            if let Some(previous) = out.last_mut() {
                if previous.kind == TokenKind::Word {
                    previous.text.push_str("n't");
                    previous.end = token.end;
                    continue;
                }
            }
        }
        if token.text == "na" {
            // "gon na" / "wan na" as spoken.
            if let Some(previous) = out.last_mut() {
                if previous.is_any(&["gon", "wan"]) {
                    previous.text.push_str("na");
                    previous.end = token.end;
                    continue;
                }
            }
        }
        out.push(token);
    }
    out
}

/// One transcript segment, tokenized and split into sentences.
#[derive(Debug)]
pub(crate) struct Seg<'a> {
    pub index: usize,
    pub id: &'a str,
    pub speaker: Speaker,
    pub chars: Vec<char>,
    pub tokens: Vec<Token>,
    /// Token index ranges; the closing punctuation belongs to its sentence.
    pub sentences: Vec<Range<usize>>,
}

impl<'a> Seg<'a> {
    pub fn new(index: usize, segment: &'a Segment) -> Seg<'a> {
        let tokens = tokenize(&segment.text);
        let sentences = split_sentences(&tokens);
        Seg {
            index,
            id: &segment.id,
            speaker: segment.speaker,
            chars: segment.text.chars().collect(),
            tokens,
            sentences,
        }
    }

    /// A sentence ending in '?', unless the '?' only closes a tag ("… twice a day , okay ?"):
    /// a plan spoken with a tag is still a plan, not a question.
    pub fn is_question(&self, sentence: &Range<usize>) -> bool {
        let ends_with_mark = sentence
            .clone()
            .next_back()
            .and_then(|last| self.tokens.get(last))
            .is_some_and(|t| t.is("?"));
        if !ends_with_mark {
            return false;
        }
        let words: Vec<&Token> = self.tokens[sentence.clone()]
            .iter()
            .filter(|t| t.kind != TokenKind::Punct)
            .collect();
        let tagged = words
            .last()
            .is_some_and(|t| t.is_any(&["okay", "ok", "alright"]));
        !(tagged && words.len() >= 8)
    }

    /// The last sentence that ends with a question mark, if any.
    pub fn last_question(&self) -> Option<Range<usize>> {
        self.sentences
            .iter()
            .rev()
            .find(|s| self.is_question(s))
            .cloned()
    }

    pub fn sentence_of(&self, token: usize) -> Range<usize> {
        self.sentences
            .iter()
            .find(|s| s.contains(&token))
            .cloned()
            .unwrap_or(token..token + 1)
    }

    /// The character span of tokens `range` (token indices, end exclusive).
    pub fn char_span(&self, range: Range<usize>) -> Option<(usize, usize)> {
        let first = self.tokens.get(range.start)?;
        let last = self.tokens.get(range.end.checked_sub(1)?)?;
        Some((first.start, last.end))
    }

    pub fn span_text(&self, start: usize, end: usize) -> String {
        self.chars[start.min(self.chars.len())..end.min(self.chars.len())]
            .iter()
            .collect()
    }
}

/// Sentences end at . ? ! ; only. Unpunctuated turns stay one long sentence: every rule that
/// reads a sentence also bounds its reach in tokens, so length costs recall of nothing.
/// A full stop between two numbers ("four . four"), which ACI-style transcripts use for a
/// spoken decimal point.
pub(crate) fn is_decimal_point(tokens: &[Token], i: usize) -> bool {
    tokens[i].text == "."
        && i > 0
        && tokens.get(i + 1).is_some_and(is_numeric)
        && is_numeric(&tokens[i - 1])
}

fn is_numeric(token: &Token) -> bool {
    token.text.chars().all(|c| c.is_ascii_digit()) && !token.text.is_empty()
        || is_number_word(&token.text)
}

fn split_sentences(tokens: &[Token]) -> Vec<Range<usize>> {
    let mut sentences = Vec::new();
    let mut start = 0;
    for (i, token) in tokens.iter().enumerate() {
        // ACI-style transcripts write a spoken decimal as "four . four": a full stop between
        // two numbers is a decimal point, not the end of a sentence.
        if token.is_sentence_end() && !is_decimal_point(tokens, i) {
            sentences.push(start..i + 1);
            start = i + 1;
        }
    }
    if start < tokens.len() {
        sentences.push(start..tokens.len());
    }
    sentences
}

const ONES: &[(&str, u32)] = &[
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
];

const TENS: &[(&str, u32)] = &[
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

fn ones_value(word: &str) -> Option<u32> {
    ONES.iter().find(|(w, _)| *w == word).map(|(_, v)| *v)
}

fn tens_value(word: &str) -> Option<u32> {
    TENS.iter().find(|(w, _)| *w == word).map(|(_, v)| *v)
}

pub(crate) fn is_number_word(word: &str) -> bool {
    ones_value(word).is_some()
        || tens_value(word).is_some()
        || matches!(word, "hundred" | "thousand")
}

/// A number read from tokens: its digits as a clinician writes them and the tokens it used.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SpokenNumber {
    pub digits: String,
    pub value: f64,
    pub tokens: Range<usize>,
}

/// Reads the number starting at token `i`: digits ("98.6"), words ("ninety eight point six",
/// "a hundred and two", "one thousand") and the clinic's shorthand for three digits ("one twenty
/// eight" = 128, "one oh five" = 105). `stop` bounds the tokens it may use.
pub(crate) fn read_number(tokens: &[Token], i: usize, stop: usize) -> Option<SpokenNumber> {
    let stop = stop.min(tokens.len());
    let first = tokens.get(i).filter(|_| i < stop)?;
    if first.kind == TokenKind::Number {
        let digits = first.text.trim_end_matches('+').to_string();
        let value = digits.parse::<f64>().ok()?;
        return Some(SpokenNumber {
            digits: first.text.clone(),
            value,
            tokens: i..i + 1,
        });
    }
    let (integer, mut next) = read_integer_words(tokens, i, stop)?;
    let mut digits = integer.to_string();
    let mut value = f64::from(integer);
    // "ninety eight point six"; ACI-style transcripts also write it "ninety eight . six".
    let decimal_mark = next + 1 < stop
        && (tokens[next].is("point")
            || (tokens[next].text == "."
                && (ones_value(&tokens[next + 1].text).is_some()
                    || tokens[next + 1].kind == TokenKind::Number)));
    if decimal_mark {
        let mut fraction = String::new();
        let mut j = next + 1;
        while j < stop {
            match ones_value(&tokens[j].text).filter(|v| *v < 10) {
                Some(d) => fraction.push(char::from(b'0' + d as u8)),
                None if tokens[j].kind == TokenKind::Number
                    && fraction.is_empty()
                    && !tokens[j].text.contains('.') =>
                {
                    fraction.push_str(&tokens[j].text);
                    j += 1;
                    break;
                }
                None => break,
            }
            j += 1;
        }
        if !fraction.is_empty() {
            digits = format!("{digits}.{fraction}");
            value = digits.parse::<f64>().ok()?;
            next = j;
        }
    }
    Some(SpokenNumber {
        digits,
        value,
        tokens: i..next,
    })
}

/// Integer from number words starting at `i`; returns the value and the next token index.
fn read_integer_words(tokens: &[Token], i: usize, stop: usize) -> Option<(u32, usize)> {
    let word = |k: usize| -> &str {
        if k < stop {
            tokens.get(k).map(|t| t.text.as_str()).unwrap_or("")
        } else {
            ""
        }
    };
    let mut k = i;
    // "a hundred", "a thousand"
    if word(k) == "a" && matches!(word(k + 1), "hundred" | "thousand") {
        k += 1;
        let scale = if word(k) == "hundred" { 100 } else { 1000 };
        k += 1;
        let (rest, next) = read_and_below_hundred(tokens, k, stop);
        return Some((scale + rest, next));
    }
    // Hundreds shorthand: "one twenty eight", "one oh five", "two hundred".
    if let Some(d) = ones_value(word(k)).filter(|v| (1..10).contains(v)) {
        if tens_value(word(k + 1)).is_some() {
            let (below, next) = read_below_hundred(tokens, k + 1, stop);
            return Some((d * 100 + below, next));
        }
        if let Some(teen) = ones_value(word(k + 1)).filter(|v| *v >= 10) {
            // "one fifteen" = 115
            return Some((d * 100 + teen, k + 2));
        }
        if word(k + 1) == "oh" {
            if let Some(unit) = ones_value(word(k + 2)).filter(|v| (1..10).contains(v)) {
                return Some((d * 100 + unit, k + 3));
            }
        }
    }
    let (below, next) = read_below_hundred(tokens, k, stop);
    if next == k {
        return None;
    }
    let mut current = below;
    k = next;
    if word(k) == "hundred" {
        current *= 100;
        k += 1;
        let (rest, next) = read_and_below_hundred(tokens, k, stop);
        current += rest;
        k = next;
    }
    let mut total = current;
    if word(k) == "thousand" {
        total = current * 1000;
        k += 1;
        // "one thousand five hundred"
        let (rest, next) = read_and_below_hundred(tokens, k, stop);
        if next > k && word(next) == "hundred" {
            let (tail, after) = read_and_below_hundred(tokens, next + 1, stop);
            total += rest * 100 + tail;
            k = after;
        } else {
            total += rest;
            k = next;
        }
    }
    Some((total, k))
}

fn read_and_below_hundred(tokens: &[Token], k: usize, stop: usize) -> (u32, usize) {
    let is_and = k < stop && tokens.get(k).is_some_and(|t| t.is("and"));
    let after_and = if is_and { k + 1 } else { k };
    let (value, next) = read_below_hundred(tokens, after_and, stop);
    // "five hundred five hundred" is a stutter, not 505: a number that itself takes a scale
    // starts a new number.
    let starts_another = next < stop
        && tokens
            .get(next)
            .is_some_and(|t| t.is("hundred") || t.is("thousand"));
    if next == after_and || starts_another {
        (0, k)
    } else {
        (value, next)
    }
}

fn read_below_hundred(tokens: &[Token], k: usize, stop: usize) -> (u32, usize) {
    let word = |k: usize| -> &str {
        if k < stop {
            tokens.get(k).map(|t| t.text.as_str()).unwrap_or("")
        } else {
            ""
        }
    };
    if let Some(tens) = tens_value(word(k)) {
        if let Some(unit) = ones_value(word(k + 1)).filter(|v| (1..10).contains(v)) {
            return (tens + unit, k + 2);
        }
        return (tens, k + 1);
    }
    if let Some(v) = ones_value(word(k)) {
        return (v, k + 1);
    }
    (0, k)
}

/// Words that make a lone small number word ("two") a quantity worth writing as digits.
const QUANTITY_FOLLOWERS: &[&str] = &[
    "mg",
    "milligram",
    "milligrams",
    "mcg",
    "microgram",
    "micrograms",
    "gram",
    "grams",
    "units",
    "unit",
    "ml",
    "milliliters",
    "cc",
    "percent",
    "%",
    "out",
    "over",
    "point",
    "day",
    "days",
    "week",
    "weeks",
    "month",
    "months",
    "year",
    "years",
    "hour",
    "hours",
    "minute",
    "minutes",
    "times",
    "pounds",
    "pound",
    "lbs",
    "kilograms",
    "kilos",
    "kg",
    "centimeters",
    "centimeter",
    "cm",
    "millimeters",
    "mm",
    "inches",
    "inch",
    "feet",
    "foot",
    "degrees",
    "beats",
    "breaths",
    "tablets",
    "tablet",
    "pills",
    "pill",
    "puffs",
    "drinks",
    "beers",
    "glasses",
    "packs",
    "cigarettes",
    "cups",
    "+",
    "plus",
    "by",
    "x",
];

/// Unit words as a clinician abbreviates them.
pub(crate) fn unit_abbreviation(word: &str) -> Option<&'static str> {
    Some(match word {
        "mg" | "milligram" | "milligrams" | "mgs" => "mg",
        "mcg" | "microgram" | "micrograms" => "mcg",
        "gram" | "grams" | "g" => "g",
        "ml" | "milliliter" | "milliliters" | "cc" | "ccs" => "mL",
        "unit" | "units" => "units",
        "percent" | "%" => "%",
        "centimeter" | "centimeters" | "cm" => "cm",
        "millimeter" | "millimeters" | "mm" => "mm",
        "pound" | "pounds" | "lbs" | "lb" => "lb",
        "kilogram" | "kilograms" | "kilos" | "kg" => "kg",
        _ => return None,
    })
}

const FILLERS: &[&str] = &[
    "um", "uh", "uhm", "umm", "hmm", "mm-hmm", "uh-huh", "er", "ah", "mm",
];

/// Renders tokens `range` of `seg` as note wording: fillers and stutters dropped, spoken numbers
/// as digits, units abbreviated, "gonna" spelled out. Every word it writes is one of the tokens,
/// a digit form of them, or a unit abbreviation, so the text stays supported by its span.
pub(crate) fn render(seg: &Seg, range: Range<usize>) -> String {
    let tokens = &seg.tokens;
    let stop = range.end.min(tokens.len());
    let mut pieces: Vec<String> = Vec::new();
    let mut i = range.start;
    while i < stop {
        let token = &tokens[i];
        if token.is_any(FILLERS) {
            i += 1;
            continue;
        }
        if token.is("you") && tokens.get(i + 1).is_some_and(|t| t.is("know")) && i + 1 < stop {
            i += 2;
            continue;
        }
        if token.kind != TokenKind::Number && is_number_word(&token.text)
            || token.is("a") && tokens.get(i + 1).is_some_and(|t| t.is("hundred"))
        {
            if let Some(number) = read_number(tokens, i, stop) {
                let next_word = tokens.get(number.tokens.end).map(|t| t.text.as_str());
                let multiword = number.tokens.len() > 1;
                let is_quantity = multiword
                    || tens_value(&token.text).is_some()
                    || next_word.is_some_and(|w| QUANTITY_FOLLOWERS.contains(&w));
                if is_quantity && number.tokens.end <= stop {
                    pieces.push(number.digits);
                    i = number.tokens.end;
                    continue;
                }
            }
        }
        let word = match token.text.as_str() {
            "gonna" => "going to".to_string(),
            "wanna" => "want to".to_string(),
            other => {
                let previous_is_number = pieces
                    .last()
                    .is_some_and(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()));
                match unit_abbreviation(other) {
                    Some(unit) if previous_is_number && other != "%" => unit.to_string(),
                    _ => seg.span_text(token.start, token.end),
                }
            }
        };
        // Stutters: "i , i , i think" → "i think".
        let stutter = token.kind == TokenKind::Word
            && last_word(&pieces).is_some_and(|last| last.eq_ignore_ascii_case(&word));
        if stutter {
            while pieces.last().is_some_and(|p| p == ",") {
                pieces.pop();
            }
            i += 1;
            continue;
        }
        if token.is_punct() && pieces.last().is_some_and(|p| p == "," || p.is_empty()) {
            if token.is(",") {
                i += 1;
                continue;
            }
            pieces.pop();
        }
        pieces.push(word);
        i += 1;
    }
    join_pieces(&pieces)
}

fn last_word(pieces: &[String]) -> Option<&String> {
    pieces.iter().rev().find(|p| p.as_str() != ",").filter(|p| {
        p.chars()
            .all(|c| c.is_alphanumeric() || c == '\'' || c == '-')
    })
}

fn join_pieces(pieces: &[String]) -> String {
    let mut out = String::new();
    let mut previous = "";
    for piece in pieces {
        let attach = matches!(
            piece.as_str(),
            "," | "." | "?" | "!" | ";" | ":" | "%" | ")"
        ) || piece.starts_with('\'')
            || previous == "("
            || previous == "/"
            || piece == "/";
        if !out.is_empty() && !attach {
            out.push(' ');
        }
        out.push_str(piece);
        previous = piece;
    }
    out.trim_matches(|c: char| c == ',' || c.is_whitespace())
        .to_string()
}

/// "lisinopril 20 mg daily" → "Lisinopril 20 mg daily." (first letter up, one final period).
pub(crate) fn as_sentence(text: &str) -> String {
    let trimmed = text
        .trim()
        .trim_end_matches([',', '.', '?', '!', ';'])
        .trim();
    let mut chars = trimmed.chars();
    let mut out = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => return String::new(),
    };
    out = out.replace(" i ", " I ").replace(" i'", " I'");
    if out.starts_with("i ") || out.starts_with("i'") {
        out.replace_range(0..1, "I");
    }
    out.push('.');
    out
}

/// A phrase list read from a data file: one entry per line, `canonical|variant|variant...`
/// (the canonical form is also a variant); `#` starts a comment.
#[derive(Debug, Default)]
pub(crate) struct Lexicon {
    /// First token → (variant tokens, canonical index), longest variants first.
    by_first: HashMap<String, Vec<(Vec<String>, usize)>>,
    pub canonical: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LexMatch {
    pub tokens: Range<usize>,
    pub canonical: usize,
}

impl Lexicon {
    pub fn parse(data: &str) -> Lexicon {
        let mut lexicon = Lexicon::default();
        for line in data.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut variants = line.split('|').map(str::trim).filter(|v| !v.is_empty());
            let Some(canonical) = variants.next() else {
                continue;
            };
            let index = lexicon.canonical.len();
            lexicon.canonical.push(canonical.to_lowercase());
            for variant in std::iter::once(canonical).chain(variants) {
                let words: Vec<String> = tokenize(variant).into_iter().map(|t| t.text).collect();
                if let Some(first) = words.first() {
                    lexicon
                        .by_first
                        .entry(first.clone())
                        .or_default()
                        .push((words, index));
                }
            }
        }
        for entries in lexicon.by_first.values_mut() {
            entries.sort_by_key(|(words, _)| std::cmp::Reverse(words.len()));
        }
        lexicon
    }

    /// Longest non-overlapping matches inside `range`.
    pub fn find(&self, tokens: &[Token], range: Range<usize>) -> Vec<LexMatch> {
        let mut found = Vec::new();
        let stop = range.end.min(tokens.len());
        let mut i = range.start;
        while i < stop {
            let hit = self.by_first.get(&tokens[i].text).and_then(|entries| {
                entries.iter().find(|(words, _)| {
                    i + words.len() <= stop
                        && words.iter().zip(&tokens[i..]).all(|(w, t)| *w == t.text)
                })
            });
            match hit {
                Some((words, canonical)) => {
                    found.push(LexMatch {
                        tokens: i..i + words.len(),
                        canonical: *canonical,
                    });
                    i += words.len();
                }
                None => i += 1,
            }
        }
        found
    }

    pub fn name(&self, m: &LexMatch) -> &str {
        self.canonical
            .get(m.canonical)
            .map(String::as_str)
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Option<String> {
        let tokens = tokenize(text);
        read_number(&tokens, 0, tokens.len()).map(|n| n.digits)
    }

    #[test]
    fn a_long_statement_closed_by_okay_is_not_a_question_but_is_that_right_is() {
        let seg_of = |text: &str| crate::transcript::Segment {
            id: "s1".into(),
            start: 0.0,
            end: 1.0,
            speaker: crate::transcript::Speaker::Clinician,
            text: text.into(),
            confidence: 1.0,
            overlap: false,
        };
        let tagged = seg_of("i will prescribe meloxicam 15 milligrams once a day , okay ?");
        let seg = Seg::new(0, &tagged);
        assert!(!seg.is_question(&seg.sentences[0]));
        let asked = seg_of("you're allergic to augmentin , is that right ?");
        let seg = Seg::new(0, &asked);
        assert!(seg.is_question(&seg.sentences[0]));
        let short = seg_of("we good , okay ?");
        let seg = Seg::new(0, &short);
        assert!(seg.is_question(&seg.sentences[0]));
    }

    #[test]
    fn a_full_stop_between_numbers_is_a_decimal_point() {
        let tokens = tokenize("a four . four centimeter nodule . next one");
        assert_eq!(split_sentences(&tokens).len(), 2);
    }

    #[test]
    fn spoken_numbers_become_digits() {
        assert_eq!(number("one twenty eight"), Some("128".into()));
        assert_eq!(number("one twenty"), Some("120".into()));
        assert_eq!(number("one fifteen"), Some("115".into()));
        assert_eq!(number("one oh five"), Some("105".into()));
        assert_eq!(number("a hundred and two"), Some("102".into()));
        assert_eq!(number("two hundred"), Some("200".into()));
        assert_eq!(number("ninety eight point six"), Some("98.6".into()));
        assert_eq!(number("ninety nine point seven"), Some("99.7".into()));
        assert_eq!(number("seventy two"), Some("72".into()));
        assert_eq!(number("one thousand"), Some("1000".into()));
        assert_eq!(number("98.6"), Some("98.6".into()));
        assert_eq!(number("eighteen"), Some("18".into()));
        assert_eq!(number("fine"), None);
        assert_eq!(number("ninety seven . two"), Some("97.2".into()));
        assert_eq!(number("twelve . five milligrams"), Some("12.5".into()));
        assert_eq!(number("zero . zero five percent"), Some("0.05".into()));
        assert_eq!(
            number("five hundred five hundred milligrams"),
            Some("500".into())
        );
        assert_eq!(number("a thousand milligrams"), Some("1000".into()));
    }

    #[test]
    fn tokens_keep_character_offsets() {
        let text = "Temp 98.6°, BP 120/80 — don't";
        let tokens = tokenize(text);
        let chars: Vec<char> = text.chars().collect();
        for token in &tokens {
            let raw: String = chars[token.start..token.end].iter().collect();
            assert_eq!(raw.to_lowercase().replace("’", "'"), token.text);
        }
        assert!(tokens.iter().any(|t| t.text == "98.6"));
        assert!(tokens.iter().any(|t| t.text == "don't"));
        let split = tokenize("i do n't");
        assert_eq!(split.last().map(|t| t.text.as_str()), Some("don't"));
    }

    #[test]
    fn rendering_writes_digits_and_drops_fillers() {
        let segment = Segment {
            id: "s1".into(),
            start: 0.0,
            end: 1.0,
            speaker: Speaker::Clinician,
            text: "um , i , i want you to take twenty milligrams , you know , once a day".into(),
            confidence: 1.0,
            overlap: false,
        };
        let seg = Seg::new(0, &segment);
        assert_eq!(
            render(&seg, 0..seg.tokens.len()),
            "i want you to take 20 mg, once a day"
        );
    }
}
