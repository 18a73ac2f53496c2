use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

const NOTE: &str = "Chief complaint: cough for 3 days.\nPlan: amoxicillin 500 mg TID.";

fn fields() -> AttestationFields {
    AttestationFields {
        clinician_id: "dr-0042".to_owned(),
        audio_sha256: Some("ab".repeat(32)),
        models: vec![ModelRef {
            name: "whisper-small".to_owned(),
            sha256: "cd".repeat(32),
        }],
        template_id: "soap".to_owned(),
        prompt_version: "v3".to_owned(),
        ai_statements: AiStatements {
            accepted: vec!["st1".to_owned()],
            modified: vec!["st2".to_owned()],
            rejected: vec!["st3".to_owned()],
        },
    }
}

fn signed_json(dir: &std::path::Path) -> (Signer, String) {
    let signer = Signer::open(dir).unwrap();
    let json = signer.sign(NOTE, fields()).unwrap().to_json().unwrap();
    (signer, json)
}

/// Edits the parsed file as a tamperer with a text editor would, keeping it well-formed.
fn edit(json: &str, f: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
    f(&mut value);
    serde_json::to_string(&value).unwrap()
}

#[test]
fn signed_note_verifies_with_and_without_the_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    let (signer, json) = signed_json(dir.path());
    let verified = verify_signed_note(&json, None).unwrap();
    assert_eq!(verified.note_text(), NOTE);
    assert_eq!(verified.attestation().clinician_id, "dr-0042");
    assert_eq!(
        verified.attestation().note_sha256,
        sha256_hex(NOTE.as_bytes())
    );
    assert_eq!(verified.attestation().addendum_to, None);
    assert_eq!(verified.attestation().ai_statements.rejected, ["st3"]);
    verify_signed_note(&json, Some(signer.public_key())).unwrap();
}

#[test]
fn one_changed_character_of_the_note_is_a_hash_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (_, json) = signed_json(dir.path());
    let tampered = edit(&json, |v| {
        v["note_text"] = NOTE.replace("500 mg", "800 mg").into();
    });
    match verify_signed_note(&tampered, None) {
        Err(e @ AttestError::HashMismatch) => assert!(!e.to_string().contains("800 mg")),
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
}

#[test]
fn changed_attestation_field_is_a_bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (_, json) = signed_json(dir.path());
    let tampered = edit(&json, |v| {
        v["attestation"]["clinician_id"] = "dr-0043".into();
    });
    assert!(matches!(
        verify_signed_note(&tampered, None),
        Err(AttestError::BadSignature)
    ));
    let tampered = edit(&json, |v| {
        v["attestation"]["ai_statements"]["rejected"] = serde_json::json!([]);
    });
    assert!(matches!(
        verify_signed_note(&tampered, None),
        Err(AttestError::BadSignature)
    ));
}

#[test]
fn note_signed_by_another_key_is_untrusted_under_the_box_key() {
    let box_dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let box_signer = Signer::open(box_dir.path()).unwrap();
    let (other, json) = signed_json(other_dir.path());
    assert_ne!(box_signer.public_key(), other.public_key());
    // Valid on its own terms: only the trust check can catch it.
    verify_signed_note(&json, None).unwrap();
    let box_key = read_public_key_file(&box_dir.path().join(PUBLIC_KEY_FILE_NAME)).unwrap();
    assert!(matches!(
        verify_signed_note(&json, Some(&box_key)),
        Err(AttestError::UntrustedKey { .. })
    ));
}

#[test]
fn extra_or_missing_fields_and_bad_hex_are_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let (_, json) = signed_json(dir.path());
    for bad in [
        edit(&json, |v| v["attestation"]["extra"] = "x".into()),
        edit(&json, |v| {
            v.as_object_mut().unwrap().remove("signature_hex");
        }),
        edit(&json, |v| v["signature_hex"] = "zz".into()),
        "{ not json".to_owned(),
    ] {
        assert!(
            matches!(
                verify_signed_note(&bad, None),
                Err(AttestError::Malformed { .. })
            ),
            "accepted a malformed file"
        );
    }
}

#[test]
fn malformed_error_does_not_quote_the_note() {
    let json = r#"{"note_text": "SECRET-MARKER-771", "attestation": 5}"#;
    match verify_signed_note(json, None) {
        Err(e @ AttestError::Malformed { .. }) => {
            assert!(!e.to_string().contains("SECRET-MARKER-771"))
        }
        other => panic!("expected malformed, got {other:?}"),
    }
}

#[test]
fn key_is_generated_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Signer::open(dir.path()).unwrap();
    let key_path = dir.path().join(SIGNING_KEY_FILE_NAME);
    let key_bytes = fs::read(&key_path).unwrap();
    assert_eq!(
        fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let second = Signer::open(dir.path()).unwrap();
    assert_eq!(first.public_key(), second.public_key());
    assert_eq!(fs::read(&key_path).unwrap(), key_bytes);
    let published = fs::read_to_string(dir.path().join(PUBLIC_KEY_FILE_NAME)).unwrap();
    assert_eq!(published.trim(), hex(first.public_key()));
}

#[test]
fn group_or_world_readable_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Signer::open(dir.path()).unwrap();
    let key_path = dir.path().join(SIGNING_KEY_FILE_NAME);
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    match Signer::open(dir.path()) {
        Err(AttestError::KeyTooOpen { mode, .. }) => assert_eq!(mode, 0o644),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a world-readable signing key was accepted"),
    }
}

#[test]
fn swapped_public_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Signer::open(dir.path()).unwrap();
    fs::write(dir.path().join(PUBLIC_KEY_FILE_NAME), "00".repeat(32)).unwrap();
    assert!(matches!(
        Signer::open(dir.path()),
        Err(AttestError::PublicKeyMismatch { .. })
    ));
}

#[test]
fn addendum_links_to_the_original_hash_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::open(dir.path()).unwrap();
    let original = signer.sign(NOTE, fields()).unwrap();
    let addendum = signer
        .sign_addendum(
            &original,
            "Addendum: dose is 500 mg BID, not TID.",
            fields(),
        )
        .unwrap();
    assert_eq!(
        addendum.attestation().addendum_to.as_deref(),
        Some(original.attestation().note_sha256.as_str())
    );
    let verified = verify_signed_note(&addendum.to_json().unwrap(), None).unwrap();
    assert_eq!(verified.into_signed_note(), addendum);
    // The link is signed: pointing the addendum at another note breaks the signature.
    let relinked = edit(&addendum.to_json().unwrap(), |v| {
        v["attestation"]["addendum_to"] = "ef".repeat(32).into();
    });
    assert!(matches!(
        verify_signed_note(&relinked, None),
        Err(AttestError::BadSignature)
    ));
}

#[test]
fn signed_bytes_start_with_the_domain_tag_and_keep_field_order() {
    let dir = tempfile::tempdir().unwrap();
    let signer = Signer::open(dir.path()).unwrap();
    let note = signer.sign("x", fields()).unwrap();
    let bytes = signed_bytes(note.note_text(), note.attestation()).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.starts_with(
        "edge-scribe/signed-note/v1\n{\"note_text\":\"x\",\"attestation\":{\"clinician_id\":"
    ));
    assert!(text.ends_with(",\"addendum_to\":null}}"));
}

#[test]
fn rfc3339_formats_utc_dates() {
    assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
    assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56.789Z");
}
