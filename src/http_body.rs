//! Request bodies of the two HTTP services: JSON only, with errors that say where and what kind
//! of problem without quoting the input (which could be patient text).

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// A refused body: the status to answer with and a message safe to send back.
#[derive(Debug)]
pub struct BodyError {
    pub status: StatusCode,
    pub message: String,
}

/// Parses a JSON body. Requiring `application/json` also keeps cross-site HTML forms out: a
/// browser sends that type cross-site only after a CORS preflight, which neither service allows.
pub fn json<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, BodyError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(BodyError {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: "send the body as application/json".into(),
        });
    }
    serde_json::from_slice(body).map_err(|e| BodyError {
        status: StatusCode::BAD_REQUEST,
        // serde's message can quote the input; keep only where and what kind of problem.
        message: format!(
            "the body is not what this endpoint takes (line {}, column {}: {})",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Data =>
                    "a field is missing, unknown or of the wrong type",
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof =>
                    "invalid JSON",
                serde_json::error::Category::Io => "read error",
            }
        ),
    })
}
