//! engage-serving: the HTTP API over published score snapshots.
//!
//! [`ScoreService`] is one loaded snapshot and answers lookups without
//! HTTP; [`Served`] holds the one being served and swaps in new ones
//! ([`Served::reload`], the pointer watcher); [`build_app`] wires routes,
//! API keys, limits, metrics and request ids, shared by `engage serve` and
//! the tests; [`dashboard`] serves `/dashboard`. No DataFusion here: snapshots are read with the parquet crate.

mod api;
pub mod auth;
mod config;
pub mod dashboard;
mod error;
mod metrics;
mod snapshot;
mod state;

pub use api::ApiDoc;
pub use config::{ApiKeyConfig, ServeConfig};
pub use error::{ApiError, ErrorBody, ServeError};
pub use snapshot::{AudienceEntry, CustomerScores, IdType, Reason, ScoreService};
pub use state::{Limits, ReloadOutcome, Served};

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Condition;
use actix_web::{App, HttpRequest, web};

use crate::auth::{Keys, Scope};

/// The OpenAPI document of the API, pretty-printed (what `GET
/// /openapi.json` serves; `docs/openapi.json` is a copy).
pub fn openapi_json() -> String {
    use utoipa::OpenApi;
    ApiDoc::openapi().to_pretty_json().expect("the OpenAPI document serialises")
}

/// The scope a path needs (`None`: open, e.g. `/healthz`).
fn scope_for(path: &str) -> Option<Scope> {
    if path.starts_with("/v1/admin/") {
        Some(Scope::Admin)
    } else if path == "/v1/audiences" || path.starts_with("/v1/audiences/") {
        Some(Scope::AudiencesRead)
    } else if path.starts_with("/v1/") || path == "/v1" {
        Some(Scope::ScoresRead)
    } else {
        None
    }
}

/// The caller's `X-Request-Id` when it is a sane token, else a new one.
fn request_id(req: &ServiceRequest) -> RequestId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut id = RequestId { buf: [0; 64], len: 0 };
    let given = req.headers().get("x-request-id").map(HeaderValue::as_bytes).filter(|v| {
        !v.is_empty()
            && v.len() <= 64
            && v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    });
    match given {
        Some(given) => {
            id.buf[..given.len()].copy_from_slice(given);
            id.len = given.len();
        }
        // The pid once: `getpid` is a system call on every request otherwise.
        None => {
            static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
            let mut rest = &mut id.buf[..];
            let pid = PID.get_or_init(std::process::id);
            write!(rest, "{pid:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed)).expect("fits in 64 bytes");
            id.len = 64 - rest.len();
        }
    }
    id
}

/// A request's id, on the stack (no allocation per request): ASCII
/// letters, digits, '-' and '_', at most 64 bytes.
struct RequestId {
    buf: [u8; 64],
    len: usize,
}

impl RequestId {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("ASCII")
    }
}

/// The served state of a request's app, borrowed, not cloned: a shared
/// reference count would be one more cache line that both workers write on
/// every request.
fn served(req: &HttpRequest) -> &Served {
    req.app_data::<web::Data<Served>>().expect("state registered")
}

/// The application over `state`: routes, body and query limits with JSON
/// errors, API keys by path, metrics, request ids and access logs (debug
/// level; never the path, which may hold an email), CORS for `cors_origins`.
pub fn build_app(
    state: web::Data<Served>,
    cors_origins: Vec<String>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = state.limits.max_body_bytes;
    let json = web::JsonConfig::default().limit(limit).error_handler(move |err, _| {
        let api = match &err {
            JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
                ApiError::PayloadTooLarge { limit }
            }
            JsonPayloadError::ContentType => {
                ApiError::InvalidBody("expected Content-Type: application/json".into())
            }
            e => ApiError::InvalidBody(e.to_string()),
        };
        api.into()
    });
    let query = web::QueryConfig::default()
        .error_handler(|err: QueryPayloadError, _| ApiError::invalid("query", err.to_string()).into());
    let form = web::FormConfig::default()
        .limit(4096)
        .error_handler(|err, _| ApiError::InvalidBody(err.to_string()).into());
    let path =
        web::PathConfig::default().error_handler(|err, _| ApiError::invalid("path", err.to_string()).into());
    let cors = cors_origins
        .iter()
        .fold(actix_cors::Cors::default(), |c, o| c.allowed_origin(o))
        .allowed_methods(["GET", "POST"])
        .allowed_headers([actix_web::http::header::AUTHORIZATION, actix_web::http::header::CONTENT_TYPE])
        .expose_headers(["x-request-id"])
        .max_age(3600);
    // Each resource is named by its pattern: metrics and logs read the name
    // (no allocation per request), never the path.
    let resource = |path: &str| {
        assert!(metrics::ROUTES.contains(&path), "route {path} is not in metrics::ROUTES");
        web::resource(path.to_string()).name(path).default_service(web::to(api::method_not_allowed))
    };
    App::new()
        .app_data(state)
        .app_data(json)
        .app_data(query)
        .app_data(form)
        .app_data(path)
        .service(resource("/v1/customers/{id}/scores").route(web::get().to(api::customer_scores)))
        .service(resource("/v1/scores:batch").route(web::post().to(api::batch_scores)))
        .service(resource("/v1/audiences").route(web::get().to(api::list_audiences)))
        .service(resource("/v1/audiences/{campaign}").route(web::get().to(api::audience)))
        .service(resource("/v1/models").route(web::get().to(api::models)))
        .service(resource("/v1/snapshot").route(web::get().to(api::snapshot)))
        .service(resource("/v1/admin/reload").route(web::post().to(api::reload)))
        .service(resource("/healthz").route(web::get().to(api::healthz)))
        .service(resource("/readyz").route(web::get().to(api::readyz)))
        .service(resource("/metrics").route(web::get().to(api::metrics)))
        .service(resource("/openapi.json").route(web::get().to(api::openapi)))
        .service(resource("/dashboard").route(web::get().to(dashboard::show)))
        .service(resource("/dashboard/login").route(web::post().to(dashboard::sign_in)))
        .service(resource("/dashboard/logout").route(web::post().to(dashboard::sign_out)))
        .service(resource("/dashboard/customer").route(web::post().to(dashboard::customer)))
        .default_service(web::to(api::not_found))
        .wrap_fn(|req, srv| {
            let start = Instant::now();
            let id = request_id(&req);
            let auth = match scope_for(req.path()) {
                Some(scope) => served(req.request()).keys.authorize(req.request(), scope).map(Some),
                None => Ok(None),
            };
            let (call, denied, caller) = match auth {
                Ok(caller) => (Some(srv.call(req)), None, caller),
                Err(e) => (None, Some(req.error_response(e)), None),
            };
            async move {
                let mut res = match (call, denied) {
                    (Some(call), _) => call.await?.map_into_boxed_body(),
                    (None, Some(denied)) => denied,
                    (None, None) => unreachable!("called or denied"),
                };
                let id = id.as_str();
                if let Ok(v) = HeaderValue::from_str(id) {
                    res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
                }
                let req = res.request();
                let (route, method) = (req.match_name().unwrap_or("unmatched"), req.method());
                let status = res.status().as_u16();
                let elapsed = start.elapsed();
                served(req).metrics.observe(route, status, elapsed);
                let caller = caller.as_deref().unwrap_or("-");
                let micros = elapsed.as_micros() as u64;
                if status >= 500 {
                    tracing::warn!(request_id = %id, %method, %route, status, micros, caller = %caller, "request failed");
                } else {
                    tracing::debug!(request_id = %id, %method, %route, status, micros, caller = %caller, "request");
                }
                Ok(res)
            }
        })
        .wrap(Condition::new(!cors_origins.is_empty(), cors))
}

/// A running server.
pub struct Running {
    /// Runs until interrupted; Ctrl-C/SIGTERM finish in-flight requests
    /// first (up to `shutdown_timeout_s`).
    pub server: actix_web::dev::Server,
    /// Where it listens (useful with port 0).
    pub addrs: Vec<SocketAddr>,
    pub served: Arc<Served>,
}

/// Loads the current snapshot (a failure is logged and reported by
/// `/readyz`; the watcher keeps trying), starts the pointer watcher and
/// binds the server.
pub fn start(config: &ServeConfig) -> Result<Running, ServeError> {
    config.check("the server config")?;
    let keys = Keys::new(config.keys("the server config")?, config.insecure_no_auth);
    let limits = Limits {
        max_batch: config.max_batch,
        max_page: config.max_page,
        max_body_bytes: config.max_body_bytes,
    };
    let sessions = auth::Sessions::new(Duration::from_secs(config.session_ttl_s));
    let served = Arc::new(Served::new(&config.scores, keys, limits, sessions));
    let _ = served.reload();
    if config.watch_interval_ms > 0 {
        served.watch(Duration::from_millis(config.watch_interval_ms));
    }
    let data = web::Data::from(served.clone());
    let origins = config.cors_origins.clone();
    let mut server = actix_web::HttpServer::new(move || build_app(data.clone(), origins.clone()))
        .client_request_timeout(Duration::from_millis(config.request_timeout_ms))
        .keep_alive(Duration::from_secs(config.keep_alive_s))
        .shutdown_timeout(config.shutdown_timeout_s);
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server =
        server.bind(&config.bind).map_err(|source| ServeError::Bind { addr: config.bind.clone(), source })?;
    let addrs = server.addrs();
    Ok(Running { server: server.run(), addrs, served })
}
