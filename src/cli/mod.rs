//! Subcommands and their flags. Each flag's doc comment is its `--help`.

mod demo;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use engage_models::clv::TimeUnit;
use engage_models::registry::ModelRef;
use engage_models::{ClassifierConfig, TrainConfig};
use engage_pipeline::erasure::ErasureList;
use engage_pipeline::generate::{GenerateOptions, generate};
use engage_pipeline::identity::IdentityOptions;
use engage_pipeline::jobs::{
    DatasetOptions, LifecycleRun, TrainChurnOptions, TrainClvOptions, TrainTableOptions, TrainUpliftOptions,
    build_dataset, build_features, build_identity, build_lifecycle, forget, train_churn_model,
    train_clv_model, train_on_table, train_uplift_on_table,
};
use engage_pipeline::nightly::NightlyConfig;
use engage_pipeline::publish::ModelStore;
use engage_pipeline::report::RunReport;
use engage_pipeline::runtime::{ByteSize, EngineSettings};
use engage_pipeline::scoring::{ScoreOptions, ScoreRun, score};
use engage_pipeline::store::DataRoot;
use engage_pipeline::{DataSource, LifecycleRules, Task};

/// engage: customer-analytics scoring. Features, churn models, batch scores
/// and an HTTP API over your customer data.
#[derive(Debug, Parser)]
#[command(name = "engage", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write realistic sample data (all six tables plus ground truth).
    Generate {
        /// Number of customers.
        #[arg(long, default_value_t = 50_000)]
        customers: usize,
        /// Random seed; the same seed writes the same data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// First day of event history (YYYY-MM-DD).
        #[arg(long, default_value = "2024-01-01", value_parser = parse_date)]
        start: NaiveDate,
        /// Last day of event history (YYYY-MM-DD).
        #[arg(long, default_value = "2026-06-30", value_parser = parse_date)]
        end: NaiveDate,
    },
    /// Compute the customer feature table as of a cutoff date
    /// (`engage features list` prints the feature registry).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Features {
        #[command(subcommand)]
        action: Option<FeaturesAction>,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        features: FeatureArgs,
        /// Cutoff date (YYYY-MM-DD): features see events strictly before it.
        #[arg(long, value_parser = parse_date, required = true)]
        as_of: Option<NaiveDate>,
        /// Output directory for customer_features.parquet and its run
        /// report: a path or an object-store URL (s3://, gs://, az://).
        #[arg(long, required = true)]
        out: Option<String>,
    },
    /// Resolve identities across tables and write the identity map.
    Identity {
        #[command(flatten)]
        data: DataArgs,
        /// Output directory for identity_map.parquet and run_report.json: a
        /// path or an object-store URL.
        #[arg(long)]
        out: String,
    },
    /// Forget a person: add every identifier linked to them to the erasure
    /// list, remove their rows from engage's outputs, and leave them out of
    /// every later run. Prints counts only, never the identifier.
    Forget {
        #[command(flatten)]
        data: DataArgs,
        /// Type of the identifier given.
        #[arg(long, value_parser = ["customer_id", "email", "phone", "loyalty_id", "cookie_id"])]
        id_type: String,
        /// The identifier (normalised like every input identifier).
        #[arg(long)]
        id: String,
        /// An output directory to remove the person's rows from (every
        /// Parquet file under it); repeat for several.
        #[arg(long)]
        scrub: Vec<PathBuf>,
    },
    /// Build a point-in-time training set: features at several cutoffs,
    /// each with its labels from the horizon after it.
    Dataset(DatasetArgs),
    /// Lifecycle stage history: every customer's stage at several cutoffs
    /// and the transitions between consecutive ones.
    Lifecycle(LifecycleArgs),
    /// Train a model.
    Train {
        #[command(subcommand)]
        task: TrainTask,
    },
    /// The scheduled job: ingest, identity, features, score with every
    /// promoted model, segments, publish a snapshot, retention.
    Nightly {
        /// The job's TOML config (see engage.example.toml, docs/nightly.md).
        #[arg(long)]
        config: PathBuf,
        /// Cutoff date (YYYY-MM-DD); overrides the config's `as_of`.
        /// Default: the config's, else today (UTC).
        #[arg(long, value_parser = parse_date)]
        as_of: Option<NaiveDate>,
    },
    /// Measure campaigns: response, lift and cost per funnel stage.
    Campaigns {
        #[command(subcommand)]
        action: CampaignsAction,
    },
    /// Select one campaign's audience from the current snapshot now (the
    /// nightly job selects due campaigns itself).
    Audience {
        /// The nightly config defining the campaign.
        #[arg(long)]
        config: PathBuf,
        /// The campaign id (`[[campaigns]] id`).
        #[arg(long)]
        campaign: String,
        /// Directory for the contact list (<campaign>.parquet and .csv).
        #[arg(long)]
        out: PathBuf,
        /// Select and write the list, but record no contacts in the data.
        #[arg(long)]
        dry_run: bool,
    },
    /// Score every customer with the given models and publish a score
    /// snapshot with segments (default rules; `engage nightly` configures them).
    Score {
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        features: FeatureArgs,
        /// Cutoff date of the features (YYYY-MM-DD).
        #[arg(long, value_parser = parse_date)]
        as_of: NaiveDate,
        /// The model registry `engage train --models` writes.
        #[arg(long, value_parser = parse_models)]
        models: DataRoot,
        /// Which model: NAME (its promoted version) or NAME@VERSION;
        /// repeat for several (one per task: churn, response, uplift, clv).
        #[arg(long, default_value = "churn")]
        model: Vec<ModelRef>,
        /// Snapshot root: snapshots/<id>/ and the CURRENT pointer go here.
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve the current score snapshot over HTTP (docs/serving.md);
    /// `engage serve keygen` makes an API key.
    #[command(args_conflicts_with_subcommands = true)]
    Serve {
        #[command(subcommand)]
        action: Option<ServeAction>,
        /// Server config (TOML): scores, bind, limits, API keys, CORS.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Snapshot root written by `engage score --out` or `engage nightly`
        /// (overrides the config's `scores`), or the object-store URL
        /// `engage nightly` publishes to (s3://, gs://, az://; mirrored
        /// into --cache-dir).
        #[arg(long)]
        scores: Option<String>,
        /// Local cache of a --scores URL. Default: engage-snapshots-<the URL>
        /// under the system temp directory.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Address to listen on (overrides the config's `bind`; default
        /// 127.0.0.1:8080).
        #[arg(long)]
        bind: Option<String>,
        /// Serve without API keys: anyone who can reach the port reads
        /// every score. For a trial on your own machine only.
        #[arg(long)]
        insecure_no_auth: bool,
    },
    /// The model registry: list, show, promote, roll back.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// The dashboard of a snapshot as one HTML file (`--scores DIR --out
    /// FILE`), or a run report (`show`).
    #[command(args_conflicts_with_subcommands = true)]
    Report {
        #[command(subcommand)]
        action: Option<ReportAction>,
        /// Snapshot root (`engage nightly`'s `output.scores`): the
        /// dashboard of its current snapshot.
        #[arg(long, requires = "out")]
        scores: Option<PathBuf>,
        /// The HTML file to write (self-contained: no scripts, no external
        /// files; written atomically).
        #[arg(long, requires = "scores")]
        out: Option<PathBuf>,
    },
    /// Generate a sample, build features, train, score, and print a summary.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum CampaignsAction {
    /// Per campaign and funnel stage: contacted, responded, rates in
    /// treatment and control, lift with 95 % interval, incremental
    /// responders and revenue, cost per incremental response.
    Report {
        /// The nightly config (data root, response funnel, campaign costs).
        #[arg(long)]
        config: PathBuf,
        /// Count responses before this date (YYYY-MM-DD); default: the
        /// config's `as_of`, else today (UTC).
        #[arg(long, value_parser = parse_date)]
        as_of: Option<NaiveDate>,
        /// A response counts within this many days of the contact.
        #[arg(long, default_value_t = 30)]
        response_days: u32,
        /// With a universal holdout configured: compare purchases of the
        /// holdout and everyone else over this many days before the cutoff.
        #[arg(long, default_value_t = 90)]
        holdout_days: u32,
        /// Directory for campaigns.json and campaigns.html.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ServeAction {
    /// Make a new API key: prints the key (once) and the config entry that
    /// holds its hash.
    Keygen {
        /// Who will hold the key (logged with their requests).
        #[arg(long)]
        name: String,
        /// Scopes: scores:read, audiences:read, admin (repeatable).
        #[arg(long = "scope", required = true, value_parser = ["scores:read", "audiences:read", "admin"])]
        scopes: Vec<String>,
    },
    /// Print the API's OpenAPI document (what `GET /openapi.json` serves).
    Openapi,
}

/// Log lines to stderr at `ENGAGE_LOG` (error, warn, info, debug, trace;
/// default info). Requests are logged at debug.
fn init_logging() {
    let level = std::env::var("ENGAGE_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

#[derive(Debug, Subcommand)]
enum FeaturesAction {
    /// Print every feature: name, type, group, description.
    List {
        /// As the Markdown table docs/features.md carries.
        #[arg(long)]
        markdown: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsAction {
    /// Every registered model: name, version, kind, cutoff, headline metric;
    /// `*` marks the promoted version of each name.
    List {
        #[arg(long, value_parser = parse_models)]
        models: DataRoot,
    },
    /// One model's metadata (features, config, window, fingerprint,
    /// metrics) as JSON, and its promotion history.
    Show {
        #[arg(long, value_parser = parse_models)]
        models: DataRoot,
        /// NAME (the promoted version) or NAME@VERSION.
        model: ModelRef,
    },
    /// Make a version the one scoring and serving use.
    Promote {
        #[arg(long, value_parser = parse_models)]
        models: DataRoot,
        /// NAME@VERSION.
        model: ModelRef,
    },
    /// Go back to the version promoted before the current one.
    Rollback {
        #[arg(long, value_parser = parse_models)]
        models: DataRoot,
        /// NAME.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ReportAction {
    /// Print a run report readably.
    Show {
        /// A job's output directory (holding run_report.json; a model's
        /// registry directory holds one too), or a report file.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum TrainTask {
    /// Churn: no purchase within the horizon after the cutoff.
    Churn(TrainChurnArgs),
    /// Campaign response, from a feature table with a response label
    /// (`engage dataset --task response`): needs --features and --label.
    Response(TrainChurnArgs),
    /// Uplift: the effect of contacting (with each offer) on the response,
    /// from treatment/control contact history (one model per arm).
    Uplift(TrainUpliftArgs),
    /// Customer lifetime value: BG/NBD (purchases, probability alive) and
    /// Gamma-Gamma (spend per purchase) fitted on purchases before the cutoff.
    Clv(TrainClvArgs),
    /// Subscription retention: the shifted-beta-geometric model fitted on
    /// subscribers' tenures or a cohort's survivor counts; prints the
    /// parameters and the projected survival beside the observed.
    Retention(TrainRetentionArgs),
}

#[derive(Debug, clap::Args)]
struct TrainRetentionArgs {
    /// Parquet or CSV file, one row per subscriber: periods observed and
    /// whether they churned at the end of them.
    #[arg(long, value_name = "FILE", conflicts_with = "survivors", required_unless_present = "survivors")]
    tenures: Option<PathBuf>,
    /// Column of --tenures holding whole periods observed (1 to 10,000).
    #[arg(long, default_value = "periods")]
    periods_column: String,
    /// Column of --tenures: true/1 if the subscriber left at the end of
    /// those periods, false/0 if still active.
    #[arg(long, default_value = "churned")]
    churned_column: String,
    /// A cohort's active counts, comma-separated: at the start, then after
    /// each period (e.g. 1000,869,743,653).
    #[arg(long, value_delimiter = ',')]
    survivors: Vec<u64>,
    /// Periods to show in the projection.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=1000))]
    project: u32,
    /// Also write the fit and the projection to this JSON file.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct DatasetArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    features: FeatureArgs,
    /// What the labels are: churn (no purchase in the horizon), response
    /// (responded to a contact in the horizon), spend (net spend in the horizon).
    #[arg(long, value_parser = ["churn", "response", "spend"])]
    task: String,
    #[command(flatten)]
    cutoffs: CutoffArgs,
    /// Label horizon after each cutoff: `90d`, `12w` or days.
    #[arg(long, default_value = "90d", value_parser = parse_horizon)]
    horizon: u32,
    /// Response task: how long after a contact a response counts.
    #[arg(long, default_value = "14d", value_parser = parse_horizon)]
    response_window: u32,
    /// Output directory for dataset.parquet and its run report: a path or
    /// an object-store URL.
    #[arg(long)]
    out: String,
}

/// Several cutoff dates: a list, or a regular schedule.
#[derive(Debug, clap::Args)]
struct CutoffArgs {
    /// Cutoff dates, comma-separated (YYYY-MM-DD,...).
    #[arg(long, value_delimiter = ',', value_parser = parse_date, conflicts_with_all = ["every", "from", "to"])]
    as_of: Vec<NaiveDate>,
    /// A cutoff every so often (`4w`, `30d`), from --from to --to inclusive.
    #[arg(long, value_parser = parse_horizon, requires_all = ["from", "to"])]
    every: Option<u32>,
    /// First cutoff of --every (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date, requires = "every")]
    from: Option<NaiveDate>,
    /// Last possible cutoff of --every (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date, requires = "every")]
    to: Option<NaiveDate>,
}

#[derive(Debug, clap::Args)]
struct LifecycleArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    features: FeatureArgs,
    #[command(flatten)]
    cutoffs: CutoffArgs,
    /// Output directory for lifecycle_history.parquet,
    /// lifecycle_transitions.parquet and the run report.
    #[arg(long)]
    out: PathBuf,
}

impl CutoffArgs {
    fn cutoffs(&self) -> Result<Vec<NaiveDate>> {
        let mut cutoffs = match (self.every, self.from, self.to) {
            (Some(step), Some(from), Some(to)) => {
                if to < from {
                    bail!("--to {to} is before --from {from}");
                }
                let mut v = Vec::new();
                let mut d = from;
                while d <= to {
                    v.push(d);
                    d += chrono::Duration::days(step as i64);
                }
                v
            }
            _ => self.as_of.clone(),
        };
        if cutoffs.is_empty() {
            bail!("give the cutoffs: --as-of D1,D2,... or --every 4w --from D --to D");
        }
        cutoffs.sort();
        cutoffs.dedup();
        Ok(cutoffs)
    }
}

#[derive(Debug, clap::Args)]
struct TrainClvArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Cutoff date (YYYY-MM-DD): purchases strictly before it; the
    /// observation period ends the day before.
    #[arg(long, value_parser = parse_date)]
    as_of: NaiveDate,
    /// Time unit of the summaries and the fitted parameters.
    #[arg(long, default_value = "weeks", value_parser = ["days", "weeks"])]
    time_unit: String,
    /// The model registry the model is added to.
    #[arg(long, value_parser = parse_models)]
    models: DataRoot,
    /// Registry name (default `clv`).
    #[arg(long)]
    name: Option<String>,
    /// Also fit Pareto/NBD (customers may leave at any time, not only after
    /// a purchase) and report it beside BG/NBD.
    #[arg(long)]
    pareto_nbd: bool,
}

#[derive(Debug, clap::Args)]
struct TrainChurnArgs {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    features: FeatureArgs,
    /// Cutoff date (YYYY-MM-DD); the data must reach as_of + horizon.
    /// Required with --data.
    #[arg(long, value_parser = parse_date, conflicts_with = "table")]
    as_of: Option<NaiveDate>,
    /// Train on this feature table instead of --data: a Parquet or CSV
    /// file, one row per example (`engage dataset` writes one; any other
    /// works). Text columns are one-hot encoded, missing values imputed;
    /// with an `as_of` column the last cutoff is the validation set.
    #[arg(long = "features", value_name = "FILE", conflicts_with = "root", requires = "label")]
    table: Option<PathBuf>,
    /// The target column of --features (true/false or 1/0).
    #[arg(long, requires = "table")]
    label: Option<String>,
    /// The row id column of --features (default `customer_id` when the
    /// file has one, else row numbers).
    #[arg(long, requires = "table")]
    id: Option<String>,
    /// Columns of --features that are not features (comma-separated),
    /// besides the label, id, `as_of` and the label columns `engage
    /// dataset` writes.
    #[arg(long, value_delimiter = ',', requires = "table")]
    ignore: Vec<String>,
    /// Label horizon: `90d`, `12w` or a number of days.
    #[arg(long, default_value = "90d", value_parser = parse_horizon)]
    horizon: u32,
    /// The model registry the model is added to (`<models>/<name>/<version>/`).
    #[arg(long, value_parser = parse_models)]
    models: DataRoot,
    /// Registry name (default: the task).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Debug, clap::Args)]
struct TrainUpliftArgs {
    /// The feature table: a Parquet or CSV file, one row per contact
    /// record (`engage dataset --task response` writes one).
    #[arg(long = "features", value_name = "FILE")]
    table: PathBuf,
    /// The response column: an outcome control rows can have too.
    #[arg(long, default_value = "converted")]
    label: String,
    /// The column naming each row's arm: the control value or a treatment
    /// (offer); every distinct treatment gets its own model.
    #[arg(long, default_value = "treatment")]
    treatment: String,
    /// The --treatment value of control rows.
    #[arg(long, default_value = "control")]
    control: String,
    /// For control rows, the column naming the treatment they were held
    /// out from (a campaign's control group belongs to its offer): each
    /// offer is then judged against its own controls. Default `offer` when
    /// the file has it (`engage dataset` writes it), else the control group
    /// is shared by every offer.
    #[arg(long, value_name = "COLUMN")]
    control_arm: Option<String>,
    /// The row id column (default `customer_id` when the file has one).
    #[arg(long)]
    id: Option<String>,
    /// Columns that are not features (comma-separated), besides the label,
    /// treatment, id, `as_of` and the label columns `engage dataset` writes.
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// The model registry the model is added to.
    #[arg(long, value_parser = parse_models)]
    models: DataRoot,
    /// Registry name (default `uplift`).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
}

/// The model family and validation: a TOML config and flags over it.
#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// Training config (TOML): `[model]` kind and hyperparameters,
    /// `[split]` validation settings; see docs/models.md.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Model family, overriding the config's (with that family's defaults
    /// unless the config sets the same kind).
    #[arg(long, value_parser = ["logistic", "gbm"])]
    kind: Option<String>,
    /// Stratified k-fold cross-validation with K folds instead of the
    /// default split (overrides the config's `split.folds`).
    #[arg(long, value_name = "K")]
    folds: Option<usize>,
}

impl ModelArgs {
    /// The config file, if any, with the flags applied over it.
    fn train_config(&self) -> Result<TrainConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the training config {}", path.display()))?;
                toml::from_str::<TrainConfig>(&text)
                    .with_context(|| format!("training config {}", path.display()))?
            }
            None => TrainConfig::default(),
        };
        if let Some(kind) = &self.kind
            && config.model.kind() != kind
        {
            config.model = ClassifierConfig::default_for(kind).expect("clap checked the kind");
        }
        if self.folds.is_some() {
            config.split.folds = self.folds;
        }
        config.check().with_context(|| match &self.config {
            Some(p) => format!("training config {}", p.display()),
            None => "training flags".into(),
        })?;
        Ok(config)
    }
}

/// Where the data is and how to read it: shared by every command that reads
/// the contract tables.
#[derive(Debug, clap::Args)]
struct DataArgs {
    /// Data root holding the contract tables: a directory or a file:// URL.
    #[arg(long = "data")]
    root: Option<String>,
    /// Country calling code for phone numbers written without one.
    #[arg(long, default_value = "1", value_parser = parse_country_code)]
    default_country_code: String,
    /// An identifier associated with more CRM customers than this links
    /// nothing and is flagged as shared.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    max_customers_per_identifier: u64,
    /// Erasure list (written by `engage forget`); its people are left out.
    /// Default: $ENGAGE_ERASURE_LIST, else $ENGAGE_HOME/erasure_list.json,
    /// ENGAGE_HOME defaulting to ~/.engage.
    #[arg(long)]
    erasure_list: Option<PathBuf>,
    /// Memory the job may hold (e.g. 4GiB): the SQL engine gets seven
    /// eighths of it, past which sorts, aggregations and joins spill to
    /// disk; the identity graph is counted in that share. Default: unbounded.
    #[arg(long, value_parser = parse_memory_limit)]
    memory_limit: Option<ByteSize>,
    /// Directory for spill files. Default: the system temp directory.
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Where the feature SQL runs: `local` (in process), a Ballista
    /// scheduler `ballista://host:port`, or `ballista://standalone`
    /// (builds with `--features ballista`; docs/scale-out.md).
    #[arg(long = "engine", default_value = "local")]
    engine_url: String,
    /// With a Ballista engine: where the feature SQL's input tables are
    /// staged, a directory every executor sees at the same path or an
    /// object store prefix (s3://bucket/prefix).
    #[arg(long)]
    stage_dir: Option<String>,
    /// Keep what checking the inputs and building the identity graph found
    /// in this local directory, so that a later run over the same input
    /// files skips that pass (docs/scale-out.md). Default: every run reads
    /// every row.
    #[arg(long)]
    checked_inputs: Option<PathBuf>,
}

/// How features are defined: lifecycle day limits, the response funnel
/// (see docs/features.md).
#[derive(Debug, clap::Args)]
struct FeatureArgs {
    /// The response funnel's stages, in order (the responses table's
    /// `stage` values); the funnel depth of a response is its position.
    #[arg(long, value_delimiter = ',', default_value = "click,visit,purchase")]
    response_funnel: Vec<String>,
    /// Lifecycle: a first purchase at most this many days ago is `new`.
    #[arg(long, default_value_t = LifecycleRules::default().new_days)]
    lifecycle_new_days: u32,
    /// Lifecycle: a last purchase at most this many days ago is `active`.
    #[arg(long, default_value_t = LifecycleRules::default().active_days)]
    lifecycle_active_days: u32,
    /// Lifecycle: else at most this many days ago is `at_risk`.
    #[arg(long, default_value_t = LifecycleRules::default().at_risk_days)]
    lifecycle_at_risk_days: u32,
    /// Lifecycle: else at most this many days ago is `dormant`, beyond is
    /// `churned`; a gap this long before a recent purchase is `reactivated`.
    #[arg(long, default_value_t = LifecycleRules::default().dormant_days)]
    lifecycle_dormant_days: u32,
}

impl FeatureArgs {
    /// `source` with these feature definitions.
    fn apply(&self, source: DataSource) -> DataSource {
        let lifecycle = LifecycleRules {
            new_days: self.lifecycle_new_days,
            active_days: self.lifecycle_active_days,
            at_risk_days: self.lifecycle_at_risk_days,
            dormant_days: self.lifecycle_dormant_days,
        };
        DataSource { lifecycle, response_funnel: self.response_funnel.clone(), ..source }
    }
}

impl std::fmt::Display for DataArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.root.as_deref().unwrap_or_default())
    }
}

impl DataArgs {
    fn source(&self) -> Result<DataSource> {
        let Some(root) = self.root.as_deref() else {
            bail!("--data is required: the directory or file:// URL holding the contract tables");
        };
        let list = match &self.erasure_list {
            Some(p) => p.clone(),
            None => default_erasure_list()?,
        };
        if self.memory_limit.is_some() {
            // A job given a limit is one whose peak matters.
            crate::keep_memory_close_to_use();
        }
        Ok(DataSource {
            root: DataRoot::parse(root)?,
            identity: IdentityOptions {
                default_country_code: self.default_country_code.clone(),
                max_customers_per_identifier: self.max_customers_per_identifier as usize,
            },
            erasure: ErasureList::load(&list)?,
            lifecycle: LifecycleRules::default(),
            response_funnel: engage_pipeline::default_response_funnel(),
            engine: EngineSettings {
                url: Some(self.engine_url.clone()),
                stage_dir: self.stage_dir.clone(),
                memory_limit: self.memory_limit,
                spill_dir: self.spill_dir.clone(),
                checked_inputs: self.checked_inputs.clone(),
                spill_disabled: false,
            },
        })
    }
}

/// Mirrors the snapshot root at `url` into `cache`: once now (so the
/// server starts ready when the store has a snapshot), then every
/// `interval_ms` on a thread of its own. Failures are logged and retried;
/// the server keeps serving what the cache has.
async fn follow_snapshots(url: &str, cache: &std::path::Path, interval_ms: u64) -> Result<()> {
    let remote = DataRoot::parse_with("--scores", url, &Default::default())?;
    std::fs::create_dir_all(cache)
        .with_context(|| format!("creating the snapshot cache {}", cache.display()))?;
    let pull = |remote: DataRoot, cache: PathBuf| async move {
        match engage_pipeline::publish::pull(&remote, &cache).await {
            Ok(Some(id)) => tracing::info!(snapshot = %id, from = %remote, "downloaded snapshot"),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(from = %remote, error = %format!("{:#}", anyhow::Error::from(e)), "cannot follow snapshots")
            }
        }
    };
    pull(remote.clone(), cache.to_path_buf()).await;
    if interval_ms == 0 {
        return Ok(());
    }
    let cache = cache.to_path_buf();
    let interval = std::time::Duration::from_millis(interval_ms);
    std::thread::Builder::new()
        .name("snapshot-follower".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            loop {
                std::thread::sleep(interval);
                rt.block_on(pull(remote.clone(), cache.clone()));
            }
        })
        .context("starting the snapshot follower")?;
    Ok(())
}

/// An `--out` directory: a path, or an object-store URL whose outputs are
/// written to a local staging directory and uploaded once complete, the
/// run report last.
struct OutDir {
    local: PathBuf,
    remote: Option<DataRoot>,
}

impl OutDir {
    fn parse(given: &str) -> Result<OutDir> {
        let root = DataRoot::parse_with("--out", given, &Default::default())?;
        if let Some(local) = root.local_path() {
            return Ok(OutDir { local, remote: None });
        }
        let local = std::env::temp_dir().join(format!("engage-out-{}", std::process::id()));
        Ok(OutDir { local, remote: Some(root) })
    }

    fn local(&self) -> &std::path::Path {
        &self.local
    }

    /// Uploads a URL's outputs; nothing for a path.
    async fn finish(self) -> Result<()> {
        let Some(remote) = &self.remote else { return Ok(()) };
        engage_pipeline::publish::upload_outputs(&self.local, remote)
            .await
            .with_context(|| format!("uploading the outputs to {remote}"))?;
        Ok(())
    }
}

impl Drop for OutDir {
    /// The staging directory of a URL goes, whether the job succeeded or not.
    fn drop(&mut self) {
        if self.remote.is_some() {
            let _ = std::fs::remove_dir_all(&self.local);
        }
    }
}

/// A nightly config and its data source (the erasure list as configured,
/// else the default every command uses).
fn nightly_config(path: &std::path::Path) -> Result<(NightlyConfig, engage_pipeline::DataSource)> {
    let cfg = NightlyConfig::load(path).with_context(|| format!("reading {}", path.display()))?;
    let list = match &cfg.data.erasure_list {
        Some(p) => p.clone(),
        None => default_erasure_list()?,
    };
    let source = cfg.source(&list)?;
    Ok((cfg, source))
}

fn default_erasure_list() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENGAGE_ERASURE_LIST") {
        return Ok(PathBuf::from(p));
    }
    let home = match std::env::var_os("ENGAGE_HOME") {
        Some(h) => PathBuf::from(h),
        None => match std::env::var_os("HOME") {
            Some(h) => PathBuf::from(h).join(".engage"),
            None => bail!("no erasure list: pass --erasure-list or set ENGAGE_HOME"),
        },
    };
    Ok(home.join("erasure_list.json"))
}

fn parse_memory_limit(s: &str) -> Result<ByteSize, String> {
    s.parse()
}

fn parse_country_code(s: &str) -> Result<String, String> {
    engage_pipeline::identity::check_country_code(s).map(|()| s.to_string())
}

/// `--models`: a registry directory or URL (cloud stores configured from
/// the environment).
fn parse_models(s: &str) -> Result<DataRoot, String> {
    DataRoot::parse_with("--models", s, &Default::default()).map_err(|e| e.to_string())
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| format!("`{s}` is not a date YYYY-MM-DD ({e})"))
}

/// `90d`, `12w` or `90` (days) -> days.
fn parse_horizon(s: &str) -> Result<u32, String> {
    let (num, mult) = match s.strip_suffix('d') {
        Some(n) => (n, 1),
        None => match s.strip_suffix('w') {
            Some(n) => (n, 7),
            None => (s, 1),
        },
    };
    match num.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n * mult),
        _ => Err(format!("`{s}` is not a horizon: use e.g. 90d, 12w or 90")),
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Generate { customers, seed, out, start, end } => {
            let opts = GenerateOptions { start, end, ..GenerateOptions::new(customers, seed, out.clone()) };
            let s = tokio::task::spawn_blocking(move || generate(&opts))
                .await?
                .with_context(|| format!("generating sample data into {}", out.display()))?;
            println!(
                "wrote {} customers, {} transactions, {} interactions, {} campaigns, {} contacts, {} responses to {}",
                s.customers,
                s.transactions,
                s.interactions,
                s.campaigns,
                s.contacts,
                s.responses,
                out.display()
            );
        }
        Command::Features { action: Some(FeaturesAction::List { markdown }), .. } => {
            let features = engage_pipeline::registry::features();
            if markdown {
                print!("{}", engage_pipeline::registry::markdown(&features));
            } else {
                print!("{}", engage_pipeline::registry::text(&features));
            }
        }
        Command::Features { action: None, data, features, as_of, out } => {
            let (as_of, out) = (as_of.context("--as-of is required")?, out.context("--out is required")?);
            let source = features.apply(data.source()?);
            let out = OutDir::parse(&out)?;
            let run = build_features(&source, as_of, out.local())
                .await
                .with_context(|| format!("building features from {}", data))?;
            out.finish().await?;
            print!("{}", run.report.render());
            println!("{} customers x {} features as of {}", run.rows, run.columns.len() - 1, as_of);
        }
        Command::Identity { data, out } => {
            let out = OutDir::parse(&out)?;
            let report = build_identity(&data.source()?, out.local())
                .await
                .with_context(|| format!("resolving identities in {}", data))?;
            out.finish().await?;
            print!("{}", report.render());
        }
        Command::Forget { data, id_type, id, scrub } => {
            let source = data.source()?;
            let list = source.erasure.path.clone().unwrap_or_default();
            let run = forget(&source, &id_type, &id, &scrub)
                .await
                .with_context(|| format!("forgetting a {id_type} (data {})", data))?;
            println!(
                "{}: {} identifiers added to the erasure list {} ({} listed in all)",
                if run.found_in_data {
                    "found in the data"
                } else {
                    "not found in the data; the identifier alone is listed"
                },
                run.identifiers_added,
                list.display(),
                run.list_size
            );
            for (dir, s) in &run.scrubbed {
                println!(
                    "{dir}: {} rows removed from {} of {} Parquet files",
                    s.rows_removed, s.files_rewritten, s.files_checked
                );
            }
        }
        Command::Dataset(a) => {
            let out = OutDir::parse(&a.out)?;
            let task = match a.task.as_str() {
                "churn" => Task::Churn,
                "response" => Task::Response,
                _ => Task::Spend,
            };
            let opts = DatasetOptions {
                source: a.features.apply(a.data.source()?),
                task,
                cutoffs: a.cutoffs.cutoffs()?,
                horizon_days: a.horizon,
                response_days: a.response_window,
                out: out.local().to_path_buf(),
            };
            let run = build_dataset(&opts)
                .await
                .with_context(|| format!("building the {} training set from {}", a.task, a.data))?;
            out.finish().await?;
            print!("{}", run.report.render());
            println!(
                "{} rows x {} columns at {} cutoffs ({} .. {})",
                run.rows,
                run.columns.len(),
                opts.cutoffs.len(),
                opts.cutoffs[0],
                opts.cutoffs[opts.cutoffs.len() - 1]
            );
        }
        Command::Lifecycle(a) => {
            let source = a.features.apply(a.data.source()?);
            let run = build_lifecycle(&source, &a.cutoffs.cutoffs()?, &a.out)
                .await
                .with_context(|| format!("building the lifecycle history from {}", a.data))?;
            print!("{}", run.report.render());
            print!("{}", lifecycle_table(&run));
            println!("{} rows of history at {} cutoffs", run.history_rows, run.stage_counts.len());
        }
        Command::Report { action: None, scores, out } => {
            let (Some(scores), Some(out)) = (scores, out) else {
                bail!("engage report: give --scores DIR --out FILE, or `engage report show DIR`");
            };
            let html = engage_serving::dashboard::export(&scores)
                .with_context(|| format!("building the dashboard of {}", scores.display()))?;
            engage_models::snapshot::write_atomic(&out, html.as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            println!("dashboard of {} written to {} ({} bytes)", scores.display(), out.display(), html.len());
        }
        Command::Report { action: Some(ReportAction::Show { dir }), .. } => {
            let report = RunReport::read(&dir)
                .with_context(|| format!("reading the run report in {}", dir.display()))?;
            print!("{}", report.render());
        }
        Command::Train { task: task @ (TrainTask::Churn(_) | TrainTask::Response(_)) } => {
            let (name, a) = match task {
                TrainTask::Churn(a) => ("churn", a),
                TrainTask::Response(a) => ("response", a),
                TrainTask::Clv(_) | TrainTask::Uplift(_) | TrainTask::Retention(_) => {
                    unreachable!("excluded by the pattern")
                }
            };
            let config = a.model.train_config()?;
            let run = if let Some(table) = a.table {
                let opts = TrainTableOptions {
                    label: a.label.clone().context("--label is required with --features")?,
                    path: table,
                    id: a.id,
                    ignore: a.ignore,
                    task: name.into(),
                    models: a.models,
                    name: a.name,
                    config,
                };
                train_on_table(&opts)
                    .await
                    .with_context(|| format!("training a {name} model on {}", opts.path.display()))?
            } else {
                if name == "response" {
                    bail!(
                        "train response needs --features FILE --label COLUMN (a training set from `engage dataset --task response`)"
                    );
                }
                let opts = TrainChurnOptions {
                    source: a.features.apply(a.data.source()?),
                    as_of: a.as_of.context("--as-of is required with --data")?,
                    horizon_days: a.horizon,
                    models: a.models,
                    name: a.name,
                    config,
                };
                train_churn_model(&opts)
                    .await
                    .with_context(|| format!("training a churn model on {}", a.data))?
            };
            if let Some(report) = &run.report {
                print!("{}", report.render());
            }
            let (art, m) = (&run.artifact, &run.artifact.metrics);
            println!("{} model {} ({})", art.task, art.model_version, art.params.kind());
            println!("{}", art.split);
            println!(
                "validation: ROC AUC {:.3}, PR AUC {:.3}, log loss {:.4}, Brier {:.4}, top-decile lift {:.2}",
                m.roc_auc, m.pr_auc, m.log_loss, m.brier, m.top_decile_lift
            );
            for warning in run.report.iter().flat_map(|r| &r.warnings) {
                eprintln!("{warning}");
            }
            println!("registered {}{}", run.dir, promoted_note(run.promoted, &art.name));
        }
        Command::Train { task: TrainTask::Uplift(a) } => {
            let opts = TrainUpliftOptions {
                table: TrainTableOptions {
                    path: a.table,
                    label: a.label,
                    id: a.id,
                    ignore: a.ignore,
                    task: "uplift".into(),
                    models: a.models,
                    name: a.name,
                    config: a.model.train_config()?,
                },
                treatment: a.treatment,
                control: a.control,
                control_arm: a.control_arm,
            };
            let run = train_uplift_on_table(&opts)
                .await
                .with_context(|| format!("training an uplift model on {}", opts.table.path.display()))?;
            print!("{}", run.report.render());
            print!("{}", uplift_summary(&run.artifact));
            for warning in &run.report.warnings {
                eprintln!("{warning}");
            }
            println!("registered {}{}", run.dir, promoted_note(run.promoted, &run.artifact.name));
        }
        Command::Train { task: TrainTask::Clv(a) } => {
            let opts = TrainClvOptions {
                source: a.data.source()?,
                as_of: a.as_of,
                time_unit: if a.time_unit == "days" { TimeUnit::Days } else { TimeUnit::Weeks },
                models: a.models,
                name: a.name,
                pareto_nbd: a.pareto_nbd,
            };
            let run = train_clv_model(&opts)
                .await
                .with_context(|| format!("training the CLV models on {}", a.data))?;
            print!("{}", run.report.render());
            let (bg, gg) = (&run.artifact.bg_nbd, &run.artifact.gamma_gamma);
            let status = |converged| if converged { "converged" } else { "NOT converged" };
            println!(
                "BG/NBD ({} customers, time in {}): r {:.4}, alpha {:.4}, a {:.4}, b {:.4}; log-likelihood {:.2}, {}",
                bg.customers,
                run.artifact.time_unit,
                bg.params.r,
                bg.params.alpha,
                bg.params.a,
                bg.params.b,
                bg.log_likelihood,
                status(bg.converged)
            );
            println!(
                "Gamma-Gamma ({} customers with repeat purchases): p {:.4}, q {:.4}, gamma {:.4}; log-likelihood {:.2}, {}",
                gg.customers,
                gg.params.p,
                gg.params.q,
                gg.params.gamma,
                gg.log_likelihood,
                status(gg.converged)
            );
            if let Some(p) = &run.artifact.pareto_nbd {
                println!(
                    "Pareto/NBD: r {:.4}, alpha {:.4}, s {:.4}, beta {:.4}; log-likelihood {:.2}, {}",
                    p.params.r,
                    p.params.alpha,
                    p.params.s,
                    p.params.beta,
                    p.log_likelihood,
                    status(p.converged)
                );
            }
            if let Some(h) = &run.diagnostics.holdout {
                println!(
                    "holdout ({:.1} {}): {:.0} repeat purchases, BG/NBD expected {:.0} ({:+.1} %)",
                    h.length,
                    run.artifact.time_unit,
                    h.actual,
                    h.expected,
                    (h.expected / h.actual.max(1e-12) - 1.0) * 100.0
                );
            }
            if let Some(h) = run.diagnostics.pareto_nbd.as_ref().and_then(|d| d.holdout.as_ref()) {
                println!("holdout: Pareto/NBD expected {:.0}", h.expected);
            }
            println!("registered {}{}", run.dir, promoted_note(run.promoted, &run.artifact.name));
        }
        Command::Train { task: TrainTask::Retention(a) } => retention_command(a).await?,
        Command::Models { action } => models_command(action).await?,
        Command::Nightly { config, as_of } => {
            crate::keep_memory_close_to_use();
            let (cfg, source) = nightly_config(&config)?;
            let as_of = as_of.or(cfg.as_of).unwrap_or_else(|| chrono::Utc::now().date_naive());
            let run = engage_pipeline::nightly::run(&cfg, source, as_of)
                .await
                .with_context(|| format!("nightly run of {} as of {as_of}", config.display()))?;
            print_published(&run.scored);
            if let Some(p) = &run.pushed {
                println!(
                    "pushed snapshot {} to {} ({} objects written, {} old snapshots removed)",
                    p.id,
                    cfg.output.publish_to.as_deref().unwrap_or_default(),
                    p.objects.len(),
                    p.removed.len()
                );
            }
        }
        Command::Campaigns {
            action: CampaignsAction::Report { config, as_of, response_days, holdout_days, out },
        } => {
            let (cfg, source) = nightly_config(&config)?;
            let as_of = as_of.or(cfg.as_of).unwrap_or_else(|| chrono::Utc::now().date_naive());
            let report = engage_pipeline::nightly::campaigns_report(
                &cfg,
                source,
                as_of,
                response_days,
                holdout_days,
                &out,
            )
            .await
            .with_context(|| format!("measuring the campaigns of {}", cfg.data.root))?;
            print!("{}", campaigns_table(&report.campaigns, as_of, response_days));
            if let Some(h) = &report.universal_holdout {
                println!(
                    "universal holdout since {}: {} held out bought at {:.2}%, {} marketed at {:.2}%: \
                     lift {:+.2} pts (95 % interval {:+.2} to {:+.2}), incremental revenue {:.2}",
                    h.since,
                    h.holdout.customers,
                    h.holdout.rate() * 100.0,
                    h.marketed.customers,
                    h.marketed.rate() * 100.0,
                    h.lift.absolute * 100.0,
                    h.lift.absolute_low * 100.0,
                    h.lift.absolute_high * 100.0,
                    h.incremental_revenue
                );
            }
            for p in &report.written {
                println!("wrote {}", p.display());
            }
        }
        Command::Audience { config, campaign, out, dry_run } => {
            let (cfg, source) = nightly_config(&config)?;
            let run = engage_pipeline::nightly::audience(&cfg, source, &campaign, &out, dry_run)
                .await
                .with_context(|| format!("selecting the audience of {campaign}"))?;
            for line in run.summary.lines() {
                println!("{line}");
            }
            println!("from snapshot {}", run.snapshot_id);
            for p in &run.written {
                println!("wrote {}", p.display());
            }
        }
        Command::Score { data, features, as_of, models, model, out } => {
            let source = features.apply(data.source()?);
            let opts = ScoreOptions::score(source, as_of, &models, &model, &out);
            let names: Vec<String> = model.iter().map(|m| m.to_string()).collect();
            let run = score(&opts)
                .await
                .with_context(|| format!("scoring {} with {} from {}", data, names.join(", "), models))?;
            print_published(&run);
        }
        Command::Serve { action: Some(ServeAction::Keygen { name, scopes }), .. } => {
            let (key, hash) = engage_serving::auth::generate_key();
            let scopes: Vec<String> = scopes.iter().map(|s| format!("\"{s}\"")).collect();
            println!("# API key for {name} (give it to them; it is not stored anywhere):");
            println!("#   {key}");
            println!("# Add this to the server config:");
            println!(
                "[[api_keys]]\nname = \"{name}\"\nsha256 = \"{hash}\"\nscopes = [{}]",
                scopes.join(", ")
            );
        }
        Command::Serve { action: Some(ServeAction::Openapi), .. } => {
            println!("{}", engage_serving::openapi_json())
        }
        Command::Serve { action: None, config, scores, cache_dir, bind, insecure_no_auth } => {
            let mut cfg = match &config {
                Some(path) => engage_serving::ServeConfig::load(path)?,
                None => engage_serving::ServeConfig::default(),
            };
            if let Some(scores) = scores {
                if DataRoot::is_remote(&scores) {
                    cfg.follow = Some(scores.clone());
                    // One cache per URL: servers following different roots
                    // must not prune each other's snapshots.
                    let name: String =
                        scores.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                    cfg.scores = cache_dir
                        .unwrap_or_else(|| std::env::temp_dir().join(format!("engage-snapshots-{name}")));
                } else {
                    cfg.scores = PathBuf::from(scores);
                }
            } else if config.is_none() {
                bail!(
                    "--scores or --config is required: where are the snapshots (`engage nightly` writes them)?"
                );
            }
            if let Some(bind) = bind {
                cfg.bind = bind;
            }
            cfg.insecure_no_auth |= insecure_no_auth;
            init_logging();
            if let Some(url) = cfg.follow.clone() {
                follow_snapshots(&url, &cfg.scores, cfg.watch_interval_ms).await?;
            }
            if !cfg.scores.is_dir() {
                bail!(
                    "scores {}: not a directory (run `engage nightly` or `engage score --out {}` first)",
                    cfg.scores.display(),
                    cfg.scores.display()
                );
            }
            if cfg.insecure_no_auth {
                tracing::warn!(
                    "serving WITHOUT API keys (--insecure-no-auth): anyone reaching the port reads every score"
                );
            }
            let running = engage_serving::start(&cfg)
                .with_context(|| format!("starting the server on {}", cfg.scores.display()))?;
            for addr in &running.addrs {
                eprintln!("engage: serving {} on http://{addr}", cfg.scores.display());
            }
            running.server.await.context("running the server")?;
        }
        Command::Demo(args) => demo::run(args).await?,
    }
    Ok(())
}

/// `engage campaigns report` as text: one line per campaign and stage.
fn campaigns_table(results: &[engage_models::lift::CampaignResult], as_of: NaiveDate, days: u32) -> String {
    let pct = |v: f64| if v.is_finite() { format!("{:.2}%", v * 100.0) } else { "n/a".into() };
    let pts = |v: f64| if v.is_finite() { format!("{:+.2}", v * 100.0) } else { "n/a".into() };
    let mut out = format!("campaign results as of {as_of} (responses within {days} days of the contact)\n");
    out += &format!(
        "{:<20} {:<14} {:>9} {:>8} {:>8} {:>8} {:>9} {:>17} {:>12}\n",
        "campaign", "stage", "treated", "rate", "control", "rate", "lift pts", "95 % interval", "incremental"
    );
    for r in results {
        for s in &r.stages {
            let l = &s.lift;
            out += &format!(
                "{:<20} {:<14} {:>9} {:>8} {:>8} {:>8} {:>9} {:>17} {:>12}\n",
                r.campaign_id,
                s.stage,
                s.treatment.customers,
                pct(s.treatment.rate()),
                s.control.customers,
                pct(s.control.rate()),
                pts(l.absolute),
                format!("{} to {}", pts(l.absolute_low), pts(l.absolute_high)),
                if l.incremental_responders.is_finite() {
                    format!("{:.1}", l.incremental_responders)
                } else {
                    "n/a".into()
                }
            );
        }
        let money = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{v:.2}"));
        out += &format!(
            "{:<20} incremental revenue {}, cost {}, cost per incremental response {}\n",
            "",
            if r.incremental_revenue.is_finite() {
                format!("{:.2}", r.incremental_revenue)
            } else {
                "n/a".into()
            },
            money(r.cost),
            money(r.cost_per_incremental_response)
        );
    }
    out
}

/// The run report and where the snapshot went.
fn print_published(run: &ScoreRun) {
    print!("{}", run.report.render());
    println!(
        "published snapshot {} ({} customers) at {}",
        run.manifest.snapshot_id,
        run.manifest.rows,
        run.snapshot_dir.display()
    );
    if !run.pruned.is_empty() {
        println!("removed older snapshots: {}", run.pruned.join(", "));
    }
}

/// What `engage train uplift` prints: the split and each treatment's
/// validation figures.
fn uplift_summary(art: &engage_models::uplift::UpliftArtifact) -> String {
    let m = &art.metrics;
    let mut out = format!(
        "uplift model {} ({} per arm)\n{}\nvalidation: {} rows, Qini {:.3}, control response ROC AUC {:.3}\n",
        art.model_version,
        art.params.kind(),
        art.split,
        m.rows,
        m.qini,
        m.control_response_auc
    );
    out += &format!(
        "  {:<16} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>12}\n",
        "treatment", "treated", "control", "rate", "ctl rate", "obs. pts", "pred. pts", "Qini", "top 10 %"
    );
    for a in &m.arms {
        let top = a
            .uplift_at
            .first()
            .and_then(|(_, u)| *u)
            .map_or("n/a".into(), |u| format!("{:+.2} pts", u * 100.0));
        out += &format!(
            "  {:<16} {:>8} {:>8} {:>8.2}% {:>8.2}% {:>+9.2} {:>+9.2} {:>7.3} {:>12}\n",
            a.treatment,
            a.treated_rows,
            a.control_rows,
            a.treated_rate * 100.0,
            a.control_rate * 100.0,
            a.observed_uplift * 100.0,
            a.predicted_uplift * 100.0,
            a.qini,
            top
        );
    }
    if !m.unvalidated.is_empty() {
        out += &format!("  not validated (a model, but no validation row): {}\n", m.unvalidated.join(", "));
    }
    for d in &m.dropped {
        out += &format!(
            "  left out: {} ({} treated rows; a model of its own needs {})\n",
            d.treatment,
            d.treated_rows,
            engage_models::uplift::MIN_ARM_ROWS
        );
    }
    out
}

/// How a training run ends its output: whether scoring will use it.
fn promoted_note(promoted: bool, name: &str) -> String {
    if promoted {
        format!(" (promoted: the first {name} model)")
    } else {
        format!(" (not promoted; `engage models promote` makes it the {name} model scoring uses)")
    }
}

/// `engage models ...`.
async fn models_command(action: ModelsAction) -> Result<()> {
    match action {
        ModelsAction::List { models } => {
            let entries = open_registry(&models)
                .await?
                .registry()
                .list()
                .with_context(|| format!("listing {models}"))?;
            if entries.is_empty() {
                println!("no models under {models}");
                return Ok(());
            }
            println!(
                "  {:<12} {:<40} {:<20} {:<10} {:<20} headline",
                "name", "version", "kind", "as_of", "trained_at"
            );
            for e in entries {
                let m = &e.meta;
                let metric = |name: &str| m.metrics.get(name).and_then(|v| v.as_f64());
                let headline = match (metric("roc_auc"), metric("qini")) {
                    (Some(auc), _) => format!("ROC AUC {auc:.3}"),
                    (None, Some(qini)) => format!("Qini {qini:.3}"),
                    (None, None) => match m.metrics.pointer("/bg_nbd/converged").and_then(|v| v.as_bool()) {
                        Some(true) => "converged".into(),
                        Some(false) => "NOT converged".into(),
                        None => String::new(),
                    },
                };
                println!(
                    "{} {:<12} {:<40} {:<20} {:<10} {:<20} {headline}",
                    if e.promoted { "*" } else { " " },
                    m.name,
                    m.version,
                    m.kind,
                    m.as_of,
                    m.trained_at
                );
            }
        }
        ModelsAction::Show { models, model } => {
            let store = open_registry(&models).await?;
            let registry = store.registry();
            let (meta, path) = registry.resolve(&model).with_context(|| format!("looking up {model}"))?;
            let promotions = registry.promotions(&meta.name)?;
            let shown = serde_json::json!({
                "meta": meta,
                "artifact": store.display(&path),
                "promoted": promotions.stack.last() == Some(&meta.version),
                "promotions": promotions.events,
            });
            println!("{}", serde_json::to_string_pretty(&shown).expect("json"));
        }
        ModelsAction::Promote { models, model } => {
            let Some(version) = &model.version else {
                bail!("promote needs NAME@VERSION (see `engage models list --models {models}`)");
            };
            let store = open_registry(&models).await?;
            store.registry().promote(&model.name, version).with_context(|| format!("promoting {model}"))?;
            store.push().await.with_context(|| format!("saving the promotion to {models}"))?;
            println!("{} now uses {version}", model.name);
        }
        ModelsAction::Rollback { models, name } => {
            let store = open_registry(&models).await?;
            let back = store.registry().rollback(&name).with_context(|| format!("rolling back {name}"))?;
            store.push().await.with_context(|| format!("saving the rollback to {models}"))?;
            println!("{name} now uses {back}");
        }
    }
    Ok(())
}

/// The registry at `--models` (a store's index copied locally).
async fn open_registry(models: &DataRoot) -> Result<ModelStore> {
    ModelStore::open(models).await.with_context(|| format!("reading the model registry {models}"))
}

/// Customers per lifecycle stage at each cutoff, one row per cutoff.
fn lifecycle_table(run: &LifecycleRun) -> String {
    let width = run.stages.iter().map(|s| s.len()).max().unwrap_or(0).max(9);
    let mut out = format!("\n{:<12}", "as_of");
    for stage in &run.stages {
        out += &format!(" {stage:>width$}");
    }
    out.push('\n');
    for (as_of, counts) in &run.stage_counts {
        out += &format!("{:<12}", as_of.to_string());
        for n in counts {
            out += &format!(" {n:>width$}");
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

/// `engage train retention`: fits sBG and prints (and optionally writes)
/// the parameters and the projection.
async fn retention_command(a: TrainRetentionArgs) -> Result<()> {
    use engage_models::retention::{ShiftedBetaGeometric, cohort_tenures};
    use engage_pipeline::jobs::MAX_TENURE;
    const MAX_COHORT: u64 = 100_000_000;
    let (tenures, source) = match &a.tenures {
        Some(path) => (
            engage_pipeline::jobs::read_tenures(path, &a.periods_column, &a.churned_column)
                .await
                .with_context(|| format!("reading tenures from {}", path.display()))?,
            path.display().to_string(),
        ),
        None => {
            if a.survivors.len() < 2 || a.survivors.windows(2).any(|w| w[1] > w[0]) {
                bail!(
                    "--survivors {:?}: expected the cohort's size and at least one later count, never rising",
                    a.survivors
                );
            }
            if a.survivors[0] > MAX_COHORT || a.survivors.len() > MAX_TENURE as usize + 1 {
                bail!(
                    "--survivors: a cohort of at most {MAX_COHORT} subscribers over at most {MAX_TENURE} periods"
                );
            }
            (cohort_tenures(&a.survivors), format!("--survivors {}", a.survivors.len() - 1))
        }
    };
    let fit = ShiftedBetaGeometric::fit(&tenures).with_context(|| format!("fitting sBG on {source}"))?;
    let projection = fit.params.projection(&tenures, a.project);
    let status = if fit.converged { "converged" } else { "NOT converged" };
    if !fit.converged {
        eprintln!(
            "warning: the sBG fit did not converge; its parameters are the best found, not the maximum"
        );
    }
    println!(
        "shifted-beta-geometric ({} subscribers from {source}): alpha {:.4}, beta {:.4}; log-likelihood {:.2}, {status}",
        fit.customers, fit.params.alpha, fit.params.beta, fit.log_likelihood
    );
    println!("{:>6}  {:>9}  {:>9}  {:>9}  {:>8}", "period", "survival", "observed", "retention", "at risk");
    for p in &projection {
        let observed = p.observed_survival.map_or("-".to_string(), |s| format!("{s:.4}"));
        println!(
            "{:>6}  {:>9.4}  {observed:>9}  {:>9.4}  {:>8}",
            p.period, p.survival, p.retention_rate, p.at_risk
        );
    }
    if let Some(out) = &a.out {
        let json = serde_json::json!({
            "model": "shifted_beta_geometric",
            "source": source,
            "fit": fit,
            "projection": projection,
        });
        let bytes = serde_json::to_vec_pretty(&json).expect("plain data serialises");
        engage_models::snapshot::write_atomic(out, &bytes)
            .with_context(|| format!("writing {}", out.display()))?;
        println!("written to {}", out.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons() {
        assert_eq!(parse_horizon("90d"), Ok(90));
        assert_eq!(parse_horizon("12w"), Ok(84));
        assert_eq!(parse_horizon("30"), Ok(30));
        assert!(parse_horizon("0d").is_err());
        assert!(parse_horizon("3m").is_err());
    }
}
