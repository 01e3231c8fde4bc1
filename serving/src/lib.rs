//! engage-serving: the HTTP API over published score snapshots.
//!
//! [`ScoreService`] owns loading and lookups and is usable without HTTP;
//! [`build_app`] wires it to routes, shared by `engage serve` and the tests.
//! No DataFusion here: snapshots are read with the parquet crate.

mod error;
mod service;

pub use error::{ApiError, ServeError};
pub use service::{CustomerScores, Reason, ScoreService};

use std::net::SocketAddr;
use std::path::PathBuf;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpResponse, web};
use serde_json::json;

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Root of published snapshots (the scorer's `--out`).
    pub scores: PathBuf,
    /// Address to bind, e.g. `127.0.0.1:8080` (loopback by default).
    pub bind: String,
}

/// The application: routes over a loaded [`ScoreService`].
pub fn build_app(
    state: web::Data<ScoreService>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .route("/healthz", web::get().to(healthz))
        .route("/v1/customers/{customer_id}/scores", web::get().to(scores))
        .default_service(web::to(not_found))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn scores(svc: web::Data<ScoreService>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(svc.scores_for(&id)?))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute)
}

/// Loads the current snapshot and binds the server. Returns the server (a
/// future that runs until interrupted; Ctrl-C/SIGTERM finish in-flight
/// requests first) and the addresses it listens on (useful with port 0).
pub fn bind(opts: &ServeOptions) -> Result<(actix_web::dev::Server, Vec<SocketAddr>), ServeError> {
    let svc = web::Data::new(ScoreService::load(&opts.scores)?);
    let server = actix_web::HttpServer::new(move || build_app(svc.clone()))
        .bind(&opts.bind)
        .map_err(|source| ServeError::Bind { addr: opts.bind.clone(), source })?;
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}
