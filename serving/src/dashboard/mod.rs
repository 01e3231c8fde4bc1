//! The dashboard at `/dashboard`: server-rendered HTML over the served
//! snapshot (docs/dashboard.md). Signing in takes an API key with
//! `scores:read` in a form and gives the browser a session cookie
//! (HttpOnly, SameSite=Strict); the key never appears in a URL. The
//! handlers are thin: [`board`] computes what is shown when a snapshot
//! loads, [`page`] renders it.

mod board;
mod page;

pub use board::{Board, psi};

use std::path::Path;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use crate::auth::Scope;
use crate::{ApiError, IdType, ScoreService, ServeError, Served};
use page::Viewer;

type State = web::Data<Served>;

/// The session cookie.
const COOKIE: &str = "engage_session";

/// The dashboard of the snapshot `root`'s `CURRENT` points to, as one
/// self-contained HTML file (`engage report --out`).
pub fn export(root: &Path) -> Result<String, ServeError> {
    let svc = ScoreService::load(root)?;
    Ok(page::dashboard(&svc, &Viewer::Export))
}

/// An HTML response that no cache keeps and no other site may frame or
/// script.
fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

fn session_token(req: &HttpRequest) -> Option<String> {
    let cookies = req.headers().get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_string))
}

/// Who is signed in: `Some(None)` when the server runs without keys,
/// `Some(Some(name))` for a live session, `None` otherwise.
fn viewer(req: &HttpRequest, s: &Served) -> Option<Option<String>> {
    if s.keys.is_open() {
        return Some(None);
    }
    session_token(req).and_then(|t| s.sessions.check(&t)).map(Some)
}

/// `Set-Cookie` for `token`, `Secure` when the request came over HTTPS;
/// an empty token with `max_age` 0 clears it.
fn cookie(req: &HttpRequest, token: &str, max_age: u64) -> HeaderValue {
    let secure = if req.connection_info().scheme() == "https" { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/dashboard; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("a token of hex digits")
}

fn see_other(to: &str) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::SeeOther();
    b.insert_header((header::LOCATION, to)).insert_header((header::CACHE_CONTROL, "no-store"));
    b
}

/// `GET /dashboard`: the dashboard, or the sign-in form.
pub async fn show(req: HttpRequest, s: State) -> HttpResponse {
    let Some(who) = viewer(&req, &s) else { return html(StatusCode::OK, page::sign_in(None)) };
    match s.snapshot() {
        Ok(svc) => html(StatusCode::OK, page::dashboard(&svc, &Viewer::Signed(who.as_deref()))),
        Err(_) => html(StatusCode::SERVICE_UNAVAILABLE, page::not_ready()),
    }
}

#[derive(Debug, Deserialize)]
pub struct SignIn {
    key: String,
}

/// `POST /dashboard/login`: a key with `scores:read` starts a session.
pub async fn sign_in(req: HttpRequest, s: State, form: web::Form<SignIn>) -> HttpResponse {
    match s.keys.authorize_key(form.key.trim(), Scope::ScoresRead) {
        Ok(name) => {
            tracing::info!(caller = %name, "dashboard sign-in");
            let token = s.sessions.start(&name);
            see_other("/dashboard")
                .insert_header((header::SET_COOKIE, cookie(&req, &token, s.sessions.ttl().as_secs())))
                .finish()
        }
        Err(e) => {
            let (status, problem) = match e {
                ApiError::Forbidden(_) => (
                    StatusCode::FORBIDDEN,
                    "That key does not have the scores:read scope the dashboard needs.",
                ),
                _ => (StatusCode::UNAUTHORIZED, "That is not a valid API key."),
            };
            html(status, page::sign_in(Some(problem)))
        }
    }
}

/// `POST /dashboard/logout`: ends the session.
pub async fn sign_out(req: HttpRequest, s: State) -> HttpResponse {
    if let Some(token) = session_token(&req) {
        s.sessions.end(&token);
    }
    see_other("/dashboard").insert_header((header::SET_COOKIE, cookie(&req, "", 0))).finish()
}

#[derive(Debug, Deserialize)]
pub struct Lookup {
    id_type: String,
    id: String,
}

/// `POST /dashboard/customer`: one customer's page (a form post, so that
/// an email or phone is never in a URL, a log or the browser history).
pub async fn customer(req: HttpRequest, s: State, form: web::Form<Lookup>) -> HttpResponse {
    let Some(who) = viewer(&req, &s) else {
        return html(StatusCode::UNAUTHORIZED, page::sign_in(Some("Sign in first.")));
    };
    let Ok(svc) = s.snapshot() else { return html(StatusCode::SERVICE_UNAVAILABLE, page::not_ready()) };
    let found = IdType::parse("id_type", &form.id_type).and_then(|t| svc.row(t, form.id.trim()));
    let status = match &found {
        Ok(_) => StatusCode::OK,
        Err(e) => actix_web::ResponseError::status_code(e),
    };
    html(status, page::customer(&svc, &Viewer::Signed(who.as_deref()), &form.id_type, &form.id, found))
}
