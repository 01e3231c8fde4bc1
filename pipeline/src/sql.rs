//! The registry of SQL files the pipeline runs. Every `.sql` file under
//! `sql/` is embedded here and nowhere else; each becomes a view named
//! `name`, registered in the order listed.

/// One embedded SQL file.
#[derive(Debug, Clone, Copy)]
pub struct SqlFile {
    /// The view name other SQL refers to.
    pub name: &'static str,
    /// Path under `sql/`, for messages and docs.
    pub path: &'static str,
    /// The statement.
    pub sql: &'static str,
}

macro_rules! sql_file {
    ($name:literal, $path:literal) => {
        SqlFile { name: $name, path: $path, sql: include_str!(concat!("../../sql/", $path)) }
    };
}

/// Identity quality against the generator's truth (`truth_identities`).
pub const IDENTITY_QUALITY: SqlFile = sql_file!("identity_quality", "identity/quality.sql");

/// Feature views, parameters `$as_of` and the lifecycle day limits (see
/// [`crate::engine::LifecycleRules`]); the last one is the feature table.
pub const FEATURES: &[SqlFile] = &[
    sql_file!("population", "features/population.sql"),
    sql_file!("profile_features", "features/profile.sql"),
    sql_file!("value_features", "features/value.sql"),
    sql_file!("engagement_features", "features/engagement.sql"),
    sql_file!("service_features", "features/service.sql"),
    sql_file!("channel_features", "features/channel.sql"),
    sql_file!("contact_features", "features/contact.sql"),
    sql_file!("lifecycle_features", "features/lifecycle.sql"),
    sql_file!("customer_features", "features/customer_features.sql"),
];

/// Churn label, parameters `$as_of` and `$horizon_days`.
pub const CHURN_LABEL: SqlFile = sql_file!("churn_label", "labels/churn.sql");

/// Future spend label, parameters `$as_of` and `$horizon_days`.
pub const SPEND_LABEL: SqlFile = sql_file!("spend_label", "labels/spend.sql");

/// Campaign response label, parameters `$as_of`, `$horizon_days` and `$response_days`.
pub const RESPONSE_LABEL: SqlFile = sql_file!("response_label", "labels/response.sql");

/// Lifecycle history over several cutoffs, in order: each customer's stage
/// per cutoff with the one before, then the transition counts. They read
/// `lifecycle_stages` (customer_id, as_of, lifecycle_stage), registered by
/// [`crate::Engine::lifecycle_history`].
pub const LIFECYCLE: &[SqlFile] = &[
    sql_file!("lifecycle_history", "lifecycle/history.sql"),
    sql_file!("lifecycle_transitions", "lifecycle/transitions.sql"),
];

/// Daily purchase totals per customer before `$as_of`, the input of the
/// CLV models; reads `population`.
pub const PURCHASE_DAYS: SqlFile = sql_file!("purchase_days", "models/purchase_days.sql");

/// What an audience's suppressions need per customer, parameters `$as_of`,
/// `$campaign_id`, `$cap_days`, `$responded_days`, `$cooldown_days`.
pub const AUDIENCE_ELIGIBILITY: SqlFile = sql_file!("audience_eligibility", "audiences/eligibility.sql");

/// One purchase summary per customer before `$as_of` (first and last
/// purchase day, purchase days, repeat value), what CLV scoring reads;
/// reads `population`.
pub const PURCHASE_SUMMARY: SqlFile = sql_file!("purchase_summary", "models/purchase_summary.sql");

/// Per campaign, group, response and funnel depth: customers and revenue,
/// parameters `$as_of` and `$response_days`.
pub const CAMPAIGN_RESULTS: SqlFile = sql_file!("campaign_results", "campaigns/results.sql");

/// Per customer and campaign contacted in the `$days` before `$as_of`:
/// group, channel, date, responses within `$response_days`, the deepest
/// funnel stage and revenue (the dashboard's customer page).
pub const CONTACT_HISTORY: SqlFile = sql_file!("contact_history", "campaigns/contact_history.sql");

/// Per CRM customer: a purchase in [`$since`, `$as_of`) and its revenue,
/// for the universal holdout's measure.
pub const HOLDOUT: SqlFile = sql_file!("holdout_outcome", "campaigns/holdout.sql");

/// Every label file.
pub const LABELS: &[SqlFile] = &[CHURN_LABEL, SPEND_LABEL, RESPONSE_LABEL];
