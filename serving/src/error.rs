//! Errors: [`ServeError`] for starting up, [`ApiError`] for requests.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Why the server could not start or load a snapshot.
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
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// A failed request. Each variant maps to one status and one stable code;
/// the body is `{"error": {"code", "message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no scores for customer `{0}` in the current snapshot")]
    UnknownCustomer(String),
    #[error("no such route")]
    NoRoute,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::UnknownCustomer(_) => "unknown_customer",
            ApiError::NoRoute => "not_found",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownCustomer(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}
