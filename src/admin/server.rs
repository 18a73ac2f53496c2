//! The admin API's routes and handlers, and the HTTPS accept loop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;

use super::configs::{self, Changes};
use super::tls::{self, AdminTlsError, ServerIdentity};
use super::{ApplyRequest, ComponentState, Runtime, ADDR_FILE_NAME};
use crate::auth::{self, Permission, Role};
use crate::config::{AdminSettings, Config};
use crate::metrics::{self, Metrics, METRICS};
use crate::store::admin::ConfigState;
use crate::store::outbox::DeliveryState;
use crate::store::{Actor, AuditAction, AuditDetail, AuditEntry, Store, StoreError};

const OPENAPI: &str = include_str!("../../docs/admin-openapi.json");
/// A pairing code is typed by a clinician: short, and alive for minutes only.
const PAIRING_CODE_DIGITS: usize = 8;
const PAIRING_CODE_TTL_MS: i64 = 10 * 60 * 1000;
/// Largest config accepted, in bytes.
const MAX_CONFIG_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot listen on {addr}: {source}; another program may hold the port, or set \
         admin.listen to a free address"
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
    Tls(#[from] AdminTlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the config file {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Mutex<Store>,
    settings: AdminSettings,
    data_dir: PathBuf,
    /// The file the daemon was started with; pushed configs are written there.
    config_path: Option<PathBuf>,
    runtime: Runtime,
    /// One config change at a time, from validation to health check.
    applying: tokio::sync::Mutex<()>,
    started: Instant,
}

impl AdminState {
    /// Opens the admin state and records the running config file as a version if it is not
    /// the current one (first start, or an edit by hand while the service was stopped).
    pub fn open(
        config: &Config,
        config_path: Option<PathBuf>,
        runtime: Runtime,
    ) -> Result<AdminState, AdminError> {
        let store = Store::open(&config.data_dir)?;
        if let Some(path) = &config_path {
            let text = std::fs::read_to_string(path).map_err(|source| AdminError::ConfigFile {
                path: path.clone(),
                source,
            })?;
            let sha = sha256_hex(text.as_bytes());
            let current = store.current_config()?;
            if current.is_none_or(|c| c.sha256 != sha) {
                let version = store.record_config_version(
                    &text,
                    &sha,
                    ConfigState::Applied,
                    None,
                    &Actor::System,
                )?;
                tracing::info!(version, "config file recorded as the current version");
            }
        }
        Ok(AdminState {
            inner: Arc::new(Inner {
                store: Mutex::new(store),
                settings: config.admin.clone(),
                data_dir: config.data_dir.clone(),
                config_path,
                runtime,
                applying: tokio::sync::Mutex::new(()),
                started: Instant::now(),
            }),
        })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A bound admin listener with its TLS configuration.
pub struct AdminServer {
    pub listener: tokio::net::TcpListener,
    pub local_addr: SocketAddr,
    pub identity: ServerIdentity,
    tls: Arc<rustls::ServerConfig>,
    state: AdminState,
}

/// Binds the admin port (TLS identity made or loaded first) and records the bound address in
/// `<data_dir>/admin.addr`.
pub async fn bind(addr: SocketAddr, state: AdminState) -> Result<AdminServer, AdminError> {
    let settings = state.inner.settings.clone();
    let data_dir = state.inner.data_dir.clone();
    let identity = tls::server_identity(&settings, &data_dir)?;
    let tls = tls::server_config(&settings, &identity)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { addr, source })?;
    let path = data_dir.join(ADDR_FILE_NAME);
    let tmp = data_dir.join(format!(".{ADDR_FILE_NAME}.tmp"));
    std::fs::write(&tmp, local_addr.to_string())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| AdminError::AddrFile { path, source })?;
    tracing::info!(
        addr = %local_addr,
        certificate_sha256 = %identity.fingerprint,
        client_certificates = settings.client_ca.is_some(),
        "admin API listening (HTTPS)"
    );
    Ok(AdminServer {
        listener,
        local_addr,
        identity,
        tls,
        state,
    })
}

/// Serves HTTPS until `shutdown` completes; connections in flight get a few seconds to finish.
pub async fn serve(server: AdminServer, shutdown: impl Future<Output = ()> + Send + 'static) {
    let acceptor = tokio_rustls::TlsAcceptor::from(server.tls);
    let app = router(server.state);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = server.listener.accept() => {
                let (tcp, _peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin port: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let app = app.clone();
                connections.spawn(async move {
                    // A client that never finishes its handshake must not hold a task forever.
                    let tls = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(tcp),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, "admin port: TLS handshake refused");
                            return;
                        }
                        Err(_) => return,
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "admin port: connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/admin/v1/openapi.json", get(openapi))
        .route("/admin/v1/live", get(live))
        .route("/admin/v1/ready", get(ready))
        .route("/admin/v1/metrics", get(metrics_text))
        .route("/admin/v1/token", post(issue_token))
        .route("/admin/v1/config", get(current_config).put(push_config))
        .route("/admin/v1/config/versions", get(config_versions))
        .route("/admin/v1/config/versions/{version}", get(config_version))
        .route("/admin/v1/config/rollback", post(roll_back_config))
        .route("/admin/v1/badges", get(list_badges).post(start_pairing))
        .route("/admin/v1/badges/{badge}", delete(unpair_badge))
        .route("/admin/v1/devices", get(list_devices))
        .route("/admin/v1/rooms", get(list_rooms))
        .route("/admin/v1/rooms/{room}", put(assign_room))
        .route("/admin/v1/models", get(list_models))
        .route("/admin/v1/models/install", post(install_model))
        .route("/admin/v1/models/active", put(switch_model))
        .route("/admin/v1/log-level", get(log_level).put(set_log_level))
        .route("/admin/v1/support-bundle", get(support_bundle))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), audit_calls))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    problems: Vec<String>,
    extra: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            problems: Vec::new(),
            extra: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "send an admin token: Authorization: Bearer <token> (POST /admin/v1/token)",
        )
    }
    fn internal(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed on the box; the log has the details"),
        )
    }
    fn with_problems(mut self, problems: Vec<String>) -> ApiError {
        self.problems = problems;
        self
    }
    fn with_extra(mut self, extra: Value) -> ApiError {
        self.extra = Some(extra);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.problems.is_empty() {
            body["problems"] = json!(self.problems);
        }
        if let (Some(Value::Object(extra)), Some(map)) = (self.extra, body.as_object_mut()) {
            map.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match &e {
            StoreError::UsernameTaken => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            _ => {
                tracing::error!(error = %e, "admin request failed in the store");
                ApiError::internal("the database operation")
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------------
// Plumbing

async fn blocking<T, F>(state: &AdminState, f: F) -> ApiResult<T>
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

pub(crate) fn parse_json<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> ApiResult<T> {
    crate::http_body::json(headers, body).map_err(|e| ApiError::new(e.status, e.message))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

fn token_ttl_ms(inner: &Inner) -> i64 {
    i64::try_from(inner.settings.token_ttl.as_millis()).unwrap_or(i64::MAX)
}

/// The admin behind a bearer token.
fn admin_of(store: &Store, inner: &Inner, token: Option<&str>) -> ApiResult<String> {
    let token = token.ok_or_else(ApiError::unauthorized)?;
    let user = store
        .session_user(&auth::token_digest(token), token_ttl_ms(inner))?
        .ok_or_else(ApiError::unauthorized)?;
    let allowed = Role::parse(&user.role).is_some_and(|r| r.may(Permission::ConfigureBox));
    if allowed {
        Ok(user.id)
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only an IT admin account may use the admin port",
        ))
    }
}

/// The admin behind the request's token, or the 401/403 answer.
async fn ensure_admin(state: &AdminState, headers: &HeaderMap) -> ApiResult<Actor> {
    as_admin(state, headers, |_, _, actor| Ok(actor)).await
}

/// Runs `f` for an authenticated admin, on the blocking pool.
async fn as_admin<T, F>(state: &AdminState, headers: &HeaderMap, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store, &Inner, Actor) -> ApiResult<T> + Send + 'static,
{
    let token = bearer(headers);
    blocking(state, move |store, inner| {
        let id = admin_of(store, inner, token.as_deref())?;
        f(store, inner, Actor::User(id))
    })
    .await
}

/// Audits every call but the unauthenticated probes: who (user id, or `system` for a call
/// without a valid token), the route template (never the ids in the path) and the status.
async fn audit_calls(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = request.method().clone();
    let token = bearer(request.headers());
    let response = next.run(request).await;
    let probe = matches!(
        route.as_deref(),
        Some("/admin/v1/live" | "/admin/v1/ready" | "/admin/v1/metrics" | "/admin/v1/openapi.json")
    );
    if probe {
        return response;
    }
    let status = response.status().as_u16();
    let route = route.unwrap_or_else(|| "unknown route".into());
    let recorded = blocking(&state, move |store, inner| {
        let actor = match token
            .as_deref()
            .map(|t| store.session_user(&auth::token_digest(t), token_ttl_ms(inner)))
        {
            Some(Ok(Some(user))) => Actor::User(user.id),
            _ => Actor::System,
        };
        store.append_audit(&AuditEntry {
            actor,
            action: AuditAction::AdminRequest,
            subject: "admin".into(),
            detail: AuditDetail {
                artifact: Some(format!("{method} {route}")),
                status: Some(status.to_string()),
                ..AuditDetail::default()
            },
        })?;
        Ok(())
    })
    .await;
    if recorded.is_err() {
        // An unaudited admin call must not look successful.
        return ApiError::internal("auditing the call").into_response();
    }
    response
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such admin endpoint")
}

// ---------------------------------------------------------------------------------------------
// Probes

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn live(State(state): State<AdminState>) -> Json<Value> {
    Json(json!({
        "status": "live",
        "uptime_s": state.inner.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
    }))
}

/// Readiness: the store answers, and every configured component is up. A processing thread
/// silent for over a minute (a hung encounter) makes the box unready.
fn readiness(store: &Store, inner: &Inner) -> (bool, Value) {
    let health = &inner.runtime.health;
    let store_ok = store.outbox_counts().is_ok();
    let processing = health.processing();
    let review = health.review();
    let sender = health.sender();
    let settled =
        |c: ComponentState| !matches!(c, ComponentState::Failed | ComponentState::Starting);
    let ready = store_ok
        && processing == ComponentState::Up
        && !health.draining()
        && settled(review)
        && settled(sender);
    (
        ready,
        json!({
            "ready": ready,
            "checks": {
                "store": if store_ok { "up" } else { "failed" },
                "processing": match processing {
                    ComponentState::Failed => "stalled",
                    other => other.as_str(),
                },
                "review": review.as_str(),
                "sender": sender.as_str(),
                "draining": health.draining(),
            }
        }),
    )
}

async fn ready(State(state): State<AdminState>) -> ApiResult<Response> {
    let (ok, body) = blocking(&state, |store, inner| Ok(readiness(store, inner))).await?;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

/// Disk space of the file system holding `dir`: (available, total) bytes.
pub fn disk_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated string and `stat` points to writable memory of
    // the right size; statvfs writes the struct only on success, which we check first.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // The field types differ between platforms (u64 here); widen without truncating, since a
    // block count above 2^32 is an ordinary 16 TiB disk.
    #[allow(clippy::unnecessary_cast)]
    let (unit, available, total) = (
        (stat.f_frsize as u64).max(1),
        stat.f_bavail as u64,
        stat.f_blocks as u64,
    );
    Some((available.saturating_mul(unit), total.saturating_mul(unit)))
}

/// The whole `/metrics` text. Labels are fixed names (states, components), never data.
pub fn render_metrics(store: &Store, data_dir: &Path) -> Result<String, StoreError> {
    let mut out = metrics::render_process_series();
    out.push_str(
        "# HELP edge_scribe_outbox_items Signed notes in the outbox, by delivery state.\n\
         # TYPE edge_scribe_outbox_items gauge\n",
    );
    let counts = store.outbox_counts()?;
    for s in DeliveryState::ALL {
        let n = counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n);
        out.push_str(&format!(
            "edge_scribe_outbox_items{{state=\"{}\"}} {n}\n",
            s.as_str()
        ));
    }
    let dead = counts
        .iter()
        .find(|(c, _)| *c == DeliveryState::Dead)
        .map_or(0, |(_, n)| *n);
    metrics::write_series(
        &mut out,
        "edge_scribe_outbox_dead_letters",
        "gauge",
        "Deliveries that need an admin (alert when > 0).",
        dead,
    );
    if let Some((available, total)) = disk_space(data_dir) {
        metrics::write_series(
            &mut out,
            "edge_scribe_disk_available_bytes",
            "gauge",
            "Free space for the data directory.",
            available,
        );
        metrics::write_series(
            &mut out,
            "edge_scribe_disk_total_bytes",
            "gauge",
            "Size of the data directory's file system.",
            total,
        );
    }
    let database_bytes: u64 = ["edge-scribe.db", "edge-scribe.db-wal"]
        .iter()
        .filter_map(|name| std::fs::metadata(store.path().with_file_name(name)).ok())
        .map(|m| m.len())
        .sum();
    metrics::write_series(
        &mut out,
        "edge_scribe_database_bytes",
        "gauge",
        "Size of the encrypted database and its write-ahead log.",
        database_bytes,
    );
    let version = store.current_config()?.map_or(0, |c| c.version);
    metrics::write_series(
        &mut out,
        "edge_scribe_config_version",
        "gauge",
        "The config version running now.",
        version,
    );
    metrics::write_series(
        &mut out,
        "edge_scribe_badges_paired",
        "gauge",
        "Badges paired to clinicians.",
        store.badges()?.len(),
    );
    Ok(out)
}

async fn metrics_text(State(state): State<AdminState>) -> ApiResult<Response> {
    let text = blocking(&state, |store, inner| {
        Ok(render_metrics(store, &inner.data_dir)?)
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenBody {
    username: String,
    password: String,
}

async fn issue_token(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let body: TokenBody = parse_json(&headers, &body)?;
    blocking(&state, move |store, inner| {
        let user = auth::login::check_password(store, &body.username, &body.password).map_err(
            |e| match e {
                auth::login::LoginError::Store(e) => e.into(),
                refused if refused.is_lockout() => {
                    ApiError::new(StatusCode::LOCKED, refused.to_string())
                }
                refused => ApiError::new(StatusCode::UNAUTHORIZED, refused.to_string()),
            },
        )?;
        if !Role::parse(&user.role).is_some_and(|r| r.may(Permission::ConfigureBox)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "only an IT admin account may use the admin port",
            ));
        }
        let token = auth::new_session_token().map_err(|_| ApiError::internal("the token"))?;
        let ttl = token_ttl_ms(inner);
        store.create_session(&auth::token_digest(&token), &user.id, ttl)?;
        Ok(Json(json!({
            "token": token,
            "token_type": "Bearer",
            "expires_in_s": ttl / 1000,
        })))
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Config

async fn current_config(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    as_admin(&state, &headers, |store, inner, _| {
        let current = store.current_config()?.ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "the daemon was started without a config file, so there is no version yet",
            )
        })?;
        Ok(Json(json!({
            "version": current.version,
            "sha256": current.sha256,
            "created_at_ms": current.created_at_ms,
            "path": inner.config_path.as_ref().map(|p| p.display().to_string()),
            "toml": current.toml,
        })))
    })
    .await
}

async fn config_versions(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    as_admin(&state, &headers, |store, _, _| {
        Ok(Json(json!({ "versions": store.config_versions()? })))
    })
    .await
}

async fn config_version(
    State(state): State<AdminState>,
    headers: HeaderMap,
    version: Result<UrlPath<String>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let UrlPath(version) =
        version.map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))?;
    let version: u64 = version
        .parse()
        .map_err(|_| ApiError::bad_request("a config version is a positive number"))?;
    as_admin(&state, &headers, move |store, _, _| {
        let found = store
            .config_version(version)?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such config version"))?;
        let previous = match version.checked_sub(1) {
            Some(p) if p > 0 => store.config_version(p)?,
            _ => None,
        };
        let diff = configs::unified_diff(
            previous.as_ref().map_or("", |p| p.toml.as_str()),
            &found.toml,
            &format!("version {}", version.saturating_sub(1)),
            &format!("version {version}"),
        );
        let mut body = serde_json::to_value(&found).map_err(|_| ApiError::internal("encoding"))?;
        body["toml"] = json!(found.toml);
        body["diff_from_previous"] = json!(diff);
        Ok(Json(body))
    })
    .await
}

pub(super) fn config_text(body: &Bytes) -> ApiResult<String> {
    if body.len() > MAX_CONFIG_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a config is at most {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the config is not UTF-8"))
}

async fn push_config(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // Who asks first: a caller without a valid token learns nothing about the body's fate.
    let actor = ensure_admin(&state, &headers).await?;
    let is_toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/toml") || v.starts_with("text/plain"));
    if !is_toml {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the whole config as application/toml",
        ));
    }
    let text = config_text(&body)?;
    apply_config(&state, text, actor).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RollbackBody {
    version: u64,
}

async fn roll_back_config(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // The token first: a caller without one learns nothing about bodies.
    ensure_admin(&state, &headers).await?;
    let body: RollbackBody = parse_json(&headers, &body)?;
    let (actor, text) = as_admin(&state, &headers, move |store, _, actor| {
        let found = store
            .config_version(body.version)?
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such config version"))?;
        Ok((actor, found.toml))
    })
    .await?;
    apply_config(&state, text, actor).await
}

fn write_config_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("toml.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(&tmp, meta.permissions())?;
    }
    std::fs::rename(&tmp, path)
}

/// Validates, records, writes and applies a config, and rolls it back when the daemon reports
/// it unhealthy. The answer says what changed, or lists every problem.
async fn apply_config(state: &AdminState, text: String, actor: Actor) -> ApiResult<Json<Value>> {
    let inner = state.inner.clone();
    let _one_at_a_time = inner.applying.lock().await;
    let Some(config_path) = inner.config_path.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the daemon was started without a config file; start it with --config FILE to \
             manage its config here",
        ));
    };
    let base = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let current = inner.runtime.current.borrow().clone();
    let sha = sha256_hex(text.as_bytes());
    let checked = {
        let text = text.clone();
        let current = current.clone();
        tokio::task::spawn_blocking(move || {
            let config = configs::parse(&text, &base)?;
            let devices = crate::capture::all_devices(&config);
            let problems = configs::check_environment(&config, &current, &devices);
            if problems.is_empty() {
                Ok(config)
            } else {
                Err(problems)
            }
        })
        .await
        .map_err(|_| ApiError::internal("checking the config"))?
    };
    let new = match checked {
        Ok(config) => Arc::new(config),
        Err(problems) => {
            let reason = problems.join("; ");
            let version = {
                let (text, sha, actor) = (text.clone(), sha.clone(), actor.clone());
                blocking(state, move |store, _| {
                    Ok(store.record_config_version(
                        &text,
                        &sha,
                        ConfigState::Rejected,
                        Some(&reason),
                        &actor,
                    )?)
                })
                .await?
            };
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "config rejected ({} problem(s)); nothing was changed",
                    problems.len()
                ),
            )
            .with_problems(problems)
            .with_extra(json!({ "version": version, "state": "rejected" })));
        }
    };
    let changes: Changes = configs::changes(&current, &new);
    let previous = blocking(state, |store, _| Ok(store.current_config()?)).await?;
    if let Err(e) = write_config_file(&config_path, &text) {
        tracing::error!(error = %e, path = %config_path.display(), "cannot write the config file");
        return Err(ApiError::internal("writing the config file"));
    }
    let version = {
        let (text, sha, actor) = (text.clone(), sha.clone(), actor.clone());
        blocking(state, move |store, _| {
            Ok(store.record_config_version(&text, &sha, ConfigState::Applied, None, &actor)?)
        })
        .await?
    };
    Metrics::add(&METRICS.config_applies, 1);
    let problems = ask_daemon(&inner.runtime, new, inner.settings.health_check).await;
    if problems.is_empty() {
        tracing::info!(version, "config applied and healthy");
        return Ok(Json(json!({
            "version": version,
            "sha256": sha,
            "state": "applied",
            "changes": changes,
        })));
    }
    // Unhealthy: put the previous version back, file and running state, and say why.
    Metrics::add(&METRICS.config_rollbacks, 1);
    let reason = format!("health check failed: {}", problems.join("; "));
    tracing::error!(version, reason = %reason, "config rolled back");
    if let Some(previous) = &previous {
        if let Err(e) = write_config_file(&config_path, &previous.toml) {
            tracing::error!(error = %e, "cannot restore the previous config file");
        }
        let restored = Arc::new(current.as_ref().clone());
        let after = ask_daemon(&inner.runtime, restored, inner.settings.health_check).await;
        if !after.is_empty() {
            tracing::error!(problems = ?after, "the restored config is not healthy either");
        }
        let (previous_version, reason) = (previous.version, reason.clone());
        blocking(state, move |store, _| {
            Ok(store.roll_back_config(version, previous_version, &reason, &actor)?)
        })
        .await?;
    }
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "the config was applied but failed its health check, so the previous version was put \
         back",
    )
    .with_problems(problems)
    .with_extra(json!({
        "version": version,
        "state": "rolled_back",
        "rolled_back_to": previous.map(|p| p.version),
    })))
}

async fn ask_daemon(runtime: &Runtime, config: Arc<Config>, health_check: Duration) -> Vec<String> {
    let (reply, answer) = oneshot::channel();
    if runtime
        .apply
        .send(ApplyRequest { config, reply })
        .await
        .is_err()
    {
        return vec!["the daemon is shutting down".into()];
    }
    match tokio::time::timeout(health_check + Duration::from_secs(10), answer).await {
        Ok(Ok(problems)) => problems,
        Ok(Err(_)) => vec!["the daemon dropped the request".into()],
        Err(_) => vec!["the daemon did not report health in time".into()],
    }
}

/// Applies an edit of the current config text (rooms, models) as a new version.
async fn apply_edit<F>(state: &AdminState, actor: Actor, edit: F) -> ApiResult<Json<Value>>
where
    F: FnOnce(&str) -> Result<String, configs::EditError> + Send + 'static,
{
    let current = blocking(state, |store, _| Ok(store.current_config()?))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "the daemon was started without a config file; start it with --config FILE",
            )
        })?;
    let text = edit(&current.toml).map_err(|e| ApiError::bad_request(e.to_string()))?;
    apply_config(state, text, actor).await
}

// ---------------------------------------------------------------------------------------------
// Badges

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PairingBody {
    pub(super) badge_id: String,
    clinician: String,
}

fn pairing_code() -> ApiResult<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; PAIRING_CODE_DIGITS];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApiError::internal("making a pairing code"))?;
    // 250 is the largest multiple of 10 below 256: rejecting above it would be unbiased, but
    // for a ten-minute code the tiny bias of a plain modulo does not matter.
    Ok(bytes.iter().map(|b| char::from(b'0' + b % 10)).collect())
}

async fn start_pairing(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    // The token first: a caller without one learns nothing about bodies.
    ensure_admin(&state, &headers).await?;
    let body: PairingBody = parse_json(&headers, &body)?;
    if auth::check_username(&body.badge_id).is_err() {
        return Err(ApiError::bad_request(
            "badge_id is a device id or serial: 1-64 letters, digits, '.', '-' or '_'",
        ));
    }
    let code = pairing_code()?;
    let answer = as_admin(&state, &headers, move |store, _, actor| {
        let clinician = store
            .user_by_username(&body.clinician)?
            .filter(|u| Role::parse(&u.role) == Some(Role::Clinician) && !u.disabled)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no active clinician with that user name",
                )
            })?;
        let expires = crate::store::now_ms() + PAIRING_CODE_TTL_MS;
        store.start_badge_pairing(
            &body.badge_id,
            &clinician.id,
            &auth::token_digest(&code),
            expires,
            &actor,
        )?;
        Ok(json!({
            "badge_id": body.badge_id,
            "clinician": clinician.username,
            "code": code,
            "expires_at_ms": expires,
            "next": "the clinician enters the code at the review page (Pair a badge) to confirm",
        }))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn list_badges(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    as_admin(&state, &headers, |store, _, _| {
        let mut out = Vec::new();
        for badge in store.badges()? {
            let clinician = store
                .user_by_id(&badge.clinician_id)?
                .map(|u| u.username)
                .unwrap_or_default();
            let mut entry =
                serde_json::to_value(&badge).map_err(|_| ApiError::internal("encoding"))?;
            entry["clinician"] = json!(clinician);
            out.push(entry);
        }
        Ok(Json(json!({ "badges": out })))
    })
    .await
}

async fn unpair_badge(
    State(state): State<AdminState>,
    headers: HeaderMap,
    badge: Result<UrlPath<String>, PathRejection>,
) -> ApiResult<Response> {
    let UrlPath(badge) = badge.map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))?;
    as_admin(&state, &headers, move |store, _, actor| {
        if store.unpair_badge(&badge, &actor)? {
            Ok(StatusCode::NO_CONTENT.into_response())
        } else {
            Err(ApiError::new(StatusCode::NOT_FOUND, "no such paired badge"))
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Devices, rooms, models

async fn list_devices(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    as_admin(&state, &headers, |_, inner, _| {
        let config = inner.runtime.current.borrow().clone();
        let devices = crate::capture::all_devices(&config);
        let rooms: Vec<Value> = config
            .rooms
            .iter()
            .map(|r| json!({ "room": r.name, "array": r.array }))
            .collect();
        Ok(Json(json!({ "devices": devices, "assignments": rooms })))
    })
    .await
}

async fn list_rooms(State(state): State<AdminState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    as_admin(&state, &headers, |_, inner, _| {
        let config = inner.runtime.current.borrow().clone();
        let rooms: Vec<Value> = config
            .rooms
            .iter()
            .map(|r| json!({ "name": r.name, "array": r.array, "geometry": r.geometry }))
            .collect();
        Ok(Json(json!({ "rooms": rooms })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoomBody {
    pub(super) array: String,
    #[serde(default)]
    pub(super) geometry: Vec<[f32; 3]>,
}

async fn assign_room(
    State(state): State<AdminState>,
    headers: HeaderMap,
    room: Result<UrlPath<String>, PathRejection>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let UrlPath(room) = room.map_err(|_| ApiError::bad_request("the path is not valid UTF-8"))?;
    // The token first: a caller without one learns nothing about bodies.
    let actor = ensure_admin(&state, &headers).await?;
    let body: RoomBody = parse_json(&headers, &body)?;
    apply_edit(&state, actor, move |text| {
        configs::set_room(text, &room, &body.array, &body.geometry)
    })
    .await
}

async fn list_models(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Json<Value>> {
    as_admin(&state, &headers, |_, inner, _| {
        let config = inner.runtime.current.borrow().clone();
        let installed = crate::models::install::list_installed(&config.models_dir)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(Json(json!({
            "installed": installed,
            "active": { "asr": config.asr_model, "llm": config.llm_model },
        })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InstallBody {
    pub(super) name: String,
    pub(super) kind: crate::models::install::ModelKind,
    path: PathBuf,
    pub(super) sha256: String,
}

async fn install_model(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    // The token first: a caller without one learns nothing about bodies.
    let actor = ensure_admin(&state, &headers).await?;
    let body: InstallBody = parse_json(&headers, &body)?;
    let config = state.inner.runtime.current.borrow().clone();
    let request = crate::models::install::InstallRequest {
        name: body.name,
        kind: body.kind,
        source: body.path,
        sha256: body.sha256,
    };
    // Hashing, copying and the smoke test take seconds to minutes: off the async threads.
    let installed = tokio::task::spawn_blocking(move || {
        crate::models::install::install_local_model(&config, &request)
    })
    .await
    .map_err(|_| ApiError::internal("installing the model"))?
    .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let value = serde_json::to_value(&installed).map_err(|_| ApiError::internal("encoding"))?;
    let name = value["name"].as_str().unwrap_or_default().to_string();
    let sha = value["sha256"].as_str().map(str::to_string);
    blocking(&state, move |store, _| {
        store.append_audit(&AuditEntry {
            actor,
            action: AuditAction::ModelInstalled,
            subject: format!("model:{name}"),
            detail: AuditDetail {
                model: Some(name.clone()),
                model_sha256: sha,
                ..AuditDetail::default()
            },
        })?;
        Ok(())
    })
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "model": value }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SwitchBody {
    pub(super) role: crate::models::install::ModelKind,
    pub(super) name: String,
}

async fn switch_model(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // The token first: a caller without one learns nothing about bodies.
    let actor = ensure_admin(&state, &headers).await?;
    let body: SwitchBody = parse_json(&headers, &body)?;
    let config = state.inner.runtime.current.borrow().clone();
    let (role, name) = (body.role, body.name.clone());
    let smoke = tokio::task::spawn_blocking(move || {
        crate::models::install::smoke_test(&config, role, &name)
    })
    .await
    .map_err(|_| ApiError::internal("the smoke test"))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the model failed its smoke test, nothing was changed: {e}"),
        )
    })?;
    let key = match body.role {
        crate::models::install::ModelKind::Asr => "asr",
        crate::models::install::ModelKind::Llm => "llm",
    };
    let name = body.name;
    let Json(mut answer) = apply_edit(&state, actor, move |text| {
        configs::set_string(text, "models", key, &name)
    })
    .await?;
    answer["smoke_test"] = serde_json::to_value(smoke).unwrap_or(Value::Null);
    Ok(Json(answer))
}

// ---------------------------------------------------------------------------------------------
// Operations

async fn log_level(State(state): State<AdminState>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    as_admin(&state, &headers, |_, _, _| {
        Ok(Json(json!({ "level": crate::logging::current_filter() })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LevelBody {
    pub(super) level: String,
}

async fn set_log_level(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    // The token first: a caller without one learns nothing about bodies.
    ensure_admin(&state, &headers).await?;
    let body: LevelBody = parse_json(&headers, &body)?;
    as_admin(&state, &headers, move |store, _, actor| {
        crate::logging::set_filter(&body.level)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        store.append_audit(&AuditEntry {
            actor,
            action: AuditAction::LogLevelChanged,
            subject: "log".into(),
            detail: AuditDetail {
                status: Some(body.level.clone()),
                ..AuditDetail::default()
            },
        })?;
        tracing::info!(level = %body.level, "log level changed until the next restart or config push");
        Ok(Json(json!({ "level": body.level, "persisted": false })))
    })
    .await
}

async fn support_bundle(
    State(state): State<AdminState>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let bytes = as_admin(&state, &headers, |store, inner, actor| {
        let config = inner.runtime.current.borrow().clone();
        let (ready, health) = readiness(store, inner);
        let bundle = super::bundle::build(&super::bundle::BundleInputs {
            store,
            config: &config,
            data_dir: &inner.data_dir,
            metrics: render_metrics(store, &inner.data_dir)?,
            health: json!({ "ready": ready, "detail": health }),
        })
        .map_err(|e| {
            tracing::error!(error = %e, "support bundle failed");
            ApiError::internal("building the support bundle")
        })?;
        store.append_audit(&AuditEntry {
            actor,
            action: AuditAction::SupportBundleExported,
            subject: "support-bundle".into(),
            detail: AuditDetail {
                count: Some(u64::try_from(bundle.len()).unwrap_or(u64::MAX)),
                ..AuditDetail::default()
            },
        })?;
        Ok(bundle)
    })
    .await?;
    let name = format!(
        "attachment; filename=\"edge-scribe-support-{}.zip\"",
        crate::store::now_ms()
    );
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
