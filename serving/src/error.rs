//! Errors: [`ServeError`] for starting up and loading snapshots, [`ApiError`]
//! for requests.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// Why the server could not start or a snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Snapshot(#[from] engage_models::ModelError),
    #[error("cannot read snapshot file {path}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("snapshot file {path}: {reason}")]
    Schema { path: String, reason: String },
    #[error("server config {path}: `{field}`: {reason}")]
    Config { path: String, field: String, reason: String },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A failed request. Each variant maps to one status and one stable code;
/// the body is [`ErrorBody`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no {id_type} `{id}` in the current snapshot")]
    UnknownCustomer { id_type: &'static str, id: String },
    #[error("no audience for campaign `{0}` in the current snapshot")]
    UnknownCampaign(String),
    #[error("no such route")]
    NoRoute,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("`{field}`: {reason}")]
    InvalidParameter { field: String, reason: String },
    #[error("request body: {0}")]
    InvalidBody(String),
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("`items`: {items} identifiers, at most {limit} per batch")]
    BatchTooLarge { items: usize, limit: usize },
    #[error("the cursor belongs to snapshot `{0}`, which is no longer served: page again from the start")]
    CursorExpired(String),
    #[error("an API key is required: send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("this API key lacks the `{0}` scope")]
    Forbidden(&'static str),
    #[error("no snapshot is loaded yet")]
    NotReady,
    #[error("snapshot refused, the previous one keeps serving: {0}")]
    SnapshotRefused(String),
}

/// Every error answer: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `unknown_customer`.
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, for `invalid_parameter`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ApiError {
    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownCustomer { .. } => "unknown_customer",
            ApiError::UnknownCampaign(_) => "unknown_campaign",
            ApiError::NoRoute => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::CursorExpired(_) => "cursor_expired",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotReady => "not_ready",
            ApiError::SnapshotRefused(_) => "snapshot_refused",
        }
    }

    pub fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
        ApiError::InvalidParameter { field: field.into(), reason: reason.into() }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let field = match self {
            ApiError::InvalidParameter { field, .. } => Some(field.clone()),
            ApiError::BatchTooLarge { .. } => Some("items".into()),
            _ => None,
        };
        ErrorBody { error: ErrorDetail { code: self.code(), message: self.to_string(), field } }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownCustomer { .. } | ApiError::UnknownCampaign(_) | ApiError::NoRoute => {
                StatusCode::NOT_FOUND
            }
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidParameter { .. } | ApiError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } | ApiError::BatchTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::CursorExpired(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::SnapshotRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::Unauthorized) {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        resp.json(self.body())
    }
}
