//! The review service's routes and handlers. See `docs/REVIEW_API.md` for the contract.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{middleware, Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::note::{self, ReviewNote, SubmittedSection};
use super::{quality, ReviewSettings, ADDR_FILE_NAME};
use crate::attest::{self, AttestationFields, ModelRef, Signer};
use crate::auth::{self, Permission, Role};
use crate::store::outbox::DeliveryState;
use crate::store::review::{NewSignedNote, QualitySignal, SignedKind};
use crate::store::users::{NewUser, UserRecord};
use crate::store::{Actor, AuditAction, RetentionPolicy, RetentionReport, Store, StoreError};
use crate::transcript::Speaker;

const SESSION_COOKIE: &str = "edge_scribe_session";
/// Longest span of audio one request may play.
const MAX_AUDIO_SPAN_MS: i64 = 10 * 60 * 1000;
/// Longest addendum, in characters.
const MAX_ADDENDUM_CHARS: usize = 20_000;
const SAMPLE_RATE: u32 = 16_000;

const INDEX_HTML: &str = include_str!("../../web/review/index.html");
const APP_JS: &str = include_str!("../../web/review/app.js");
const STYLE_CSS: &str = include_str!("../../web/review/style.css");

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr}: {source}; another program may hold the port, or set \
         review.listen to a free address"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    AddrFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Attest(#[from] attest::AttestError),
    #[error("the review service stopped: {0}")]
    Serve(std::io::Error),
}

/// What the handlers share: the store (one connection, behind a lock; SQLite serializes
/// writers anyway), the signing key and the settings.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    signer: Signer,
    settings: ReviewSettings,
    retention: RetentionPolicy,
    destinations: Vec<String>,
}

/// What the service needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    pub review: ReviewSettings,
    pub retention: RetentionPolicy,
    /// Names of the EHR destinations every signed note is queued for.
    pub destinations: Vec<String>,
}

impl AppState {
    pub fn open(data_dir: &Path, config: ServiceConfig) -> Result<AppState, ServeError> {
        Ok(AppState {
            inner: Arc::new(Inner {
                store: Mutex::new(Store::open(data_dir)?),
                signer: Signer::open(data_dir)?,
                settings: config.review,
                retention: config.retention,
                destinations: config.destinations,
            }),
        })
    }
}

/// A bound listener and the state to serve with.
pub struct ReviewServer {
    pub listener: tokio::net::TcpListener,
    pub local_addr: SocketAddr,
    pub state: AppState,
}

/// Binds the review port and records the bound address in `<data_dir>/review.addr`.
pub async fn bind(
    addr: SocketAddr,
    data_dir: &Path,
    state: AppState,
) -> Result<ReviewServer, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let path = data_dir.join(ADDR_FILE_NAME);
    let tmp = data_dir.join(format!(".{ADDR_FILE_NAME}.tmp"));
    std::fs::write(&tmp, local_addr.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ServeError::AddrFile { path, source })?;
    tracing::info!(addr = %local_addr, "review service listening");
    Ok(ReviewServer {
        listener,
        local_addr,
        state,
    })
}

/// Serves until `shutdown` completes; requests in flight finish first.
pub async fn serve(
    server: ReviewServer,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    axum::serve(server.listener, router(server.state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Serve)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/me", get(me))
        .route("/api/encounters", get(list_encounters))
        .route("/api/encounters/{id}", get(encounter_view))
        .route("/api/encounters/{id}/audio", get(audio_span))
        .route(
            "/api/encounters/{id}/segments/{segment_id}/speaker",
            put(correct_speaker),
        )
        .route(
            "/api/encounters/{id}/versions",
            get(list_versions).post(save_version),
        )
        .route("/api/encounters/{id}/versions/{n}", get(one_version))
        .route("/api/encounters/{id}/sign", post(sign))
        .route("/api/encounters/{id}/addenda", post(addendum))
        .route("/api/encounters/{id}/signed", get(signed_notes))
        .route("/api/encounters/{id}/reviewers", post(assign_reviewer))
        .route("/api/audit", get(audit_rows))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/quality", get(quality_report))
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/retention/run", post(run_retention))
        .route("/api/outbox", get(outbox_items))
        .route("/api/outbox/{item}/retry", post(retry_delivery))
        .route("/api/outbox/{item}/cancel", post(cancel_delivery))
        .route("/api/encounters/{id}/delivery", get(delivery_status))
        .route("/api/encounters/{id}/delivery/events", get(delivery_events))
        .route("/api/deletions", post(delete_records))
        .route("/api/badges/confirm", post(confirm_badge))
        .fallback(not_found)
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer: a status and a message without patient content.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "sign in first")
    }
    fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "your role may not do this")
    }
    fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "no such encounter")
    }
    fn internal(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed on the box; the log has the details"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::UnknownEncounter { .. } => ApiError::not_found(),
            StoreError::UnknownOutboxItem { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "no such outbox item")
            }
            StoreError::UnknownSegment { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "no such transcript segment")
            }
            StoreError::NotASpeakerRole => ApiError::bad_request(e.to_string()),
            StoreError::DeliveryNotPending { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            StoreError::VersionConflict { .. }
            | StoreError::AlreadySigned { .. }
            | StoreError::NotSigned { .. }
            | StoreError::UsernameTaken => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            _ => {
                // Store errors name ids and paths only, so they may be logged.
                tracing::error!(error = %e, "review request failed in the store");
                ApiError::internal("the database operation")
            }
        }
    }
}

impl From<auth::login::LoginError> for ApiError {
    fn from(e: auth::login::LoginError) -> ApiError {
        match e {
            auth::login::LoginError::Store(e) => e.into(),
            refused if refused.is_lockout() => {
                ApiError::new(StatusCode::LOCKED, refused.to_string())
            }
            refused => ApiError::new(StatusCode::UNAUTHORIZED, refused.to_string()),
        }
    }
}

impl From<note::EditError> for ApiError {
    fn from(e: note::EditError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<attest::AttestError> for ApiError {
    fn from(e: attest::AttestError) -> ApiError {
        tracing::error!(error = %e, "signing failed");
        ApiError::internal("signing")
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------------
// Plumbing

/// Runs `f` with the store on the blocking pool: SQLite, SQLCipher and Argon2 block.
async fn with_store<T, F>(state: &AppState, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store, &Inner) -> ApiResult<T> + Send + 'static,
{
    let inner = state.inner.clone();
    tokio::task::spawn_blocking(move || {
        let store = inner
            .store
            .lock()
            .map_err(|_| ApiError::internal("the database lock"))?;
        f(&store, &inner)
    })
    .await
    .map_err(|_| ApiError::internal("the request"))?
}

fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    crate::http_body::json(headers, body).map_err(|e| ApiError::new(e.status, e.message))
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The signed-in user and their role.
#[derive(Debug, Clone)]
struct Principal {
    user: UserRecord,
    role: Role,
}

impl Principal {
    fn actor(&self) -> Actor {
        Actor::User(self.user.id.clone())
    }

    fn require(&self, permission: Permission) -> ApiResult<()> {
        if self.role.may(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }
}

fn principal(store: &Store, inner: &Inner, token: Option<&str>) -> ApiResult<Principal> {
    let token = token.ok_or_else(ApiError::unauthorized)?;
    let idle_ms = i64::try_from(inner.settings.session_idle.as_millis()).unwrap_or(i64::MAX);
    let user = store
        .session_user(&auth::token_digest(token), idle_ms)?
        .ok_or_else(ApiError::unauthorized)?;
    let role = Role::parse(&user.role).ok_or_else(ApiError::forbidden)?;
    Ok(Principal { user, role })
}

/// Whether the principal may see (and, with `edit`, change) this encounter. An encounter the
/// user may not see answers 404, the same as one that does not exist, so ids cannot be probed.
fn check_encounter(
    store: &Store,
    who: &Principal,
    encounter_id: &str,
    edit: bool,
) -> ApiResult<()> {
    who.require(if edit {
        Permission::EditNotes
    } else {
        Permission::ReadNotes
    })?;
    let owner = store.encounter_clinician(encounter_id)?;
    let allowed = match who.role {
        Role::Clinician => owner.as_deref() == Some(who.user.id.as_str()),
        Role::Reviewer => !edit && store.is_assigned_reviewer(encounter_id, &who.user.id)?,
        Role::Admin | Role::Auditor => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::not_found())
    }
}

async fn authed<T, F>(state: &AppState, headers: &HeaderMap, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store, &Inner, Principal) -> ApiResult<T> + Send + 'static,
{
    let token = session_token(headers);
    with_store(state, move |store, inner| {
        let who = principal(store, inner, token.as_deref())?;
        f(store, inner, who)
    })
    .await
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        (
            "content-security-policy",
            "default-src 'self'; media-src 'self' blob:; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The page

async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
        .into_response()
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
        .into_response()
}

async fn style_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page")
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct UserView {
    id: String,
    username: String,
    role: String,
}

impl From<&UserRecord> for UserView {
    fn from(u: &UserRecord) -> UserView {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            role: u.role.clone(),
        }
    }
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let body: LoginBody = parse_body(&headers, &body)?;
    let (user, token, max_age_s) = with_store(&state, move |store, inner| {
        let user = auth::login::check_password(store, &body.username, &body.password)?;
        let token = auth::new_session_token().map_err(|_| ApiError::internal("login"))?;
        let max_age = inner.settings.session_max;
        let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        store.create_session(&auth::token_digest(&token), &user.id, max_age_ms)?;
        Ok((user, token, max_age.as_secs()))
    })
    .await?;
    let cookie =
        format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}");
    Ok((
        [(header::SET_COOKIE, cookie)],
        Json(json!({ "user": UserView::from(&user) })),
    )
        .into_response())
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let token = session_token(&headers);
    with_store(&state, move |store, inner| {
        let who = principal(store, inner, token.as_deref())?;
        if let Some(token) = token {
            store.end_session(&auth::token_digest(&token), &who.user.id)?;
        }
        Ok(())
    })
    .await?;
    let expired = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, expired)]).into_response())
}

async fn me(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<UserView>> {
    authed(&state, &headers, |_, _, who| {
        Ok(Json(UserView::from(&who.user)))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Encounters

#[derive(Serialize)]
struct EncounterListItem {
    id: String,
    created_at: String,
    status: String,
    template: Option<String>,
    flagged_sections: usize,
    signed: bool,
}

async fn list_encounters(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<EncounterListItem>>> {
    authed(&state, &headers, |store, _, who| {
        who.require(Permission::ReadNotes)?;
        let listings = match who.role {
            Role::Clinician => store.encounters_of_clinician(&who.user.id, 200)?,
            Role::Reviewer => store.encounters_assigned_to(&who.user.id, 200)?,
            Role::Admin | Role::Auditor => return Err(ApiError::forbidden()),
        };
        let mut items = Vec::with_capacity(listings.len());
        for l in listings {
            let draft = load_draft(store, &l.id)?;
            items.push(EncounterListItem {
                template: draft.as_ref().map(|d| d.draft.template.clone()),
                flagged_sections: draft
                    .as_ref()
                    .map(|d| ReviewNote::from_draft(&d.draft).flagged_sections())
                    .unwrap_or(0),
                id: l.id,
                created_at: l.created_at,
                status: l.status,
                signed: l.signed,
            });
        }
        Ok(Json(items))
    })
    .await
}

/// A stored draft, parsed, with the row's model facts.
struct LoadedDraft {
    draft: crate::draft::Draft,
    model: String,
    model_sha256: String,
    created_at: String,
}

fn load_draft(store: &Store, encounter_id: &str) -> ApiResult<Option<LoadedDraft>> {
    let Some(row) = store.latest_draft(encounter_id)? else {
        return Ok(None);
    };
    let draft: crate::draft::Draft = serde_json::from_str(&row.body_json).map_err(|_| {
        tracing::error!(encounter = %encounter_id, draft = %row.id, "stored draft does not parse");
        ApiError::internal("reading the draft")
    })?;
    Ok(Some(LoadedDraft {
        draft,
        model: row.model,
        model_sha256: row.model_sha256,
        created_at: row.created_at,
    }))
}

/// The note as the AI drafted it (version 0) and as it stands now (latest version).
fn current_note(store: &Store, encounter_id: &str) -> ApiResult<(ReviewNote, u32, ReviewNote)> {
    let draft = load_draft(store, encounter_id)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "this encounter has no draft yet; wait for drafting to finish",
        )
    })?;
    let original = ReviewNote::from_draft(&draft.draft);
    match store.latest_note_version(encounter_id)? {
        None => Ok((original.clone(), 0, original)),
        Some(v) => Ok((original, v.version, parse_note(&v.body, encounter_id)?)),
    }
}

fn parse_note(body: &[u8], encounter_id: &str) -> ApiResult<ReviewNote> {
    serde_json::from_slice(body).map_err(|_| {
        tracing::error!(encounter = %encounter_id, "stored note version does not parse");
        ApiError::internal("reading the note")
    })
}

async fn encounter_view(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, false)?;
        let encounter = store.load_encounter(&id)?;
        let transcript = store.load_transcript(&id)?;
        let draft = load_draft(store, &id)?;
        // Retention removes the pipeline draft after sign-off; the versions stay, so a signed
        // note still opens from its last version.
        let (version, sections) = match (&draft, store.latest_note_version(&id)?) {
            (Some(_), _) => {
                let (_, version, note) = current_note(store, &id)?;
                (version, note.sections)
            }
            (None, Some(latest)) => (latest.version, parse_note(&latest.body, &id)?.sections),
            (None, None) => (0, Vec::new()),
        };
        let signed = store.is_signed(&id)?;
        let has_audio = store.has_audio(&id)?;
        store.record_view(&id, &who.user.id, AuditAction::NoteViewed, None)?;
        Ok(Json(json!({
            "id": encounter.id,
            "created_at": encounter.created_at,
            "status": encounter.status,
            "signed": signed,
            "template": draft.as_ref().map(|d| d.draft.template.clone()),
            "audio": has_audio,
            "audio_duration_ms": encounter.audio_duration_ms,
            "transcript": transcript.iter().map(|s| json!({
                "id": s.id, "start_ms": s.start_ms, "end_ms": s.end_ms,
                "speaker": s.speaker, "text": s.text, "overlap": s.overlap,
                "speaker_corrected": s.speaker_corrected,
                "original_speaker": s.original_speaker,
            })).collect::<Vec<_>>(),
            "version": version,
            "sections": sections,
            "gaps": draft.as_ref().map(|d| d.draft.gaps.iter().map(|g| json!({
                "rule": g.rule, "title": g.title, "message": g.message, "facts": g.fact_ids,
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "codes": draft.as_ref().map(|d| d.draft.codes.iter().map(|c| json!({
                "code": c.code, "title": c.title, "missing": c.missing_specificity,
            })).collect::<Vec<_>>()).unwrap_or_default(),
            "verifier_rejected": draft.as_ref().map(|d| d.draft.verifier.rejected.iter().map(|r| json!({
                "section": r.section, "reason": r.reason, "origin": r.origin,
            })).collect::<Vec<_>>()).unwrap_or_default(),
        })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakerBody {
    speaker: String,
}

/// The owning clinician says who spoke a transcript segment. Only the label changes (the draft
/// is not redone); the store keeps the pipeline's label and audits the change. A signed
/// encounter's transcript is read-only (409).
async fn correct_speaker(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath((id, segment_id)): UrlPath<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let refused = || {
        ApiError::bad_request(format!(
            "send {{\"speaker\": …}} with clinician, patient or other-1 to other-{}",
            Speaker::MAX_ASSIGNABLE_OTHER
        ))
    };
    // An object only: serde would also take a struct from an array of its fields.
    let body: serde_json::Map<String, Value> = parse_body(&headers, &body)?;
    let body: SpeakerBody = serde_json::from_value(Value::Object(body)).map_err(|_| refused())?;
    let speaker = Speaker::assignable(&body.speaker).ok_or_else(refused)?;
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, true)?;
        let segment = store.correct_speaker(&id, &segment_id, &speaker.label(), &who.actor())?;
        Ok(Json(json!({
            "id": segment.id,
            "speaker": segment.speaker,
            "speaker_corrected": segment.speaker_corrected,
            "original_speaker": segment.original_speaker,
        })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpanQuery {
    start_ms: i64,
    end_ms: i64,
}

async fn audio_span(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    span: Result<Query<SpanQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Ok(Query(span)) = span else {
        return Err(ApiError::bad_request(
            "give the span as ?start_ms=…&end_ms=… (milliseconds)",
        ));
    };
    if span.start_ms < 0 || span.end_ms <= span.start_ms {
        return Err(ApiError::bad_request(
            "the span must have 0 <= start_ms < end_ms",
        ));
    }
    if span.end_ms - span.start_ms > MAX_AUDIO_SPAN_MS {
        return Err(ApiError::bad_request(
            "a span may be at most 10 minutes long",
        ));
    }
    let samples = authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, false)?;
        if !store.has_audio(&id)? {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no audio is kept for this encounter (no consent, or removed by retention)",
            ));
        }
        let samples = store.load_audio_span(&id, span.start_ms, span.end_ms)?;
        store.record_view(
            &id,
            &who.user.id,
            AuditAction::AudioPlayed,
            Some((span.start_ms, span.end_ms)),
        )?;
        Ok(samples)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], wav_bytes(&samples)).into_response())
}

/// A 16 kHz mono 16-bit WAV in memory (never a file: this is patient audio).
fn wav_bytes(samples: &[i16]) -> Vec<u8> {
    let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&SAMPLE_RATE.to_le_bytes());
    out.extend_from_slice(&(SAMPLE_RATE * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Versions and sign-off

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SaveBody {
    base_version: u32,
    sections: Vec<SubmittedSection>,
}

async fn save_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let save: SaveBody = parse_body(&headers, &body)?;
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, true)?;
        let (original, latest, previous) = current_note(store, &id)?;
        if store.is_signed(&id)? {
            return Err(StoreError::AlreadySigned { id }.into());
        }
        if save.base_version != latest {
            return Err(StoreError::VersionConflict {
                base: save.base_version,
                latest,
            }
            .into());
        }
        let next = note::apply_save(&original, &save.sections)?;
        let changes = note::diff(&previous, &next);
        let counts = note::count_changes(&changes);
        let body = serde_json::to_vec(&next).map_err(|_| ApiError::internal("saving"))?;
        let changes_json =
            serde_json::to_string(&changes).map_err(|_| ApiError::internal("saving"))?;
        let version = store.save_note_version(
            &id,
            save.base_version,
            &body,
            &changes_json,
            counts,
            &who.actor(),
        )?;
        Ok(Json(json!({ "version": version, "diff": changes })))
    })
    .await
}

async fn list_versions(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Vec<Value>>> {
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, false)?;
        let history = store.note_version_history(&id)?;
        Ok(Json(
            history
                .into_iter()
                .map(|(version, at_ms, author, changes)| {
                    json!({
                        "version": version,
                        "created_at_ms": at_ms,
                        "author_id": author.strip_prefix("user:").unwrap_or(&author),
                        "changes": serde_json::from_str::<Value>(&changes).unwrap_or(Value::Null),
                    })
                })
                .collect(),
        ))
    })
    .await
}

async fn one_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath((id, n)): UrlPath<(String, u32)>,
) -> ApiResult<Json<Value>> {
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, false)?;
        if n == 0 {
            let (original, _, _) = current_note(store, &id)?;
            return Ok(Json(
                json!({ "version": 0, "sections": original.sections, "diff": [] }),
            ));
        }
        let v = store
            .note_version(&id, n)?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such version"))?;
        let note = parse_note(&v.body, &id)?;
        Ok(Json(json!({
            "version": v.version,
            "sections": note.sections,
            "diff": serde_json::from_str::<Value>(&v.changes_json).unwrap_or(Value::Null),
        })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignBody {
    version: u32,
}

async fn sign(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let sign: SignBody = parse_body(&headers, &body)?;
    let document = authed(&state, &headers, move |store, inner, who| {
        check_encounter(store, &who, &id, true)?;
        if store.is_signed(&id)? {
            return Err(StoreError::AlreadySigned { id }.into());
        }
        let (original, latest, note) = current_note(store, &id)?;
        if sign.version != latest {
            return Err(StoreError::VersionConflict {
                base: sign.version,
                latest,
            }
            .into());
        }
        let draft =
            load_draft(store, &id)?.ok_or_else(|| ApiError::internal("reading the draft"))?;
        let encounter = store.load_encounter(&id)?;
        // Signing the draft untouched still records it as a version: the draft itself may be
        // removed by retention later, the signed version never is.
        let latest = if latest == 0 {
            let body = serde_json::to_vec(&note).map_err(|_| ApiError::internal("saving"))?;
            store.save_note_version(&id, 0, &body, "[]", Default::default(), &who.actor())?
        } else {
            latest
        };
        let text = note.render_text();
        let ai = note.ai_statements();
        let signed = inner.signer.sign(
            &text,
            AttestationFields {
                clinician_id: who.user.id.clone(),
                audio_sha256: encounter.audio_sha256.clone(),
                models: models_used(store, &id, &draft)?,
                template_id: draft.draft.template.clone(),
                prompt_version: draft.draft.prompt_version.clone(),
                ai_statements: ai.clone(),
            },
        )?;
        let document = signed.to_json()?;
        let signed_at_ms = crate::store::now_ms();
        let draft_text = original.render_text();
        let quality = QualitySignal {
            encounter_id: id.clone(),
            clinician_id: who.user.id.clone(),
            specialty: who.user.specialty.clone(),
            template: draft.draft.template.clone(),
            ai_statements: (ai.accepted.len() + ai.modified.len() + ai.rejected.len()) as u64,
            accepted: ai.accepted.len() as u64,
            modified: ai.modified.len() as u64,
            rejected: ai.rejected.len() as u64,
            added: note.added_statements() as u64,
            edit_distance: note::edit_distance(&draft_text, &text),
            draft_chars: draft_text.chars().count() as u64,
            sections: note.sections.len() as u64,
            flagged_sections: note.flagged_sections() as u64,
            drafted_at_ms: parse_rfc3339_ms(&draft.created_at).unwrap_or(signed_at_ms),
            signed_at_ms,
        };
        store.save_signed_note(
            &id,
            &NewSignedNote {
                kind: SignedKind::Original,
                signed_at_ms,
                clinician_id: who.user.id.clone(),
                note_sha256: signed.attestation().note_sha256.clone(),
                document: document.clone(),
                version: Some(latest),
                ai: crate::store::review::ChangeCounts {
                    accepted: quality.accepted,
                    edited: quality.modified,
                    rejected: quality.rejected,
                    added: quality.added,
                },
            },
            Some(&quality),
            &inner.destinations,
        )?;
        tracing::info!(encounter = %id, version = latest, "note signed");
        Ok(document)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], document).into_response())
}

/// The speech model recorded by the pipeline, then the drafting model if one wrote any of the
/// draft ("none" for an extraction-only draft).
fn models_used(store: &Store, id: &str, draft: &LoadedDraft) -> ApiResult<Vec<ModelRef>> {
    let mut models = Vec::new();
    for event in store.load_events(id)? {
        if event.stage != crate::pipeline::ASR_MODEL_STAGE {
            continue;
        }
        let detail: Value = serde_json::from_str(&event.detail_json).unwrap_or(Value::Null);
        if let (Some(name), Some(sha256)) = (detail["model"].as_str(), detail["sha256"].as_str()) {
            models.push(ModelRef {
                name: name.to_owned(),
                sha256: sha256.to_owned(),
            });
        }
    }
    if draft.model != "none" {
        models.push(ModelRef {
            name: draft.model.clone(),
            sha256: draft.model_sha256.clone(),
        });
    }
    Ok(models)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddendumBody {
    text: String,
}

async fn addendum(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let add: AddendumBody = parse_body(&headers, &body)?;
    let chars = add.text.trim().chars().count();
    if chars == 0 || chars > MAX_ADDENDUM_CHARS {
        return Err(ApiError::bad_request(format!(
            "an addendum needs 1 to {MAX_ADDENDUM_CHARS} characters"
        )));
    }
    let document = authed(&state, &headers, move |store, inner, who| {
        check_encounter(store, &who, &id, true)?;
        let documents = store.signed_notes(&id)?;
        let Some(original) = documents.first() else {
            return Err(StoreError::NotSigned { id }.into());
        };
        let original = attest::verify_signed_note(original, Some(inner.signer.public_key()))?
            .into_signed_note();
        let a = original.attestation();
        let signed = inner.signer.sign_addendum(
            &original,
            add.text.trim(),
            AttestationFields {
                clinician_id: who.user.id.clone(),
                audio_sha256: a.audio_sha256.clone(),
                models: a.models.clone(),
                template_id: a.template_id.clone(),
                prompt_version: a.prompt_version.clone(),
                ai_statements: Default::default(),
            },
        )?;
        let document = signed.to_json()?;
        store.save_signed_note(
            &id,
            &NewSignedNote {
                kind: SignedKind::Addendum,
                signed_at_ms: crate::store::now_ms(),
                clinician_id: who.user.id.clone(),
                note_sha256: signed.attestation().note_sha256.clone(),
                document: document.clone(),
                version: None,
                ai: Default::default(),
            },
            None,
            &inner.destinations,
        )?;
        Ok(document)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], document).into_response())
}

async fn signed_notes(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Vec<Value>>> {
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, false)?;
        let documents = store.signed_notes(&id)?;
        store.record_view(&id, &who.user.id, AuditAction::NoteViewed, None)?;
        documents
            .iter()
            .map(|d| {
                serde_json::from_str(d).map_err(|_| ApiError::internal("reading a signed note"))
            })
            .collect::<ApiResult<Vec<Value>>>()
            .map(Json)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    user_id: String,
}

async fn assign_reviewer(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let assign: AssignBody = parse_body(&headers, &body)?;
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, true)?;
        let reviewer = store.user_by_id(&assign.user_id)?;
        if reviewer.as_ref().map(|u| u.role.as_str()) != Some(Role::Reviewer.as_str()) {
            return Err(ApiError::bad_request("user_id must be a reviewer's id"));
        }
        store.assign_reviewer(&id, &assign.user_id, &who.actor())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Audit, quality, users

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    after_seq: Option<i64>,
    limit: Option<u32>,
}

async fn audit_rows(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::bad_request(
            "after_seq and limit must be whole numbers",
        ));
    };
    authed(&state, &headers, move |store, _, who| {
        who.require(Permission::ReadAudit)?;
        let rows = store.audit_rows(
            query.after_seq.unwrap_or(0),
            query.limit.unwrap_or(200).min(1000),
        )?;
        store.record_view("audit", &who.user.id, AuditAction::AuditRead, None)?;
        Ok(Json(json!(rows)))
    })
    .await
}

async fn audit_verify(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    authed(&state, &headers, |store, _, who| {
        who.require(Permission::ReadAudit)?;
        let report = store.verify_audit()?;
        Ok(Json(json!({
            "entries": report.checked,
            "intact": report.is_intact(),
            "first_break": report.first_break.map(|b| json!({
                "seq": b.seq, "reason": b.reason.to_string(),
            })),
        })))
    })
    .await
}

async fn quality_report(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<quality::QualityReport>> {
    authed(&state, &headers, |store, _, who| {
        who.require(Permission::ReadQuality)?;
        Ok(Json(quality::report(&store.quality_signals()?)))
    })
    .await
}

async fn list_users(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    authed(&state, &headers, |store, _, who| {
        who.require(Permission::ManageUsers)?;
        let now = crate::store::now_ms();
        Ok(Json(json!(store
            .list_users()?
            .iter()
            .map(|u| json!({
                "id": u.id, "username": u.username, "role": u.role,
                "specialty": u.specialty,
                "locked": u.locked_until_ms.is_some_and(|t| t > now),
                "disabled": u.disabled,
            }))
            .collect::<Vec<_>>())))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    username: String,
    password: String,
    role: String,
    #[serde(default)]
    specialty: Option<String>,
}

async fn create_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new: NewUserBody = parse_body(&headers, &body)?;
    authed(&state, &headers, move |store, _, who| {
        who.require(Permission::ManageUsers)?;
        let role = Role::parse(&new.role).ok_or_else(|| {
            ApiError::bad_request("role must be clinician, reviewer, admin or auditor")
        })?;
        auth::check_username(&new.username).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let hash =
            auth::hash_password(&new.password).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let id = store.create_user(
            &NewUser {
                username: new.username,
                role: role.as_str().to_owned(),
                specialty: new.specialty,
                password_hash: hash,
            },
            &who.actor(),
        )?;
        Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
    })
    .await
}

/// Prometheus text format. Counts by state only: labels never carry ids or patient content,
/// so it needs no login (a scraper cannot sign in).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    state: Option<String>,
}

/// The outbox for IT: ids, states, attempts and status codes; never a note.
async fn outbox_items(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<OutboxQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Ok(Query(query)) = query else {
        return Err(ApiError::bad_request(
            "state must be one of the delivery states",
        ));
    };
    authed(&state, &headers, move |store, _, who| {
        who.require(Permission::ManageDeliveries)?;
        let wanted = match query.state.as_deref() {
            None => None,
            Some(name) => Some(DeliveryState::parse_name(name).ok_or_else(|| {
                ApiError::bad_request(
                    "state must be queued, sending, sent, confirmed, dead or cancelled",
                )
            })?),
        };
        Ok(Json(json!(store.outbox_items(wanted, 1000)?)))
    })
    .await
}

async fn retry_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(item): UrlPath<String>,
) -> ApiResult<StatusCode> {
    resolve_delivery(state, headers, item, true).await
}

async fn cancel_delivery(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(item): UrlPath<String>,
) -> ApiResult<StatusCode> {
    resolve_delivery(state, headers, item, false).await
}

async fn resolve_delivery(
    state: AppState,
    headers: HeaderMap,
    item: String,
    retry: bool,
) -> ApiResult<StatusCode> {
    authed(&state, &headers, move |store, _, who| {
        who.require(Permission::ManageDeliveries)?;
        store.resolve_dead_delivery(&item, retry, &who.actor())?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// Where an encounter's signed notes are on their way to the chart.
fn delivery_json(store: &Store, id: &str) -> ApiResult<Value> {
    Ok(json!(store
        .deliveries_of(id)?
        .iter()
        .map(|d| json!({
            "signed_seq": d.signed_seq,
            "destination": d.destination,
            "state": d.state,
            "attempts": d.attempts,
            "last_status": d.last_status,
        }))
        .collect::<Vec<_>>()))
}

async fn delivery_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<Value>> {
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &id, false)?;
        Ok(Json(delivery_json(store, &id)?))
    })
    .await
}

/// Server-sent events: the delivery status each time it changes, so the page updates without
/// polling. The stream ends once every delivery is confirmed, dead or cancelled (or after an
/// hour); the browser's EventSource reconnects if the page is still open.
async fn delivery_events(
    State(state): State<AppState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Response> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let check_id = id.clone();
    authed(&state, &headers, move |store, _, who| {
        check_encounter(store, &who, &check_id, false)
    })
    .await?;
    // Each step waits for the status to change, then yields it; it ends after the final
    // state has been sent.
    let stream = futures_util::stream::unfold(
        (state, id, None::<String>, false, std::time::Instant::now()),
        |(state, id, last, done, started)| async move {
            if done {
                return None;
            }
            loop {
                if started.elapsed() > std::time::Duration::from_secs(3600) {
                    return None;
                }
                let lookup = id.clone();
                let current = with_store(&state, move |store, _| delivery_json(store, &lookup))
                    .await
                    .ok()?;
                let finished = current.as_array().is_some_and(|items| {
                    !items.is_empty()
                        && items.iter().all(|d| {
                            matches!(
                                d["state"].as_str(),
                                Some("confirmed" | "dead" | "cancelled")
                            )
                        })
                });
                let text = current.to_string();
                if last.as_deref() != Some(text.as_str()) {
                    let event = Event::default().event("delivery").data(text.clone());
                    return Some((
                        Ok::<Event, std::convert::Infallible>(event),
                        (state, id, Some(text), finished, started),
                    ));
                }
                if finished {
                    return None;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Counts of a retention run, for the admin (no ids of patients, no content).
pub fn retention_json(report: &RetentionReport) -> Value {
    json!({
        "audio_encounters": report.audio_encounters,
        "audio_chunks": report.audio_chunks,
        "transcript_encounters": report.transcript_encounters,
        "transcript_segments": report.transcript_segments,
        "unsigned_drafts": report.unsigned_drafts,
        "signed_drafts": report.signed_drafts,
    })
}

async fn run_retention(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    authed(&state, &headers, |store, inner, who| {
        who.require(Permission::DeleteRecords)?;
        let report = store.apply_retention(&inner.retention, crate::store::now_ms())?;
        tracing::info!(user = %who.user.id, "retention run requested");
        Ok(Json(retention_json(&report)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletionBody {
    #[serde(default)]
    patient_ref: Option<String>,
    #[serde(default)]
    encounter_id: Option<String>,
}

/// A deletion request (a patient's, or one encounter): crypto-shredded by the store, audited
/// by id. The admin never sees what was deleted, only how much.
async fn delete_records(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let request: DeletionBody = parse_body(&headers, &body)?;
    authed(&state, &headers, move |store, _, who| {
        who.require(Permission::DeleteRecords)?;
        let deleted = match (request.patient_ref, request.encounter_id) {
            (Some(patient), None) if !patient.trim().is_empty() => {
                store.delete_patient(patient.trim(), &who.actor())?
            }
            (None, Some(encounter)) => {
                store.delete_encounter(&encounter, &who.actor())?;
                1
            }
            _ => {
                return Err(ApiError::bad_request(
                    "give exactly one of patient_ref or encounter_id",
                ))
            }
        };
        Ok(Json(json!({ "encounters_deleted": deleted })))
    })
    .await
}

/// Milliseconds since the epoch of the store's `YYYY-MM-DDTHH:MM:SS.mmmZ` timestamps.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let num = |range: std::ops::Range<usize>| s.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let millis = if s.as_bytes().get(19) == Some(&b'.') {
        num(20..23)?
    } else {
        0
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_timestamps_parse_to_epoch_milliseconds() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-23T03:40:55.123Z"),
            Some(1_795_405_255_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T12:00:00Z"),
            Some(951_825_600_000)
        );
        assert_eq!(parse_rfc3339_ms("garbage"), None);
    }

    #[test]
    fn wav_header_describes_the_samples() {
        let wav = wav_bytes(&[0, 1, -1, i16::MAX]);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(wav.len(), 44 + 8);
        let reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
        assert_eq!(reader.spec().sample_rate, 16_000);
        assert_eq!(reader.spec().channels, 1);
        let samples: Vec<i16> = reader.into_samples().map(|s| s.unwrap()).collect();
        assert_eq!(samples, vec![0, 1, -1, i16::MAX]);
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; edge_scribe_session=abc123; c=d"),
        );
        assert_eq!(session_token(&headers).as_deref(), Some("abc123"));
        assert_eq!(session_token(&HeaderMap::new()), None);
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BadgeCodeBody {
    code: String,
}

/// A clinician confirms the pairing code IT gave for their badge. The code is bound to the
/// clinician it was made for, so another account cannot use it.
async fn confirm_badge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: BadgeCodeBody = parse_body(&headers, &body)?;
    authed(&state, &headers, move |store, _, who| {
        who.require(Permission::PairOwnBadge)?;
        let code: String = body.code.chars().filter(char::is_ascii_digit).collect();
        match store.confirm_badge_pairing(&auth::token_digest(&code), &who.user.id)? {
            Some(badge_id) => Ok(Json(json!({ "badge_id": badge_id, "paired": true }))),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "that pairing code is unknown, expired or meant for someone else; ask IT for a \
                 new one",
            )),
        }
    })
    .await
}
