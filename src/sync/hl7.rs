//! HL7 v2.5 MDM messages for a signed note, and the parsing of the receiver's ACK.
//!
//! One note is one MDM^T02 ("original document notification and content"); a note that replaces
//! an earlier one (a correction) is an MDM^T10 ("document replacement notification and
//! content"), which has the same MDM_T02 structure and carries the replaced document's number
//! in TXA-13, as HL7 v2.5 chapter 9 prescribes. The message is MSH, EVN, PID, PV1, TXA and one
//! OBX (value type TX) per line of the note, then one OBX with the note's SHA-256 so the
//! receiving side can check it got the text whole.
//!
//! The note is patient data: it never appears in an error, and [`MdmDocument`]'s `Debug` shows
//! lengths only.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// HL7 v2 segment terminator.
pub const SEGMENT_END: char = '\r';

/// A signed note as the MDM builder needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct MdmDocument {
    /// MSH-10; unique per message and reused unchanged when the same message is resent.
    pub message_control_id: String,
    /// Stable business id of the note (TXA-12).
    pub document_id: String,
    /// For a correction: the document it replaces (TXA-13; the message becomes MDM^T10).
    pub parent_document_id: Option<String>,
    /// Medical record number (PID-3).
    pub patient_id: String,
    /// Visit number (PV1-19).
    pub encounter_id: String,
    pub clinician_id: String,
    /// "Family, Given" or "Given Family"; optional.
    pub clinician_name: Option<String>,
    /// "SOAP", a template name, or a LOINC code such as "11506-3" (TXA-2, OBX-3).
    pub document_type: String,
    /// Sign-off time, RFC 3339 (TXA-4, TXA-22's time).
    pub signed_at: String,
    pub note_text: String,
    pub note_sha256: String,
}

impl fmt::Debug for MdmDocument {
    // Hand-written so the note, the MRN and the names never reach a log through `{:?}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MdmDocument")
            .field("message_control_id", &self.message_control_id)
            .field("document_id", &self.document_id)
            .field("parent_document_id", &self.parent_document_id)
            .field(
                "patient_id",
                &format_args!("<{} chars>", self.patient_id.len()),
            )
            .field("encounter_id", &self.encounter_id)
            .field("clinician_id", &self.clinician_id)
            .field(
                "clinician_name",
                &self.clinician_name.as_ref().map(|n| n.len()),
            )
            .field("document_type", &self.document_type)
            .field("signed_at", &self.signed_at)
            .field(
                "note_text",
                &format_args!("<{} bytes>", self.note_text.len()),
            )
            .field("note_sha256", &self.note_sha256)
            .finish()
    }
}

/// MSH-3..6: who sends, who receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendingApp {
    pub application: String,
    pub facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// Application accept: stored.
    AA,
    /// Application error: the receiver understood and refused the content.
    AE,
    /// Application reject: the receiver could not process it (often transient on the EHR side).
    AR,
    /// Enhanced-mode commit accept / error / reject.
    CA,
    CE,
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// AA and CA mean the receiver took the message.
    pub fn is_accept(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }
}

impl fmt::Display for AckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The receiver's answer: MSA-1, MSA-2 and the error text (ERR-8 if present, else MSA-3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub code: AckCode,
    pub control_id: String,
    pub text: Option<String>,
}

/// What can be wrong with a document to send or with a received ACK. Messages name fields, never
/// their patient values.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Hl7Error {
    #[error("the note's {field} is empty; it is required in the HL7 message ({segment})")]
    MissingField {
        field: &'static str,
        segment: &'static str,
    },
    #[error("the note's {field} is not an RFC 3339 time such as 2025-01-31T14:05:00Z")]
    BadTimestamp { field: &'static str },
    #[error("the ACK has no MSH segment: the receiver did not answer with HL7")]
    NoMsh,
    #[error("the ACK's MSH segment is too short to hold its encoding characters")]
    BadMsh,
    #[error("the ACK has no MSA segment: the receiver's answer is not an acknowledgment")]
    NoMsa,
    #[error("the ACK's MSA-1 is {0:?}, not one of AA, AE, AR, CA, CE, CR")]
    BadAckCode(String),
    #[error("the ACK's MSA-2 (the acknowledged control id) is empty")]
    NoAckControlId,
}

/// Builds the MDM message for a signed note (CR-separated segments, trailing CR), after
/// [`check_document`]: the checked form to use when the fields come from outside the box.
///
/// `MSH-7`/`EVN-2` are the time of building.
pub fn try_build_mdm_t02(doc: &MdmDocument, app: &SendingApp) -> Result<String, Hl7Error> {
    check_document(doc)?;
    Ok(build_mdm_at(doc, app, SystemTime::now()))
}

/// Builds the MDM message without checking the document first: an empty required field goes
/// out empty (the receiver answers AE) and a `signed_at` that is not RFC 3339 leaves TXA-4 and
/// the TXA-22 time empty rather than inventing a time. Prefer [`try_build_mdm_t02`].
pub fn build_mdm_t02(doc: &MdmDocument, app: &SendingApp) -> String {
    build_mdm_at(doc, app, SystemTime::now())
}

/// The required fields are present and `signed_at` is RFC 3339.
pub fn check_document(doc: &MdmDocument) -> Result<(), Hl7Error> {
    for (value, field, segment) in [
        (&doc.message_control_id, "message_control_id", "MSH-10"),
        (&doc.document_id, "document_id", "TXA-12"),
        (&doc.patient_id, "patient_id", "PID-3"),
        (&doc.encounter_id, "encounter_id", "PV1-19"),
        (&doc.clinician_id, "clinician_id", "TXA-5"),
        (&doc.document_type, "document_type", "TXA-2"),
    ] {
        if value.trim().is_empty() {
            return Err(Hl7Error::MissingField { field, segment });
        }
    }
    rfc3339_to_hl7(&doc.signed_at).ok_or(Hl7Error::BadTimestamp { field: "signed_at" })?;
    Ok(())
}

pub(crate) fn build_mdm_at(doc: &MdmDocument, app: &SendingApp, now: SystemTime) -> String {
    let signed = rfc3339_to_hl7(&doc.signed_at).unwrap_or_default();
    let built = hl7_now(now);
    let (event, trigger) = match doc.parent_document_id {
        Some(_) => ("T10", "MDM^T10^MDM_T02"),
        None => ("T02", "MDM^T02^MDM_T02"),
    };
    let e = escape;
    let mut out = String::with_capacity(512 + doc.note_text.len() * 11 / 10);

    // MSH-1 is the field separator itself, so MSH-2 is the second '|'-separated item.
    push_segment(
        &mut out,
        &[
            "MSH",
            "^~\\&",
            &e(&app.application),
            &e(&app.facility),
            &e(&app.receiving_application),
            &e(&app.receiving_facility),
            &built,
            "",
            trigger,
            &e(&doc.message_control_id),
            "P",
            "2.5",
        ],
    );
    push_segment(&mut out, &["EVN", event, &built]);
    // PID-5 (patient name) is required in v2.5; the box does not send names (the MRN identifies
    // the patient), so the field is present with empty components.
    let mrn = format!("{}^^^{}^MR", e(&doc.patient_id), e(&app.facility));
    push_segment(&mut out, &["PID", "1", "", &mrn, "", "^"]);
    // PV1-2 patient class: the box records clinic visits, so outpatient.
    let mut pv1 = vec![""; 20];
    pv1[0] = "PV1";
    pv1[1] = "1";
    pv1[2] = "O";
    let visit = e(&doc.encounter_id);
    pv1[19] = &visit;
    push_segment(&mut out, &pv1);

    let clinician = xcn(&doc.clinician_id, doc.clinician_name.as_deref());
    let doc_number = format!("{}^{}", e(&doc.document_id), e(&app.application));
    let parent_number = doc
        .parent_document_id
        .as_ref()
        .map(|p| format!("{}^{}", e(p), e(&app.application)))
        .unwrap_or_default();
    // PPN: XCN components 1..14, then component 15 is the time the action was performed.
    let authenticator = format!("{}^{}", pad_components(&clinician, 14), signed);
    let mut txa = vec![""; 23];
    txa[0] = "TXA";
    txa[1] = "1";
    let doc_type = e(&doc.document_type);
    txa[2] = &doc_type;
    txa[3] = "TX";
    txa[4] = &signed;
    txa[5] = &clinician;
    txa[6] = &signed; // origination: the note was written and signed in one session
    txa[9] = &clinician; // originator
    txa[12] = &doc_number;
    txa[13] = &parent_number;
    txa[17] = "AU"; // authenticated: the clinician signed it
    txa[19] = "AV"; // available for patient care
    txa[22] = &authenticator;
    push_segment(&mut out, &txa);

    let obx3 = observation_id(&doc.document_type);
    let mut set_id = 0usize;
    for line in note_lines(&doc.note_text) {
        set_id += 1;
        let n = set_id.to_string();
        let value = e(line);
        push_segment(
            &mut out,
            &["OBX", &n, "TX", &obx3, "", &value, "", "", "", "", "", "F"],
        );
    }
    set_id += 1;
    let n = set_id.to_string();
    let sha = e(&doc.note_sha256);
    push_segment(
        &mut out,
        &[
            "OBX",
            &n,
            "ST",
            "note-sha256^Note text SHA-256^L",
            "",
            &sha,
            "",
            "",
            "",
            "",
            "",
            "F",
        ],
    );
    out
}

fn push_segment(out: &mut String, fields: &[&str]) {
    // Trailing empty fields are dropped: shorter, and identical in meaning.
    let last = fields.iter().rposition(|f| !f.is_empty()).unwrap_or(0);
    out.push_str(&fields[..=last].join("|"));
    out.push(SEGMENT_END);
}

/// `id^family^given` from "Family, Given" or "Given Family" (a single word is the family name).
fn xcn(id: &str, name: Option<&str>) -> String {
    let id = escape(id);
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return id;
    };
    let (family, given) = match name.split_once(',') {
        Some((family, given)) => (family.trim(), given.trim()),
        None => match name.rsplit_once(' ') {
            Some((given, family)) => (family.trim(), given.trim()),
            None => (name, ""),
        },
    };
    if given.is_empty() {
        format!("{id}^{}", escape(family))
    } else {
        format!("{id}^{}^{}", escape(family), escape(given))
    }
}

/// Pads a `^`-separated value to exactly `n` components.
fn pad_components(value: &str, n: usize) -> String {
    let have = value.split('^').count();
    let mut out = value.to_string();
    for _ in have..n {
        out.push('^');
    }
    out
}

/// OBX-3: a LOINC code (digits, a dash, one check digit) is coded as LN, anything else as local.
fn observation_id(document_type: &str) -> String {
    let is_loinc = document_type.split_once('-').is_some_and(|(num, check)| {
        !num.is_empty()
            && num.len() <= 7
            && num.bytes().all(|b| b.is_ascii_digit())
            && check.len() == 1
            && check.bytes().all(|b| b.is_ascii_digit())
    });
    let system = if is_loinc { "LN" } else { "L" };
    format!("{}^Clinical note^{system}", escape(document_type))
}

/// The note's lines; any of CRLF, LF or CR ends a line. A trailing newline adds no empty line.
fn note_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\r', '\n']) {
            Some(i) => {
                lines.push(&rest[..i]);
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    if lines.is_empty() {
        lines.push("");
    }
    lines
}

/// Escapes text for an HL7 field with the standard encoding characters `|^~\&`. Control
/// characters other than TAB become `\Xhh\`: a raw CR would end the segment and 0x0B/0x1C would
/// break MLLP framing.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\t' => out.push('\t'),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\X{:02X}\\", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Reverses [`escape`] for the standard sequences; unknown sequences are kept as they are.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('\\') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('\\') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let seq = &after[..end];
        match seq {
            "F" => out.push('|'),
            "S" => out.push('^'),
            "T" => out.push('&'),
            "R" => out.push('~'),
            "E" => out.push('\\'),
            ".br" => out.push('\n'),
            s if s.len() == 3 && s.starts_with('X') => {
                // `get` rather than slicing: the two bytes need not be a char boundary.
                match s.get(1..3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => out.push(char::from(b)),
                    None => {
                        out.push('\\');
                        out.push_str(s);
                        out.push('\\');
                    }
                }
            }
            s => {
                out.push('\\');
                out.push_str(s);
                out.push('\\');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// MSH-10 of a message (unescaped), if it has an MSH segment.
pub fn message_control_id(message: &str) -> Option<String> {
    let msh = message.split(['\r', '\n']).find(|s| s.starts_with("MSH"))?;
    let sep = msh.get(3..4)?;
    // MSH-n is item n-1 once split on the separator (MSH-1 is the separator itself).
    let id = msh.split(sep).nth(9)?;
    let id = unescape(id);
    (!id.is_empty()).then_some(id)
}

/// Parses an ACK: MSA-1 code, MSA-2 acknowledged control id, and the text (ERR-8 user message,
/// else MSA-3). Accepts CR, LF or CRLF segment ends and any field separator MSH declares.
pub fn parse_ack(msg: &str) -> Result<Ack, Hl7Error> {
    let segments: Vec<&str> = msg
        .split(['\r', '\n'])
        .map(str::trim_start)
        .filter(|s| !s.is_empty())
        .collect();
    let msh = segments
        .iter()
        .find(|s| s.starts_with("MSH"))
        .ok_or(Hl7Error::NoMsh)?;
    let sep = msh.get(3..4).ok_or(Hl7Error::BadMsh)?;
    if sep.is_empty() {
        return Err(Hl7Error::BadMsh);
    }
    let field = |seg: &str, n: usize| -> Option<String> {
        seg.split(sep)
            .nth(n)
            .filter(|f| !f.is_empty())
            .map(unescape)
    };
    let msa_prefix = format!("MSA{sep}");
    let msa = segments
        .iter()
        .find(|s| s.starts_with(&msa_prefix) || **s == "MSA")
        .ok_or(Hl7Error::NoMsa)?;
    let raw_code = field(msa, 1).unwrap_or_default();
    let code = match raw_code.trim() {
        "AA" => AckCode::AA,
        "AE" => AckCode::AE,
        "AR" => AckCode::AR,
        "CA" => AckCode::CA,
        "CE" => AckCode::CE,
        "CR" => AckCode::CR,
        other => return Err(Hl7Error::BadAckCode(other.chars().take(16).collect())),
    };
    let control_id = field(msa, 2).ok_or(Hl7Error::NoAckControlId)?;
    let err_prefix = format!("ERR{sep}");
    let err_text = segments
        .iter()
        .filter(|s| s.starts_with(&err_prefix))
        .find_map(|s| field(s, 8));
    let text = err_text.or_else(|| field(msa, 3));
    Ok(Ack {
        code,
        control_id,
        text,
    })
}

/// RFC 3339 (`2025-01-31T14:05:00Z`, `...T14:05:00.123+01:00`) to HL7 DTM
/// (`20250131140500.123+0000`), keeping the offset. `None` when it is not RFC 3339.
fn rfc3339_to_hl7(ts: &str) -> Option<String> {
    let b = ts.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<&str> {
        let s = ts.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then_some(s)
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, s) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let mut i = 19;
    let mut frac = String::new();
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        // DTM allows four fractional digits.
        frac = format!(".{}", &ts[start..i.min(start + 4)]);
    }
    let zone = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => "+0000".to_string(),
        b'+' | b'-' if i + 6 == b.len() && b[i + 3] == b':' => {
            format!(
                "{}{}{}",
                &ts[i..i + 1],
                digits(i + 1..i + 3)?,
                digits(i + 4..i + 6)?
            )
        }
        _ => return None,
    };
    let (mo_n, d_n, h_n, mi_n, s_n): (u32, u32, u32, u32, u32) = (
        mo.parse().ok()?,
        d.parse().ok()?,
        h.parse().ok()?,
        mi.parse().ok()?,
        s.parse().ok()?,
    );
    if !(1..=12).contains(&mo_n) || !(1..=31).contains(&d_n) || h_n > 23 || mi_n > 59 || s_n > 60 {
        return None;
    }
    Some(format!("{y}{mo}{d}{h}{mi}{s}{frac}{zone}"))
}

fn hl7_now(now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let (y, m, d) = super::tls::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}+0000",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn sample() -> MdmDocument {
        MdmDocument {
            message_control_id: "MSG-0001".into(),
            document_id: "NOTE-42".into(),
            parent_document_id: None,
            patient_id: "MRN|77".into(),
            encounter_id: "ENC-9".into(),
            clinician_id: "DR1".into(),
            clinician_name: Some("Smith, Jo".into()),
            document_type: "11506-3".into(),
            signed_at: "2025-01-31T14:05:00Z".into(),
            note_text:
                "S: pain 7/10 | worse ^ at night & ~ \\ sad\r\nO: BP 120/80\n\nA/P: rest\u{0b}"
                    .into(),
            note_sha256: "ab".repeat(32),
        }
    }

    fn app() -> SendingApp {
        SendingApp {
            application: "EDGE_SCRIBE".into(),
            facility: "CLINIC".into(),
            receiving_application: "EHR".into(),
            receiving_facility: "HOSP".into(),
        }
    }

    fn seg<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
        msg.split('\r')
            .find(|s| s.starts_with(name))
            .unwrap()
            .split('|')
            .collect()
    }

    #[test]
    fn builds_the_segments() {
        let now = UNIX_EPOCH + Duration::from_secs(1_738_332_300);
        let msg = build_mdm_at(&sample(), &app(), now);
        let names: Vec<&str> = msg
            .split('\r')
            .filter(|s| !s.is_empty())
            .map(|s| &s[..3])
            .collect();
        assert_eq!(
            names,
            ["MSH", "EVN", "PID", "PV1", "TXA", "OBX", "OBX", "OBX", "OBX", "OBX"]
        );
        let msh = seg(&msg, "MSH");
        assert_eq!(msh[8], "MDM^T02^MDM_T02");
        assert_eq!(msh[9], "MSG-0001");
        assert_eq!(msh[6], "20250131140500+0000");
        assert_eq!(seg(&msg, "PID")[3], "MRN\\F\\77^^^CLINIC^MR");
        assert_eq!(seg(&msg, "PV1")[19], "ENC-9");
        let txa = seg(&msg, "TXA");
        assert_eq!(txa[2], "11506-3");
        assert_eq!(txa[4], "20250131140500+0000");
        assert_eq!(txa[5], "DR1^Smith^Jo");
        assert_eq!(txa[12], "NOTE-42^EDGE_SCRIBE");
        assert_eq!(txa[13], "");
        assert_eq!(txa[17], "AU");
        let ppn: Vec<&str> = txa[22].split('^').collect();
        assert_eq!(ppn.len(), 15);
        assert_eq!(ppn[14], "20250131140500+0000");
        let obx: Vec<&str> = msg.split('\r').filter(|s| s.starts_with("OBX")).collect();
        assert_eq!(
            obx[0],
            "OBX|1|TX|11506-3^Clinical note^LN||S: pain 7/10 \\F\\ worse \\S\\ at night \\T\\ \\R\\ \\E\\ sad||||||F"
        );
        assert_eq!(obx[2], "OBX|3|TX|11506-3^Clinical note^LN||||||||F");
        assert!(obx[3].contains("A/P: rest\\X0B\\"), "{}", obx[3]);
        assert!(obx[4].starts_with("OBX|5|ST|note-sha256"));
        assert!(!msg.contains('\n') && !msg.contains('\u{0b}'));
        assert_eq!(message_control_id(&msg).as_deref(), Some("MSG-0001"));
    }

    #[test]
    fn correction_is_a_replacement() {
        let mut doc = sample();
        doc.parent_document_id = Some("NOTE-41".into());
        doc.document_type = "SOAP".into();
        let msg = try_build_mdm_t02(&doc, &app()).unwrap();
        assert_eq!(seg(&msg, "MSH")[8], "MDM^T10^MDM_T02");
        assert_eq!(seg(&msg, "EVN")[1], "T10");
        assert_eq!(seg(&msg, "TXA")[13], "NOTE-41^EDGE_SCRIBE");
        assert!(seg(&msg, "OBX")[3].ends_with("^L"));
    }

    #[test]
    fn refuses_bad_input_without_echoing_it() {
        let mut doc = sample();
        doc.signed_at = "31/01/2025".into();
        let err = try_build_mdm_t02(&doc, &app()).unwrap_err();
        assert_eq!(err, Hl7Error::BadTimestamp { field: "signed_at" });
        assert!(!err.to_string().contains("31/01"));
        let mut doc = sample();
        doc.patient_id = " ".into();
        assert!(matches!(
            try_build_mdm_t02(&doc, &app()),
            Err(Hl7Error::MissingField {
                field: "patient_id",
                ..
            })
        ));
    }

    #[test]
    fn debug_shows_no_note_text() {
        let doc = sample();
        let dbg = format!("{doc:?}");
        assert!(
            !dbg.contains("pain") && !dbg.contains("Smith") && !dbg.contains("MRN"),
            "{dbg}"
        );
        assert!(dbg.contains("bytes"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            rfc3339_to_hl7("2025-01-31T14:05:00Z").unwrap(),
            "20250131140500+0000"
        );
        assert_eq!(
            rfc3339_to_hl7("2025-01-31T14:05:00.123456-05:30").unwrap(),
            "20250131140500.1234-0530"
        );
        for bad in [
            "2025-01-31",
            "2025-13-31T14:05:00Z",
            "2025-01-31T14:05:00",
            "2025-01-31T14:05:00+0100",
            "2025-01-31T14:05:00Zjunk",
            "",
        ] {
            assert!(rfc3339_to_hl7(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn escape_round_trips() {
        let s = "a|b^c&d~e\\f\u{1c}g\tñ";
        assert_eq!(unescape(&escape(s)), s);
        assert_eq!(unescape("x\\Zfoo\\y\\"), "x\\Zfoo\\y\\");
    }

    #[test]
    fn parses_acks() {
        let ack =
            parse_ack("MSH|^~\\&|EHR|HOSP|ES|CL|20250101||ACK^T02^ACK|A1|P|2.5\rMSA|AA|MSG-0001\r")
                .unwrap();
        assert_eq!(
            ack,
            Ack {
                code: AckCode::AA,
                control_id: "MSG-0001".into(),
                text: None
            }
        );
        let ack = parse_ack("MSH|^~\\&|EHR\nMSA|AE|M2|short\nERR|||207|E||||Missing required child MDM_T02.TXA \\F\\ x\n").unwrap();
        assert_eq!(ack.code, AckCode::AE);
        assert_eq!(
            ack.text.as_deref(),
            Some("Missing required child MDM_T02.TXA | x")
        );
        assert_eq!(
            parse_ack("MSH#^~\\&\rMSA#CR#Z9#busy")
                .unwrap()
                .text
                .as_deref(),
            Some("busy")
        );
        assert_eq!(parse_ack(""), Err(Hl7Error::NoMsh));
        assert_eq!(
            parse_ack("MSH|^~\\&\rMSA|XX|1"),
            Err(Hl7Error::BadAckCode("XX".into()))
        );
        assert_eq!(
            parse_ack("MSH|^~\\&\rMSA|AA"),
            Err(Hl7Error::NoAckControlId)
        );
        assert_eq!(parse_ack("MSH|^~\\&\rPID|1"), Err(Hl7Error::NoMsa));
        assert_eq!(parse_ack("MSH"), Err(Hl7Error::BadMsh));
    }

    /// 10,000 random inputs (fixed seed), biased towards HL7-looking bytes: no panic.
    #[test]
    fn parse_ack_never_panics() {
        let mut rng = crate::sync::mllp::tests_support::XorShift(0x5eed_1234_abcd_ef01);
        let alphabet = b"MSHAERCX|^~\\&\r\n0123456789 \x0b\x1c";
        for i in 0..10_000 {
            let len = (rng.next() % 200) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    if r.is_multiple_of(4) {
                        (r >> 8) as u8
                    } else {
                        alphabet[(r >> 8) as usize % alphabet.len()]
                    }
                })
                .collect();
            let mut text = String::from_utf8_lossy(&bytes).into_owned();
            if i % 3 == 0 {
                text = format!("MSH|^~\\&|A\rMSA|{text}");
            }
            let _ = parse_ack(&text);
            let _ = unescape(&text);
            let _ = message_control_id(&text);
        }
    }
}
