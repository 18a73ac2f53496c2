//! Shared by the review tests and the records benchmark: an encounter with transcript, draft
//! (extraction only) and optionally audio, put straight into a store; and a cookie-keeping HTTP
//! client for the review API. Synthetic content only.

// Each user of this module needs a different part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use edge_scribe::draft::compose::compose_draft;
use edge_scribe::draft::template::TemplateSet;
use edge_scribe::draft::DraftSettings;
use edge_scribe::store::{NewDraft, NewEncounter, Store, StoredSegment};
use edge_scribe::transcript::Transcript;
use serde_json::Value;

/// What the fixture encounter carries besides its transcript.
pub struct EncounterSpec<'a> {
    pub clinician_id: &'a str,
    pub patient_ref: Option<&'a str>,
    /// Store audio: a tone whose amplitude is 100 × (second + 1), so a span shows which seconds
    /// it holds.
    pub audio: bool,
}

/// Stores an encounter with `transcript`, an extraction-only SOAP draft and, if asked, audio.
pub fn add_encounter(store: &Store, transcript: &Transcript, spec: &EncounterSpec<'_>) -> String {
    let seconds = transcript.segments.last().map_or(0.0, |s| s.end).ceil() as usize + 1;
    let id = store
        .create_encounter(&NewEncounter {
            source_kind: "test".into(),
            audio_sha256: Some("ab".repeat(32)),
            audio_duration_ms: Some(seconds as i64 * 1000),
            clinician_id: Some(spec.clinician_id.to_owned()),
            patient_ref: spec.patient_ref.map(str::to_owned),
            consent: true,
        })
        .expect("create the encounter");
    if spec.audio {
        let samples: Vec<i16> = (0..seconds * 16_000)
            .map(|i| ((i / 16_000) as i16 + 1) * 100)
            .collect();
        store.save_audio(&id, &samples).expect("save audio");
    }
    let segments: Vec<StoredSegment> = transcript
        .segments
        .iter()
        .map(|s| StoredSegment {
            id: s.id.clone(),
            start_ms: s.start_ms(),
            end_ms: s.end_ms(),
            speaker: Some(s.speaker.label()),
            text: s.text.clone(),
            confidence: None,
            overlap: s.overlap,
            speaker_corrected: false,
            original_speaker: None,
        })
        .collect();
    store
        .save_transcript(&id, &segments)
        .expect("save the transcript");
    let templates = TemplateSet::builtin().expect("built-in templates");
    let draft = compose_draft(
        transcript,
        templates.get("soap").expect("the soap template"),
        None,
        &DraftSettings {
            max_tokens: 0,
            temperature: 0.0,
            seed: 0,
            max_statements_per_section: 4,
            time_budget: Duration::ZERO,
        },
    )
    .expect("compose the draft");
    store
        .save_draft(&NewDraft {
            encounter_id: id.clone(),
            model: "none".into(),
            model_sha256: "0".repeat(64),
            template: "soap".into(),
            body_json: serde_json::to_string(&draft).expect("draft JSON"),
        })
        .expect("save the draft");
    id
}

/// A minimal cookie-keeping client: status and body of every answer, errors included.
pub struct Client {
    base: String,
    pub cookie: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client {
            base: format!("http://{addr}"),
            cookie: None,
            agent,
        }
    }

    /// A client signed in as `username`; panics if the login is refused.
    pub fn login(addr: SocketAddr, username: &str, password: &str) -> Client {
        let mut client = Client::new(addr);
        let (status, body) = client.post(
            "/api/login",
            &serde_json::json!({"username": username, "password": password}),
        );
        assert_eq!(status, 200, "login {username}: {body}");
        client
    }

    /// Status, content type and body.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, String, Vec<u8>) {
        let url = format!("{}{}", self.base, path);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let response = match body {
            Some(body) => self.agent.run(
                request
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .expect("request"),
            ),
            None => self.agent.run(request.body(()).expect("request")),
        }
        .expect("the review service answers");
        let status = response.status().as_u16();
        if let Some(set) = response.headers().get("set-cookie") {
            let pair = set
                .to_str()
                .expect("cookie")
                .split(';')
                .next()
                .unwrap_or("");
            self.cookie = Some(pair.to_owned());
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response.into_body().read_to_vec().expect("body");
        (status, content_type, bytes)
    }

    pub fn get(&mut self, path: &str) -> (u16, Value) {
        let (status, _, bytes) = self.send("GET", path, None);
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub fn post(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json("POST", path, body)
    }

    pub fn put(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.send_json("PUT", path, body)
    }

    fn send_json(&mut self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let (status, _, bytes) = self.send(method, path, Some(body));
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}
