//! The routes: thin handlers over [`Served`] and [`ScoreService`], each
//! documented for the OpenAPI spec (`GET /openapi.json`). API keys are
//! checked before any handler runs, by path (`scope_for` in lib.rs).

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::auth::mask;
use crate::error::{ErrorBody, ErrorDetail};
use crate::snapshot::{AudienceEntry, CustomerScores, IdType, Reason};
use crate::state::{Refused, ReloadOutcome, Served};
use crate::{ApiError, ScoreService};

type State = web::Data<Served>;

#[derive(OpenApi)]
#[openapi(
    info(title = "engage scores API", description = "Customer scores, reasons and campaign audiences from the current engage score snapshot. Every /v1 route needs `Authorization: Bearer <key>` with the scope it names."),
    paths(customer_scores, batch_scores, list_audiences, audience, models, snapshot, reload, healthz, readyz, metrics),
    components(schemas(CustomerScores, Reason, IdType, BatchRequest, BatchItem, BatchResponse, BatchResult, AudienceEntry, AudiencePage, AudienceList, AudienceInfo, ModelList, ModelInfo, SnapshotInfo, ReloadOutcome, Refused, Readiness, Health, ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    tags((name = "scores"), (name = "audiences"), (name = "admin"), (name = "operations"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Identifier type of a lookup.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// `customer_id` (default), `email`, `phone` or `loyalty_id`.
    id_type: Option<String>,
}

/// Scores of one customer, found by any identifier.
#[utoipa::path(
    get, path = "/v1/customers/{id}/scores", tag = "scores",
    params(("id" = String, Path, description = "The identifier (URL-encoded)"), LookupQuery),
    responses(
        (status = 200, description = "Every score of the customer", body = CustomerScores),
        (status = 400, description = "Unknown id_type or malformed identifier", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks scores:read", body = ErrorBody),
        (status = 404, description = "No such customer in the snapshot", body = ErrorBody),
        (status = 503, description = "No snapshot loaded yet", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn customer_scores(
    req: HttpRequest,
    id: web::Path<String>,
    q: web::Query<LookupQuery>,
) -> Result<HttpResponse, ApiError> {
    let id_type = match &q.id_type {
        Some(t) => IdType::parse("id_type", t)?,
        None => IdType::CustomerId,
    };
    tracing::debug!(id_type = id_type.name(), id = %mask(id_type.name(), &id), "lookup");
    // The most frequent call: the state is borrowed (`served`), not cloned.
    let body = crate::served(&req).snapshot()?.lookup(id_type, &id)?.to_json();
    Ok(HttpResponse::Ok().content_type(actix_web::http::header::ContentType::json()).body(body))
}

/// Identifiers to look up in one call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// At most `max_batch` (default 1000) items.
    pub items: Vec<BatchItem>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub id: String,
    /// Default `customer_id`.
    #[serde(default)]
    pub id_type: Option<String>,
}

/// One result per item, in the request's order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResponse<'a> {
    pub snapshot_id: &'a str,
    pub results: Vec<BatchResult<'a>>,
}

/// An item's scores (`status` 200) or its error (400, 404).
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResult<'a> {
    pub id: String,
    pub id_type: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<CustomerScores<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// Scores of many customers, each by any identifier; per-item errors.
#[utoipa::path(
    post, path = "/v1/scores:batch", tag = "scores", request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per item, in order", body = BatchResponse),
        (status = 400, description = "The body is not a batch request", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks scores:read", body = ErrorBody),
        (status = 413, description = "Too many items or too large a body", body = ErrorBody),
        (status = 503, description = "No snapshot loaded yet", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn batch_scores(s: State, body: web::Json<BatchRequest>) -> Result<HttpResponse, ApiError> {
    let items = body.into_inner().items;
    if items.len() > s.limits.max_batch {
        return Err(ApiError::BatchTooLarge { items: items.len(), limit: s.limits.max_batch });
    }
    let snap = s.snapshot()?;
    let results = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let id_type = item.id_type.clone().unwrap_or_else(|| IdType::CustomerId.name().into());
            let found = IdType::parse(&format!("items[{i}].id_type"), &id_type)
                .and_then(|t| snap.lookup(t, &item.id))
                .map_err(|e| match e {
                    ApiError::InvalidParameter { field, reason } if field == "id" => {
                        ApiError::InvalidParameter { field: format!("items[{i}].id"), reason }
                    }
                    e => e,
                });
            let (status, scores, error) = match found {
                Ok(scores) => (200, Some(scores), None),
                Err(e) => (actix_web::ResponseError::status_code(&e).as_u16(), None, Some(e.body().error)),
            };
            BatchResult { id: item.id, id_type, status, scores, error }
        })
        .collect();
    Ok(HttpResponse::Ok().json(BatchResponse { snapshot_id: &snap.manifest().snapshot_id, results }))
}

/// The campaigns with a contact list in the snapshot.
#[derive(Debug, Serialize, ToSchema)]
pub struct AudienceList {
    pub snapshot_id: String,
    pub as_of: String,
    pub campaigns: Vec<AudienceInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AudienceInfo {
    pub campaign_id: String,
    pub entries: usize,
    pub treatment: usize,
    pub control: usize,
    /// The selection's summary: candidates, suppressions by reason,
    /// eligible, selected, cost (`null` if the snapshot has none).
    #[schema(value_type = Object)]
    pub summary: serde_json::Value,
}

/// Campaigns with a contact list in the current snapshot.
#[utoipa::path(
    get, path = "/v1/audiences", tag = "audiences",
    responses(
        (status = 200, description = "Campaigns and their counts", body = AudienceList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks audiences:read", body = ErrorBody),
        (status = 503, description = "No snapshot loaded yet", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list_audiences(s: State) -> Result<HttpResponse, ApiError> {
    let snap = s.snapshot()?;
    let campaigns = snap
        .audiences()
        .iter()
        .map(|(id, a)| {
            let treatment = a.entries.iter().filter(|e| e.group == "treatment").count();
            AudienceInfo {
                campaign_id: id.clone(),
                entries: a.entries.len(),
                treatment,
                control: a.entries.len() - treatment,
                summary: a.summary.clone(),
            }
        })
        .collect();
    let m = snap.manifest();
    Ok(HttpResponse::Ok().json(AudienceList {
        snapshot_id: m.snapshot_id.clone(),
        as_of: m.as_of.clone(),
        campaigns,
    }))
}

/// Paging through a contact list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the previous page; none for the first.
    cursor: Option<String>,
    /// Entries per page: 1 to `max_page` (default 100).
    limit: Option<String>,
    /// Only `treatment` (to contact) or `control` (to hold out).
    group: Option<String>,
}

/// One page of a campaign's contact list, in rank order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AudiencePage {
    pub campaign_id: String,
    pub snapshot_id: String,
    pub as_of: String,
    /// Entries in the list (of the group asked for).
    pub total: usize,
    pub entries: Vec<AudienceEntry>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// A campaign's current contact list, paged with a cursor.
#[utoipa::path(
    get, path = "/v1/audiences/{campaign}", tag = "audiences",
    params(("campaign" = String, Path, description = "Campaign id"), PageQuery),
    responses(
        (status = 200, description = "A page of the contact list", body = AudiencePage),
        (status = 400, description = "Bad cursor, limit or group", body = ErrorBody),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks audiences:read", body = ErrorBody),
        (status = 404, description = "No list for this campaign", body = ErrorBody),
        (status = 409, description = "The cursor's snapshot is no longer served", body = ErrorBody),
        (status = 503, description = "No snapshot loaded yet", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn audience(
    s: State,
    campaign: web::Path<String>,
    q: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let max = s.limits.max_page;
    let limit = match &q.limit {
        None => 100.min(max),
        Some(v) => v.parse::<usize>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| {
            ApiError::invalid("limit", format!("`{v}` is not a whole number from 1 to {max}"))
        })?,
    };
    let group = match q.group.as_deref() {
        None => None,
        Some(g @ ("treatment" | "control")) => Some(g),
        Some(g) => return Err(ApiError::invalid("group", format!("`{g}` is not `treatment` or `control`"))),
    };
    let snap = s.snapshot()?;
    let id = &snap.manifest().snapshot_id;
    let start = match &q.cursor {
        None => 0,
        Some(c) => {
            let bad = || ApiError::invalid("cursor", format!("`{c}` is not a cursor this API gave"));
            let (snapshot, offset) = c.rsplit_once('~').ok_or_else(bad)?;
            let offset = offset.parse::<usize>().map_err(|_| bad())?;
            if snapshot != id {
                return Err(ApiError::CursorExpired(snapshot.to_string()));
            }
            offset
        }
    };
    let list = snap
        .audiences()
        .get(campaign.as_str())
        .ok_or_else(|| ApiError::UnknownCampaign(campaign.to_string()))?;
    let chosen: Vec<&AudienceEntry> =
        list.entries.iter().filter(|e| group.is_none_or(|g| e.group == g)).collect();
    let entries: Vec<AudienceEntry> = chosen.iter().skip(start).take(limit).map(|e| (*e).clone()).collect();
    let end = start + entries.len();
    Ok(HttpResponse::Ok().json(AudiencePage {
        campaign_id: campaign.to_string(),
        snapshot_id: id.clone(),
        as_of: snap.manifest().as_of.clone(),
        total: chosen.len(),
        next_cursor: (end < chosen.len()).then(|| format!("{id}~{end}")),
        entries,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    pub snapshot_id: String,
    pub models: Vec<ModelInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    /// `churn`, `response`, `uplift` or `clv`.
    pub task: String,
    /// Registry version (`engage models show` tells more).
    pub version: String,
}

/// The models whose scores are being served.
#[utoipa::path(
    get, path = "/v1/models", tag = "scores",
    responses(
        (status = 200, description = "Models of the served snapshot", body = ModelList),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks scores:read", body = ErrorBody),
        (status = 503, description = "No snapshot loaded yet", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn models(s: State) -> Result<HttpResponse, ApiError> {
    let snap = s.snapshot()?;
    let m = snap.manifest();
    let models = m
        .models
        .iter()
        .map(|(task, version)| ModelInfo { task: task.clone(), version: version.clone() })
        .collect();
    Ok(HttpResponse::Ok().json(ModelList { snapshot_id: m.snapshot_id.clone(), models }))
}

/// The snapshot being served.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotInfo {
    pub snapshot_id: String,
    pub as_of: String,
    pub scored_at: String,
    pub customers: usize,
    /// Identifiers in the lookup, by type (email, phone, loyalty_id).
    pub identifiers: BTreeMap<String, usize>,
    pub models: BTreeMap<String, String>,
    pub audiences: Vec<String>,
    pub engage_version: String,
    pub format_version: u32,
}

fn snapshot_info(snap: &ScoreService) -> SnapshotInfo {
    let m = snap.manifest();
    SnapshotInfo {
        snapshot_id: m.snapshot_id.clone(),
        as_of: m.as_of.clone(),
        scored_at: m.scored_at.clone(),
        customers: snap.len(),
        identifiers: engage_models::snapshot::LOOKUP_ID_TYPES
            .iter()
            .zip(snap.identifiers())
            .map(|(t, n)| (t.to_string(), n))
            .collect(),
        models: m.models.clone(),
        audiences: snap.audiences().keys().cloned().collect(),
        engage_version: m.engage_version.clone(),
        format_version: m.format_version,
    }
}

/// What is being served.
#[utoipa::path(
    get, path = "/v1/snapshot", tag = "scores", operation_id = "snapshot",
    responses(
        (status = 200, description = "The served snapshot", body = SnapshotInfo),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks scores:read", body = ErrorBody),
        (status = 503, description = "No snapshot loaded yet", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn snapshot(s: State) -> Result<HttpResponse, ApiError> {
    let snap = s.snapshot()?;
    Ok(HttpResponse::Ok().json(snapshot_info(&snap)))
}

/// Loads the snapshot `CURRENT` names now (checked in full) and swaps it in.
#[utoipa::path(
    post, path = "/v1/admin/reload", tag = "admin",
    responses(
        (status = 200, description = "Loaded, or already served", body = ReloadOutcome),
        (status = 401, description = "No or unknown API key", body = ErrorBody),
        (status = 403, description = "The key lacks admin", body = ErrorBody),
        (status = 422, description = "The snapshot was refused; the previous one keeps serving", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn reload(s: State) -> Result<HttpResponse, ApiError> {
    let served = s.clone();
    let outcome = web::block(move || served.reload().map_err(|e| crate::state::error_chain(&e)))
        .await
        .map_err(|e| ApiError::SnapshotRefused(e.to_string()))?
        .map_err(ApiError::SnapshotRefused)?;
    Ok(HttpResponse::Ok().json(outcome))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Alive (no key needed).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process answers", body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// The served snapshot (absent when not ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    /// The newest snapshot, when it was refused (the served one is older).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<Refused>,
}

/// Ready when a snapshot is served; reports a refused newer one (no key needed).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "A snapshot is served", body = Readiness),
    (status = 503, description = "No snapshot loaded", body = Readiness),
))]
pub async fn readyz(s: State) -> HttpResponse {
    let snapshot = s.snapshot().ok().map(|snap| snapshot_info(&snap));
    let ready = snapshot.is_some();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" }.into(),
        snapshot,
        last_refused: s.last_refused(),
    };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// Prometheus metrics (no key needed; no customer data).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(s: State) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(s.metrics_text())
}

/// The OpenAPI document of this API.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NoRoute)
}

pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
