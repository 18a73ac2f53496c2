//! The review API over real sockets against a real (encrypted) store: the role × endpoint
//! matrix, the edit → version → sign → addendum flow, speaker corrections and overlap flags of
//! the transcript, sessions, lockout, and that an IT admin reads no patient content through any
//! endpoint.

use std::net::SocketAddr;
use std::path::Path;

use edge_scribe::auth;
use edge_scribe::review::{self, AppState, ReviewSettings};
use edge_scribe::store::users::NewUser;
use edge_scribe::store::{Actor, Store};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery staple";

mod records_fixture;
use records_fixture::Client;

fn login(addr: SocketAddr, username: &str) -> Client {
    Client::login(addr, username, PASSWORD)
}
/// Words planted in the transcript: patient content no admin or auditor may ever receive.
const MARKERS: [&str; 2] = ["quartermaine", "zebulon"];
/// The fixture segment the room front end marked as overlapping speech (a clinician's turn).
const OVERLAPPED: &str = "s3";

struct Fixture {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    encounter: String,
    other_encounter: String,
    ids: std::collections::HashMap<&'static str, String>,
    _runtime: tokio::runtime::Runtime,
}

fn dialogue_transcript() -> edge_scribe::transcript::Transcript {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dialogues/knee-and-blood-pressure.txt");
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str("[patient] my neighbour zebulon quartermaine drove me here today .\n");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), text).unwrap();
    let mut transcript = edge_scribe::cli::read_transcript_input(tmp.path()).unwrap();
    let overlapped = transcript
        .segments
        .iter_mut()
        .find(|s| s.id == OVERLAPPED)
        .unwrap();
    overlapped.overlap = true;
    transcript
}

fn add_encounter(store: &Store, clinician_id: &str) -> String {
    records_fixture::add_encounter(
        store,
        &dialogue_transcript(),
        &records_fixture::EncounterSpec {
            clinician_id,
            patient_ref: Some("MRN-0042"),
            audio: true,
        },
    )
}

fn start() -> Fixture {
    start_with_destinations(Vec::new())
}

fn start_with_destinations(destinations: Vec<String>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut ids = std::collections::HashMap::new();
    for (name, role, specialty) in [
        ("dr-a", "clinician", Some("family-medicine")),
        ("dr-b", "clinician", None),
        ("rev", "reviewer", None),
        ("it", "admin", None),
        ("aud", "auditor", None),
    ] {
        let id = store
            .create_user(
                &NewUser {
                    username: name.into(),
                    role: role.into(),
                    specialty: specialty.map(String::from),
                    password_hash: auth::hash_password(PASSWORD).unwrap(),
                },
                &Actor::System,
            )
            .unwrap();
        ids.insert(name, id);
    }
    let encounter = add_encounter(&store, &ids["dr-a"]);
    let other_encounter = add_encounter(&store, &ids["dr-b"]);
    store
        .assign_reviewer(&encounter, &ids["rev"], &Actor::User(ids["dr-a"].clone()))
        .unwrap();
    drop(store);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let settings = ReviewSettings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..ReviewSettings::default()
    };
    // Drafts go at sign-off, as in the shipped configuration.
    let retention = edge_scribe::store::RetentionPolicy {
        draft_after_signoff_days: Some(0),
        ..Default::default()
    };
    let state = AppState::open(
        dir.path(),
        review::ServiceConfig {
            review: settings.clone(),
            retention,
            destinations,
        },
    )
    .unwrap();
    let server = runtime
        .block_on(review::bind(settings.listen.unwrap(), dir.path(), state))
        .unwrap();
    let addr = server.local_addr;
    let written = std::fs::read_to_string(dir.path().join(review::ADDR_FILE_NAME)).unwrap();
    assert_eq!(written, addr.to_string());
    runtime.spawn(review::serve(server, std::future::pending()));
    Fixture {
        _dir: dir,
        addr,
        encounter,
        other_encounter,
        ids,
        _runtime: runtime,
    }
}

/// Every statement of a note view, as the page would send it back unchanged.
fn unchanged_sections(view: &Value) -> Vec<Value> {
    view["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|section| {
            json!({
                "name": section["name"],
                "statements": section["statements"].as_array().unwrap().iter().map(|s| json!({
                    "id": s["id"], "text": s["text"], "state": s["state"],
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

#[test]
fn every_role_reaches_exactly_its_endpoints_and_admins_see_no_patient_content() {
    let fx = start();
    let e = fx.encounter.clone();
    let other = fx.other_encounter.clone();
    let reviewer_id = fx.ids["rev"].clone();
    // (method, path, body): mutating calls are last, in the order the flow needs them.
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/me".into(), None),
        ("GET", "/api/encounters".into(), None),
        ("GET", format!("/api/encounters/{e}"), None),
        (
            "GET",
            format!("/api/encounters/{e}/audio?start_ms=0&end_ms=2000"),
            None,
        ),
        ("GET", format!("/api/encounters/{e}/versions"), None),
        ("GET", format!("/api/encounters/{e}/versions/0"), None),
        ("GET", format!("/api/encounters/{e}/signed"), None),
        ("GET", "/api/audit?after_seq=0&limit=50".into(), None),
        ("GET", "/api/audit/verify".into(), None),
        ("GET", "/api/quality".into(), None),
        ("GET", "/api/users".into(), None),
        ("POST", "/api/retention/run".into(), Some(json!({}))),
        ("GET", "/api/outbox?state=dead".into(), None),
        ("GET", format!("/api/encounters/{e}/delivery"), None),
        // Clinicians may try a pairing code; an unknown one answers 404, others 403.
        (
            "POST",
            "/api/badges/confirm".into(),
            Some(json!({"code": "12345678"})),
        ),
        (
            "POST",
            "/api/deletions".into(),
            Some(json!({"encounter_id": other.clone()})),
        ),
        (
            "POST",
            "/api/users".into(),
            Some(json!({"username": "new-user", "password": PASSWORD, "role": "reviewer"})),
        ),
        (
            "POST",
            format!("/api/encounters/{e}/reviewers"),
            Some(json!({"user_id": reviewer_id})),
        ),
        (
            "POST",
            format!("/api/encounters/{e}/versions"),
            Some(json!({"base_version": 0, "sections": []})),
        ),
        (
            "PUT",
            format!("/api/encounters/{e}/segments/s1/speaker"),
            Some(json!({"speaker": "other-1"})),
        ),
        (
            "POST",
            format!("/api/encounters/{e}/sign"),
            Some(json!({"version": 0})),
        ),
        (
            "POST",
            format!("/api/encounters/{e}/addenda"),
            Some(json!({"text": "Addendum text."})),
        ),
    ];
    // Who may call what (the owner of `e` is dr-a; rev is assigned to it).
    let allowed = |user: &str, method: &str, path: &str| -> bool {
        match user {
            "anonymous" => false,
            _ if path == "/api/me" => true,
            "dr-a" => path.starts_with("/api/encounters"),
            "rev" => path.starts_with("/api/encounters") && method == "GET",
            "it" => {
                path.starts_with("/api/users")
                    || path == "/api/quality"
                    || path == "/api/retention/run"
                    || path.starts_with("/api/outbox")
                    || path == "/api/deletions"
            }
            "aud" => path.starts_with("/api/audit") || path == "/api/quality",
            "dr-b" => path == "/api/encounters",
            _ => unreachable!(),
        }
    };
    for user in ["anonymous", "it", "aud", "rev", "dr-b", "dr-a"] {
        let mut client = if user == "anonymous" {
            Client::new(fx.addr)
        } else {
            login(fx.addr, user)
        };
        for (method, path, body) in &endpoints {
            let (status, content_type, bytes) = client.send(method, path, body.as_ref());
            let text = String::from_utf8_lossy(&bytes).to_lowercase();
            let expect_ok = allowed(user, method, path);
            if expect_ok {
                assert!(
                    ![401, 403, 404].contains(&status),
                    "{user} {method} {path} should be allowed, got {status}: {text}"
                );
            } else {
                let expected: &[u16] = match user {
                    "anonymous" => &[401],
                    // Another clinician's encounter looks like no encounter at all.
                    "dr-b" if path.starts_with("/api/encounters/") => &[404],
                    "rev" if path.starts_with("/api/encounters/") && *method == "GET" => &[404],
                    _ => &[403, 404],
                };
                assert!(
                    expected.contains(&status),
                    "{user} {method} {path} should be refused with {expected:?}, got {status}: {text}"
                );
            }
            if ["it", "aud", "anonymous", "dr-b"].contains(&user) {
                for marker in MARKERS {
                    assert!(
                        !text.contains(marker),
                        "{user} {method} {path} leaked patient text"
                    );
                }
                assert!(
                    !content_type.starts_with("audio/"),
                    "{user} got audio from {path}"
                );
            }
        }
    }
    // dr-b's own encounter is theirs alone: dr-a cannot see it either.
    let mut a = login(fx.addr, "dr-a");
    assert_eq!(a.get(&format!("/api/encounters/{other}")).0, 404);
    let (status, list) = a.get("/api/encounters");
    assert_eq!(status, 200);
    let listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [e.as_str()]);
}

#[test]
fn a_clinician_edits_signs_and_amends_and_everything_is_versioned_and_audited() {
    let fx = start();
    let e = fx.encounter.clone();
    let mut dr = login(fx.addr, "dr-a");

    let (status, view) = dr.get(&format!("/api/encounters/{e}"));
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["version"], 0);
    assert!(view["transcript"].to_string().contains("quartermaine"));
    assert_eq!(view["audio"], true);
    let mut sections = unchanged_sections(&view);
    let first_with = |sections: &Vec<Value>| {
        sections
            .iter()
            .position(|s| s["statements"].as_array().unwrap().len() >= 3)
            .expect("a section with three statements")
    };
    let si = first_with(&sections);
    let statements = sections[si]["statements"].as_array_mut().unwrap();
    statements[0]["text"] = json!("Right knee pain for two weeks, worse on stairs.");
    statements[1]["state"] = json!("rejected");
    statements[2]["state"] = json!("accepted");
    statements.push(
        json!({"id": "new-1", "text": "Patient prefers to avoid opioids.", "state": "added"}),
    );
    let edited_id = statements[0]["id"].as_str().unwrap().to_owned();

    // A save based on a stale version is refused and changes nothing.
    let (status, err) = dr.post(
        &format!("/api/encounters/{e}/versions"),
        &json!({"base_version": 3, "sections": sections}),
    );
    assert_eq!(status, 409, "{err}");

    let (status, saved) = dr.post(
        &format!("/api/encounters/{e}/versions"),
        &json!({"base_version": 0, "sections": sections}),
    );
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved["version"], 1);
    let kinds: Vec<&str> = saved["diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["edited", "rejected", "accepted", "added"]);
    assert!(
        !saved["diff"].to_string().contains("opioids"),
        "diffs carry ids only"
    );

    // Invented evidence is ignored: the server keeps the draft's.
    let (_, v1) = dr.get(&format!("/api/encounters/{e}/versions/1"));
    let kept = &v1["sections"][si]["statements"][0];
    assert_eq!(kept["id"], edited_id);
    assert_eq!(kept["state"], "edited");
    assert_eq!(
        kept["evidence"],
        view["sections"][si]["statements"][0]["evidence"]
    );
    let (_, history) = dr.get(&format!("/api/encounters/{e}/versions"));
    assert_eq!(history.as_array().unwrap().len(), 1);

    // Audio of a span: the right seconds, as WAV.
    let (status, content_type, wav) = dr.send(
        "GET",
        &format!("/api/encounters/{e}/audio?start_ms=2000&end_ms=3000"),
        None,
    );
    assert_eq!((status, content_type.as_str()), (200, "audio/wav"));
    let reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    let samples: Vec<i16> = reader.into_samples().map(|s| s.unwrap()).collect();
    assert_eq!(samples.len(), 16_000);
    assert!(
        samples.iter().all(|&s| s == 300),
        "second 2 of the tone is amplitude 300"
    );
    assert_eq!(
        dr.get(&format!("/api/encounters/{e}/audio?start_ms=5&end_ms=1"))
            .0,
        400
    );

    // Sign-off of a stale version is refused; of the latest, it makes a verifiable signed note.
    assert_eq!(
        dr.post(&format!("/api/encounters/{e}/sign"), &json!({"version": 0}))
            .0,
        409
    );
    let (status, signed) = dr.post(&format!("/api/encounters/{e}/sign"), &json!({"version": 1}));
    assert_eq!(status, 200, "{signed}");
    let verified = edge_scribe::attest::verify_signed_note(&signed.to_string(), None).unwrap();
    let attestation = verified.attestation();
    assert_eq!(attestation.clinician_id, fx.ids["dr-a"]);
    assert_eq!(attestation.ai_statements.modified, vec![edited_id.clone()]);
    assert_eq!(attestation.ai_statements.rejected.len(), 1);
    assert_eq!(
        attestation.audio_sha256.as_deref(),
        Some("ab".repeat(32).as_str())
    );
    assert!(verified
        .note_text()
        .contains("Right knee pain for two weeks, worse on stairs."));
    assert!(verified
        .note_text()
        .contains("Patient prefers to avoid opioids."));

    // Signed means immutable: no new version, no second sign-off; an addendum instead.
    let (status, _) = dr.post(
        &format!("/api/encounters/{e}/versions"),
        &json!({"base_version": 1, "sections": sections}),
    );
    assert_eq!(status, 409);
    assert_eq!(
        dr.post(&format!("/api/encounters/{e}/sign"), &json!({"version": 1}))
            .0,
        409
    );
    let (status, addendum) = dr.post(
        &format!("/api/encounters/{e}/addenda"),
        &json!({"text": "Knee X-ray ordered for Monday."}),
    );
    assert_eq!(status, 200, "{addendum}");
    let addendum = edge_scribe::attest::verify_signed_note(&addendum.to_string(), None).unwrap();
    assert_eq!(
        addendum.attestation().addendum_to.as_deref(),
        Some(attestation.note_sha256.as_str())
    );
    let (_, all) = dr.get(&format!("/api/encounters/{e}/signed"));
    assert_eq!(all.as_array().unwrap().len(), 2);

    // Retention removes the pipeline draft once signed; the signed version still opens.
    let mut it = login(fx.addr, "it");
    let (status, removed) = it.post("/api/retention/run", &json!({}));
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["signed_drafts"], 1, "{removed}");
    let (status, after) = dr.get(&format!("/api/encounters/{e}"));
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        (after["signed"].clone(), after["version"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(after["sections"], v1["sections"]);

    // The auditor sees the trail (ids and counts only) and an intact chain.
    let mut aud = login(fx.addr, "aud");
    let (_, rows) = aud.get("/api/audit?limit=1000");
    let actions: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "login.succeeded",
        "note.viewed",
        "audio.played",
        "note.version_saved",
        "note.signed",
        "note.addendum_signed",
    ] {
        assert!(
            actions.contains(&expected),
            "audit lacks {expected}: {actions:?}"
        );
    }
    let text = rows.to_string().to_lowercase();
    for marker in MARKERS.iter().chain(["opioids", "knee"].iter()) {
        assert!(!text.contains(marker), "the audit log holds patient text");
    }
    let (_, verdict) = aud.get("/api/audit/verify");
    assert_eq!(verdict["intact"], true, "{verdict}");
    let (_, quality) = aud.get("/api/quality");
    assert_eq!(quality["signed_notes"], 1);
    let by_clinician = quality["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["by"] == "clinician")
        .unwrap();
    assert_eq!(by_clinician["key"], fx.ids["dr-a"].as_str());
    assert!(by_clinician["rejected_rate"].as_f64().unwrap() > 0.0);
    assert!(by_clinician["edit_ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn sessions_expire_logins_lock_and_bodies_are_checked() {
    let fx = start();
    // Wrong passwords: 401 four times, then the account locks (423) even for the right one.
    let mut c = Client::new(fx.addr);
    for attempt in 1..=5 {
        let (status, body) = c.post(
            "/api/login",
            &json!({"username": "dr-b", "password": "wrong password!!"}),
        );
        let expected = if attempt < 5 { 401 } else { 423 };
        assert_eq!(status, expected, "attempt {attempt}: {body}");
    }
    let (status, _) = c.post(
        "/api/login",
        &json!({"username": "dr-b", "password": PASSWORD}),
    );
    assert_eq!(status, 423);
    // Unknown names answer like wrong passwords.
    let (status, _) = c.post(
        "/api/login",
        &json!({"username": "nobody", "password": PASSWORD}),
    );
    assert_eq!(status, 401);

    // Malformed bodies: a clear 4xx, never a crash, and no echo of the input.
    let mut dr = login(fx.addr, "dr-a");
    let e = fx.encounter.clone();
    for body in [
        json!({"base_version": "one", "sections": []}),
        json!({"sections": []}),
        json!({"base_version": 0, "sections": [], "extra": "quartermaine"}),
        json!([1, 2, 3]),
    ] {
        let (status, answer) = dr.post(&format!("/api/encounters/{e}/versions"), &body);
        assert_eq!(status, 400, "{body} → {answer}");
        assert!(!answer.to_string().contains("quartermaine"));
    }
    let (status, _, _) = dr.send("POST", "/api/login", None);
    assert_eq!(status, 415, "a body that is not JSON is refused");

    // Idle sessions end.
    let (status, _) = dr.get("/api/me");
    assert_eq!(status, 200);
    let token = dr.cookie.clone().unwrap();
    let token = token.split('=').nth(1).unwrap();
    let store = Store::open(fx._dir.path()).unwrap();
    store
        .age_session_for_test(&auth::token_digest(token), 16 * 60 * 1000)
        .unwrap();
    assert_eq!(dr.get("/api/me").0, 401);

    // Logout ends a session for good.
    let mut rev = login(fx.addr, "rev");
    let saved_cookie = rev.cookie.clone();
    let (status, _, _) = rev.send("POST", "/api/logout", None);
    assert_eq!(status, 204);
    rev.cookie = saved_cookie;
    assert_eq!(rev.get("/api/me").0, 401);
}

#[test]
fn an_admin_deletes_a_patients_records_without_seeing_them() {
    let fx = start();
    let mut it = login(fx.addr, "it");
    for bad in [
        json!({}),
        json!({"patient_ref": " "}),
        json!({"patient_ref": "x", "encounter_id": "y"}),
    ] {
        assert_eq!(it.post("/api/deletions", &bad).0, 400, "{bad}");
    }
    let (status, answer) = it.post("/api/deletions", &json!({"patient_ref": "MRN-0042"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["encounters_deleted"], 2);
    assert!(!answer.to_string().contains("MRN"));

    let mut dr = login(fx.addr, "dr-a");
    assert_eq!(dr.get(&format!("/api/encounters/{}", fx.encounter)).0, 404);
    assert_eq!(dr.get("/api/encounters").1, json!([]));

    let mut aud = login(fx.addr, "aud");
    let (_, rows) = aud.get("/api/audit?limit=1000");
    let text = rows.to_string();
    assert!(
        text.contains("patient.deleted") || text.contains("encounter.deleted"),
        "{text}"
    );
    assert!(
        !text.contains("MRN-0042"),
        "the audit log holds no patient reference in clear"
    );
    assert_eq!(aud.get("/api/audit/verify").1["intact"], true);
}

#[test]
fn it_sees_dead_deliveries_without_content_and_retries_or_cancels_them() {
    let fx = start_with_destinations(vec!["ehr".into()]);
    let e = fx.encounter.clone();
    let mut dr = login(fx.addr, "dr-a");
    assert_eq!(
        dr.post(&format!("/api/encounters/{e}/sign"), &json!({"version": 0}))
            .0,
        200
    );
    let (_, delivery) = dr.get(&format!("/api/encounters/{e}/delivery"));
    assert_eq!(delivery[0]["state"], "queued", "{delivery}");

    // The EHR refuses it for good (no sender runs here: the outcome is recorded directly).
    let store = Store::open(fx._dir.path()).unwrap();
    let item = store.outbox_items(None, 10).unwrap().remove(0);
    store
        .record_delivery(
            &item.id,
            &edge_scribe::store::outbox::DeliveryOutcome::Dead {
                status: "http 400".into(),
            },
        )
        .unwrap();

    let mut it = login(fx.addr, "it");
    let (status, dead) = it.get("/api/outbox?state=dead");
    assert_eq!(status, 200);
    assert_eq!(dead.as_array().unwrap().len(), 1);
    assert_eq!(dead[0]["last_status"], "http 400");
    let text = dead.to_string().to_lowercase();
    for marker in MARKERS {
        assert!(!text.contains(marker));
    }
    // Metrics live on the admin port now; they read the same store.
    let metrics =
        edge_scribe::admin::render_metrics(&store, fx._dir.path()).expect("render metrics");
    assert!(
        metrics.contains("edge_scribe_outbox_dead_letters 1"),
        "{metrics}"
    );
    assert_eq!(it.get("/api/outbox?state=bogus").0, 400);

    let id = item.id.clone();
    assert_eq!(
        it.send("POST", &format!("/api/outbox/{id}/retry"), None).0,
        204
    );
    assert_eq!(
        store.outbox_items(None, 10).unwrap()[0].state.as_str(),
        "queued"
    );
    assert_eq!(
        it.send("POST", &format!("/api/outbox/{id}/cancel"), None).0,
        204
    );
    assert_eq!(
        store.outbox_items(None, 10).unwrap()[0].state.as_str(),
        "cancelled"
    );
    assert_eq!(
        it.send("POST", &format!("/api/outbox/{id}/retry"), None).0,
        409
    );
    assert_eq!(
        it.send("POST", "/api/outbox/no-such-item/retry", None).0,
        404
    );
    // A clinician cannot manage the outbox.
    assert_eq!(
        dr.send("POST", &format!("/api/outbox/{id}/retry"), None).0,
        403
    );
}

/// The segment `id` of an encounter view.
fn segment_of<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no segment {id} in {view}"))
}

#[test]
fn overlap_flags_round_trip_from_the_stored_transcript() {
    let fx = start();
    let mut dr = login(fx.addr, "dr-a");
    let (status, view) = dr.get(&format!("/api/encounters/{}", fx.encounter));
    assert_eq!(status, 200, "{view}");
    let overlapped: Vec<&str> = view["transcript"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["overlap"] == true)
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(overlapped, [OVERLAPPED], "{view}");
    for segment in view["transcript"].as_array().unwrap() {
        assert!(segment["overlap"].is_boolean(), "{segment}");
        assert_eq!(segment["speaker_corrected"], false, "{segment}");
        assert_eq!(segment["original_speaker"], Value::Null, "{segment}");
    }
}

#[test]
fn the_owner_corrects_a_speaker_until_sign_off_and_the_audit_names_only_labels() {
    let fx = start();
    let e = fx.encounter.clone();
    let url = |segment: &str| format!("/api/encounters/{e}/segments/{segment}/speaker");
    let mut dr = login(fx.addr, "dr-a");
    let (_, view) = dr.get(&format!("/api/encounters/{e}"));
    let target = segment_of(&view, "s2");
    assert_eq!(target["speaker"], "patient", "{target}");
    let target_text = target["text"].as_str().unwrap().to_owned();

    // Only the owning clinician may change it: another clinician and an assigned reviewer get
    // what they get for note edits (404 / 403), other roles 403, no session 401.
    for (user, expected) in [("dr-b", 404), ("rev", 403), ("it", 403), ("aud", 403)] {
        let mut client = login(fx.addr, user);
        let (status, answer) = client.put(&url("s2"), &json!({"speaker": "other-1"}));
        assert_eq!(status, expected, "{user}: {answer}");
        assert!(answer["error"].is_string(), "{user}: {answer}");
    }
    assert_eq!(
        Client::new(fx.addr)
            .put(&url("s2"), &json!({"speaker": "other-1"}))
            .0,
        401
    );

    // Bodies are checked strictly: only clinician, patient, other-1..other-9.
    for body in [
        json!({"speaker": "unknown"}),
        json!({"speaker": "Patient"}),
        json!({"speaker": "other"}),
        json!({"speaker": "other-0"}),
        json!({"speaker": "other-10"}),
        json!({"speaker": "other-01"}),
        json!({"speaker": "zebulon quartermaine"}),
        json!({"speaker": 1}),
        json!({"speaker": null}),
        json!({}),
        json!({"speaker": "patient", "text": "changed words"}),
        json!(["patient"]),
    ] {
        let (status, answer) = dr.put(&url("s2"), &body);
        assert_eq!(status, 400, "{body} → {answer}");
        let message = answer["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{answer}"));
        assert!(!message.contains("quartermaine"), "{message}");
    }
    let (status, answer) = dr.put(&url("s99"), &json!({"speaker": "clinician"}));
    assert_eq!(status, 404, "{answer}");
    let (_, unchanged) = dr.get(&format!("/api/encounters/{e}"));
    assert_eq!(
        unchanged["transcript"], view["transcript"],
        "refusals change nothing"
    );

    // The owner's correction is stored, shown as corrected with the pipeline's label, and the
    // words, times and overlap flag stay as they were.
    let (status, answer) = dr.put(&url("s2"), &json!({"speaker": "other-1"}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"id": "s2", "speaker": "other-1", "speaker_corrected": true,
               "original_speaker": "patient"})
    );
    let (_, after) = dr.get(&format!("/api/encounters/{e}"));
    let corrected = segment_of(&after, "s2");
    assert_eq!(corrected["speaker"], "other-1");
    assert_eq!(corrected["speaker_corrected"], true);
    assert_eq!(corrected["original_speaker"], "patient");
    assert_eq!(corrected["text"], target["text"]);
    assert_eq!(corrected["start_ms"], target["start_ms"]);
    assert_eq!(segment_of(&after, OVERLAPPED)["overlap"], true);
    // The overlapped clinician turn can be corrected too and keeps its flag.
    let (status, answer) = dr.put(&url(OVERLAPPED), &json!({"speaker": "patient"}));
    assert_eq!(status, 200, "{answer}");
    let (_, after) = dr.get(&format!("/api/encounters/{e}"));
    let overlapped = segment_of(&after, OVERLAPPED);
    assert_eq!(
        (overlapped["speaker"].clone(), overlapped["overlap"].clone()),
        (json!("patient"), json!(true))
    );
    // The assigned reviewer sees the correction.
    let mut rev = login(fx.addr, "rev");
    let (_, seen) = rev.get(&format!("/api/encounters/{e}"));
    assert_eq!(segment_of(&seen, "s2")["speaker"], "other-1");

    // Signed: the transcript is part of the record and no longer changes.
    let (status, signed) = dr.post(&format!("/api/encounters/{e}/sign"), &json!({"version": 0}));
    assert_eq!(status, 200, "{signed}");
    let (status, answer) = dr.put(&url("s2"), &json!({"speaker": "patient"}));
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("signed"),
        "{answer}"
    );
    let (_, final_view) = dr.get(&format!("/api/encounters/{e}"));
    assert_eq!(segment_of(&final_view, "s2")["speaker"], "other-1");

    // The audit has one entry per correction: who, which encounter and segment, which labels.
    let mut aud = login(fx.addr, "aud");
    let (_, rows) = aud.get("/api/audit?limit=1000");
    let corrections: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "transcript.speaker_corrected")
        .collect();
    assert_eq!(corrections.len(), 2, "{rows}");
    let first = corrections[0];
    assert_eq!(first["subject"], e.as_str());
    assert_eq!(first["actor"], format!("user:{}", fx.ids["dr-a"]));
    assert_eq!(
        first["detail"],
        json!({"segment_id": "s2", "from_speaker": "patient", "to_speaker": "other-1"})
    );
    assert_eq!(
        corrections[1]["detail"],
        json!({"segment_id": OVERLAPPED, "from_speaker": "clinician", "to_speaker": "patient"})
    );
    let text = rows.to_string().to_lowercase();
    for words in MARKERS
        .iter()
        .copied()
        .chain([target_text.as_str(), "knee"])
    {
        assert!(!text.contains(words), "the audit log holds transcript text");
    }
    assert_eq!(aud.get("/api/audit/verify").1["intact"], true);
}
