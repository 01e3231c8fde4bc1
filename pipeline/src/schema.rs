//! The input data contract (v1) as data: tables, columns, types, which
//! columns must be non-null and which values an enum column allows.
//! `docs/data-contract.md` is the prose version; keep the two in step.

/// Logical column types of the contract. Each accepts a family of physical
/// Arrow types (see [`ColType::accepts`]) and is read as one canonical type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// Text: Utf8, LargeUtf8, Utf8View or a dictionary of them.
    Utf8,
    /// Float64; Float32, integer and decimal columns are widened.
    Float64,
    /// Boolean.
    Boolean,
    /// Date32 or Date64.
    Date,
    /// Timestamp in any unit, with or without a zone (no zone = UTC).
    Timestamp,
}

impl ColType {
    /// How the contract names the type in errors and docs.
    pub fn name(self) -> &'static str {
        match self {
            ColType::Utf8 => "Utf8",
            ColType::Float64 => "Float64",
            ColType::Boolean => "Boolean",
            ColType::Date => "Date32",
            ColType::Timestamp => "Timestamp",
        }
    }
}

/// One column of a contract table.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub ty: ColType,
    /// Must be non-null (and non-empty for text) in every row.
    pub required: bool,
    /// For enum columns: the allowed values.
    pub allowed: Option<&'static [&'static str]>,
}

/// One table of the contract.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub name: &'static str,
    /// A run fails when a required table is missing; a missing optional table
    /// means "no such events".
    pub required: bool,
    pub columns: &'static [ColumnSpec],
    /// Identity columns of which at least one must be set in every row.
    pub identity: &'static [&'static str],
    /// The column that identifies a row, where the table has one: a key seen
    /// twice is a duplicate (kept once when the copies are identical,
    /// rejected when they differ).
    pub key: Option<&'static str>,
}

const fn col(name: &'static str, ty: ColType) -> ColumnSpec {
    ColumnSpec { name, ty, required: false, allowed: None }
}
const fn req(name: &'static str, ty: ColType) -> ColumnSpec {
    ColumnSpec { name, ty, required: true, allowed: None }
}
const fn one_of(name: &'static str, allowed: &'static [&'static str]) -> ColumnSpec {
    ColumnSpec { name, ty: ColType::Utf8, required: true, allowed: Some(allowed) }
}

use ColType::*;

pub const CUSTOMERS: &str = "customers";
pub const TRANSACTIONS: &str = "transactions";
pub const INTERACTIONS: &str = "interactions";
pub const CAMPAIGNS: &str = "campaigns";
pub const CONTACTS: &str = "contacts";
pub const RESPONSES: &str = "responses";

pub const CUSTOMER_ID: &str = "customer_id";
pub const CHURN_PROBABILITY: &str = "churn_probability";
pub const AS_OF: &str = "as_of";
pub const SCORED_AT: &str = "scored_at";
pub const CHURNED: &str = "churned";

/// Purchase and refund channels.
pub const TRANSACTION_CHANNELS: &[&str] = &["web", "store", "app", "call_center"];
/// Interaction channels.
pub const INTERACTION_CHANNELS: &[&str] = &["email", "web", "app", "sms", "call_center", "store", "social"];
/// Interaction event types.
pub const EVENT_TYPES: &[&str] = &[
    "email_sent",
    "email_open",
    "email_click",
    "sms_sent",
    "sms_click",
    "web_visit",
    "app_session",
    "call_inbound",
    "call_outbound",
    "complaint",
    "store_visit",
];
/// Campaign kinds.
pub const CAMPAIGN_KINDS: &[&str] = &["wave", "trigger"];
/// Contact groups.
pub const CONTACT_GROUPS: &[&str] = &["treatment", "control"];

/// Every table of the contract, in load order.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: CUSTOMERS,
        required: true,
        columns: &[
            req("customer_id", Utf8),
            col("signup_date", Date),
            col("email", Utf8),
            col("phone", Utf8),
            col("loyalty_id", Utf8),
            col("region", Utf8),
            col("consent_email", Boolean),
            col("consent_sms", Boolean),
            col("consent_call", Boolean),
        ],
        identity: &[],
        key: Some("customer_id"),
    },
    TableSpec {
        name: TRANSACTIONS,
        required: true,
        columns: &[
            req("transaction_id", Utf8),
            req("ts", Timestamp),
            req("amount", Float64),
            one_of("channel", TRANSACTION_CHANNELS),
            col("customer_id", Utf8),
            col("email", Utf8),
            col("loyalty_id", Utf8),
        ],
        identity: &["customer_id", "email", "loyalty_id"],
        key: Some("transaction_id"),
    },
    TableSpec {
        name: INTERACTIONS,
        required: false,
        columns: &[
            req("event_id", Utf8),
            req("ts", Timestamp),
            one_of("channel", INTERACTION_CHANNELS),
            one_of("event_type", EVENT_TYPES),
            col("campaign_id", Utf8),
            col("duration_s", Float64),
            col("customer_id", Utf8),
            col("email", Utf8),
            col("phone", Utf8),
            col("loyalty_id", Utf8),
            col("cookie_id", Utf8),
        ],
        identity: &["customer_id", "email", "phone", "loyalty_id", "cookie_id"],
        key: Some("event_id"),
    },
    TableSpec {
        name: CAMPAIGNS,
        required: false,
        columns: &[
            req("campaign_id", Utf8),
            col("name", Utf8),
            one_of("kind", CAMPAIGN_KINDS),
            col("channel", Utf8),
            col("offer", Utf8),
            col("start_date", Date),
            col("end_date", Date),
        ],
        identity: &[],
        key: Some("campaign_id"),
    },
    TableSpec {
        name: CONTACTS,
        required: false,
        columns: &[
            req("campaign_id", Utf8),
            req("customer_id", Utf8),
            req("ts", Timestamp),
            col("channel", Utf8),
            one_of("group", CONTACT_GROUPS),
        ],
        identity: &[],
        key: None,
    },
    TableSpec {
        name: RESPONSES,
        required: false,
        columns: &[
            req("campaign_id", Utf8),
            req("customer_id", Utf8),
            req("ts", Timestamp),
            req("stage", Utf8),
            col("revenue", Float64),
        ],
        identity: &[],
        key: None,
    },
];

/// The contract of one table by name.
pub fn table(name: &str) -> Option<&'static TableSpec> {
    TABLES.iter().find(|t| t.name == name)
}
