//! `engage generate`: deterministic sample data that looks like a retail CRM
//! business and carries real, learnable signal.
//!
//! Each customer has latent traits drawn once: a churn risk `z` that sets the
//! churn hazard and the complaint rate, a heavy-tailed purchase rate and
//! order value, an engagement level and channel preferences. The customer
//! buys as a Poisson process until a churn time drawn from the hazard; in
//! the 120 days before churning, purchases, email opens, visits and app use
//! decay and complaints rise, which is what features can pick up. Events are
//! keyed the way real systems key them (web by email or only a cookie, the
//! call center by phone, the store by loyalty card), with formatting noise.
//! Wave and trigger campaigns draw random control groups; purchase responses
//! come from the customer's own purchases plus an incremental effect of
//! treatment that depends on the customer's state, so propensity and uplift
//! are learnable. The latent traits are written to `truth/` for tests.
//!
//! Every customer has its own random stream derived from (seed, index), so
//! output is identical for a seed however it is chunked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Float64Builder, StringBuilder, TimestampMicrosecondBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma, LogNormal, Normal};

use crate::error::{PipelineError, Result, io};
use crate::output::writer_properties;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Number of customers (> 0).
    pub customers: usize,
    /// Seed: the same seed gives the same files.
    pub seed: u64,
    /// Output directory; must not exist or be empty.
    pub out: PathBuf,
    /// First day of event history (default 2024-01-01).
    pub start: NaiveDate,
    /// Last day of event history, inclusive (default 2026-06-30).
    pub end: NaiveDate,
}

impl GenerateOptions {
    /// Defaults for everything but the output directory.
    pub fn new(customers: usize, seed: u64, out: impl Into<PathBuf>) -> GenerateOptions {
        GenerateOptions {
            customers,
            seed,
            out: out.into(),
            start: NaiveDate::from_ymd_opt(2024, 1, 1).expect("valid date"),
            end: NaiveDate::from_ymd_opt(2026, 6, 30).expect("valid date"),
        }
    }
}

/// The generator's truth for contacts, including ones it did not make
/// (e.g. those `engage nightly` selects after the history ends): each of
/// `customer_ids` (as generated with `opts`, e.g. `C0000042`) contacted
/// at `at` by a campaign of `strength` (generated waves have 0.04 to
/// 0.16) buys within the response window with probability `p_control`
/// without the contact and `p_treatment` with it. `None` for an id the
/// generator did not make. The same figures as `truth/contacts` for the
/// contacts it made.
pub fn contact_truth<S: AsRef<str>>(
    opts: &GenerateOptions,
    customer_ids: &[S],
    at: chrono::DateTime<chrono::Utc>,
    strength: f64,
) -> Vec<Option<(f64, f64)>> {
    let world = World::new(opts);
    let day = (at.timestamp_micros() - world.start_us) as f64 / DAY_US;
    customer_ids
        .iter()
        .map(|id| {
            let index = id.as_ref().strip_prefix('C')?.parse::<usize>().ok()?.checked_sub(1)?;
            if index >= opts.customers {
                return None;
            }
            let mut rng =
                ChaCha8Rng::seed_from_u64(world.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
            let person = Person::draw(index, &world, &mut rng);
            let (p_organic, uplift) = person.contact_effect(day, strength);
            Some((p_organic, 1.0 - (1.0 - p_organic) * (1.0 - uplift)))
        })
        .collect()
}

/// Days a generated contact's response may take.
pub const GENERATED_RESPONSE_DAYS: f64 = RESPONSE_DAYS;

/// Rows written per table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GenerateSummary {
    pub customers: u64,
    pub transactions: u64,
    pub interactions: u64,
    pub campaigns: u64,
    pub contacts: u64,
    pub responses: u64,
}

/// Customers per Parquet part file.
const PART_CUSTOMERS: usize = 100_000;
/// Customers per record batch.
const BATCH_CUSTOMERS: usize = 4_096;
const DAY_US: f64 = 86_400e6;
const REGIONS: &[&str] = &["north", "south", "east", "west", "central"];
const OFFERS: &[&str] = &["10pct_off", "free_shipping", "double_points", "bundle_deal"];
/// Response window after a contact, days.
const RESPONSE_DAYS: f64 = 14.0;

/// Writes the six contract tables and `truth/` under `opts.out`. Writes into
/// a temporary sibling directory and renames it into place at the end, so a
/// failed run leaves nothing at `opts.out`.
pub fn generate(opts: &GenerateOptions) -> Result<GenerateSummary> {
    if opts.customers == 0 {
        return Err(PipelineError::InvalidArgument {
            name: "--customers",
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    if opts.end <= opts.start {
        return Err(PipelineError::InvalidArgument {
            name: "--end",
            value: opts.end.to_string(),
            reason: format!("must be after the start {}", opts.start),
        });
    }
    if opts.out.exists() {
        let mut entries = std::fs::read_dir(&opts.out).map_err(io(&opts.out))?;
        if entries.next().is_some() {
            return Err(PipelineError::InvalidArgument {
                name: "--out",
                value: opts.out.display().to_string(),
                reason: "exists and is not empty; generate never overwrites data".into(),
            });
        }
        std::fs::remove_dir(&opts.out).map_err(io(&opts.out))?;
    }
    let staging = staging_path(&opts.out);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let result = generate_into(opts, &staging);
    match result {
        Ok(summary) => {
            std::fs::rename(&staging, &opts.out).map_err(io(&opts.out))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn staging_path(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "data".into());
    out.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn generate_into(opts: &GenerateOptions, dir: &Path) -> Result<GenerateSummary> {
    let world = World::new(opts);
    let mut summary = GenerateSummary::default();
    for sub in ["customers", "transactions", "interactions", "campaigns", "contacts", "responses", "truth"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
    }
    // Campaigns are one small file, in a directory as every table engage
    // appends to (`engage nightly` records its own campaigns there).
    let campaigns = world.campaigns_batch()?;
    summary.campaigns = campaigns.num_rows() as u64;
    write_one(&dir.join("campaigns").join("part-00000.parquet"), &[campaigns])?;

    let mut part = 0;
    let mut first = 0;
    while first < opts.customers {
        let last = (first + PART_CUSTOMERS).min(opts.customers);
        let mut writers = PartWriters::open(dir, part)?;
        let mut lo = first;
        while lo < last {
            let hi = (lo + BATCH_CUSTOMERS).min(last);
            let mut tables = Tables::default();
            for index in lo..hi {
                world.customer(index, &mut tables);
            }
            writers.write(&mut tables, &mut summary)?;
            lo = hi;
        }
        writers.close()?;
        part += 1;
        first = last;
    }
    Ok(summary)
}

fn write_one(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let schema = batches[0].schema();
    let file = std::fs::File::create(path).map_err(io(path))?;
    let err = |source| PipelineError::Write { path: path.display().to_string(), source };
    let properties = writer_properties(&schema);
    let mut w = ArrowWriter::try_new(file, schema, Some(properties)).map_err(err)?;
    for b in batches {
        w.write(b).map_err(err)?;
    }
    w.close().map_err(err)?;
    Ok(())
}

/// One campaign of the generated business.
struct Campaign {
    id: String,
    name: String,
    kind: &'static str,
    channel: &'static str,
    offer: &'static str,
    /// Days from the start of history.
    start: f64,
    end: f64,
    /// Strength of the treatment effect (share of at-risk customers won).
    strength: f64,
}

/// Global settings shared by every customer.
struct World {
    seed: u64,
    start_us: i64,
    /// Days of history.
    days: f64,
    /// Day offset of 1970-01-01 relative to the start (for Date32).
    epoch_day: i32,
    waves: Vec<Campaign>,
    winback: Campaign,
    welcome: Campaign,
}

impl World {
    fn new(opts: &GenerateOptions) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed_ca4e);
        let days = (opts.end - opts.start).num_days() as f64 + 1.0;
        let start_us = opts.start.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_micros();
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
        let mut waves = Vec::new();
        let mut day = 9.0;
        let mut n = 1;
        while day < days - 20.0 {
            let channel = match rng.gen_range(0..10) {
                0..=6 => "email",
                7..=8 => "sms",
                _ => "call_center",
            };
            let offer = OFFERS[rng.gen_range(0..OFFERS.len())];
            waves.push(Campaign {
                id: format!("W{n:03}"),
                name: format!("Wave {n}: {offer} by {channel}"),
                kind: "wave",
                channel,
                offer,
                start: day,
                end: day + RESPONSE_DAYS,
                strength: rng.gen_range(0.04..0.16) * if channel == "call_center" { 2.0 } else { 1.0 },
            });
            n += 1;
            day += 30.0;
        }
        World {
            seed: opts.seed,
            start_us,
            days,
            epoch_day: (opts.start - epoch).num_days() as i32,
            waves,
            winback: Campaign {
                id: "T-WINBACK".into(),
                name: "Win-back: 60 days without a purchase".into(),
                kind: "trigger",
                channel: "email",
                offer: "10pct_off",
                start: 0.0,
                end: days,
                strength: 0.12,
            },
            welcome: Campaign {
                id: "T-WELCOME".into(),
                name: "Welcome series".into(),
                kind: "trigger",
                channel: "email",
                offer: "free_shipping",
                start: 0.0,
                end: days,
                strength: 0.05,
            },
        }
    }

    fn campaigns(&self) -> impl Iterator<Item = &Campaign> {
        self.waves.iter().chain([&self.winback, &self.welcome])
    }

    fn campaigns_batch(&self) -> Result<RecordBatch> {
        let mut id = StringBuilder::new();
        let mut name = StringBuilder::new();
        let mut kind = StringBuilder::new();
        let mut channel = StringBuilder::new();
        let mut offer = StringBuilder::new();
        let mut start = Date32Builder::new();
        let mut end = Date32Builder::new();
        for c in self.campaigns() {
            id.append_value(&c.id);
            name.append_value(&c.name);
            kind.append_value(c.kind);
            channel.append_value(c.channel);
            offer.append_value(c.offer);
            start.append_value(self.epoch_day + c.start as i32);
            end.append_value(self.epoch_day + (c.end as i32).min(self.days as i32 - 1));
        }
        batch(
            &schemas::campaigns(),
            vec![
                Arc::new(id.finish()),
                Arc::new(name.finish()),
                Arc::new(kind.finish()),
                Arc::new(channel.finish()),
                Arc::new(offer.finish()),
                Arc::new(start.finish()),
                Arc::new(end.finish()),
            ],
        )
    }

    fn ts(&self, day: f64) -> i64 {
        self.start_us + (day * DAY_US) as i64
    }

    /// Simulates customer `index` and appends its rows to `t`.
    fn customer(&self, index: usize, t: &mut Tables) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
        let c = Person::draw(index, self, &mut rng);
        let mut seq = 0u32;
        let mut next_id = |prefix: char| {
            seq += 1;
            format!("{prefix}{:07}-{seq}", index + 1)
        };

        // Customers table.
        t.customers.append(&c, self);

        // Purchases: thinned Poisson process over the active window.
        let mut purchases: Vec<(f64, f64)> = Vec::new();
        let active_from = c.signup.max(0.0);
        let active_to = c.churn.min(self.days);
        if c.rate > 0.0 && active_to > active_from {
            let gap = Exp::new(c.rate / 365.0).expect("positive rate");
            let mut day = active_from + gap.sample(&mut rng);
            while day < active_to {
                if rng.r#gen::<f64>() < c.activity(day) {
                    let amount =
                        (c.order_value * LogNormal::new(0.0, 0.45).expect("valid").sample(&mut rng) * 100.0)
                            .round()
                            / 100.0;
                    purchases.push((day, amount.max(1.0)));
                }
                day += gap.sample(&mut rng);
            }
        }

        // Campaign contacts and responses, which may add incremental purchases.
        let mut extra: Vec<(f64, f64)> = Vec::new();
        let mut contacted =
            |camp: &Campaign, day: f64, t: &mut Tables, rng: &mut ChaCha8Rng, extra: &mut Vec<(f64, f64)>| {
                let control = rng.r#gen::<f64>() < 0.1;
                let group = if control { "control" } else { "treatment" };
                t.contacts.append(&camp.id, &c.id, self.ts(day), camp.channel, group);
                // Organic response: the customer's own next purchase in the window.
                let organic = purchases.iter().find(|(d, _)| *d >= day && *d < day + RESPONSE_DAYS).copied();
                let activity = if day < c.churn { c.activity(day) } else { 0.0 };
                let (p_organic, uplift) = c.contact_effect(day, camp.strength);
                t.truth_contacts.append(&camp.id, &c.id, p_organic, 1.0 - (1.0 - p_organic) * (1.0 - uplift));
                if control {
                    if let Some((d, amount)) = organic {
                        t.responses.append(&camp.id, &c.id, self.ts(d), "purchase", Some(amount));
                    }
                    return;
                }
                if camp.channel == "email" {
                    t.interactions.event(
                        self,
                        &next_id('E'),
                        day,
                        "email",
                        "email_sent",
                        Some(&camp.id),
                        None,
                        Ids::email(&c, rng),
                    );
                }
                let incremental = organic.is_none() && rng.r#gen::<f64>() < uplift;
                let bought = organic.or_else(|| {
                    incremental.then(|| {
                        let d = day + rng.gen_range(0.2..RESPONSE_DAYS);
                        let amount = (c.order_value * rng.gen_range(0.8..1.4) * 100.0).round() / 100.0;
                        extra.push((d, amount));
                        (d, amount)
                    })
                });
                let clicked =
                    bought.is_some() || rng.r#gen::<f64>() < 0.15 * c.engagement * activity.max(0.1);
                if clicked {
                    let click_day =
                        bought.map_or(day + rng.gen_range(0.05..3.0), |(d, _)| (day + 0.05).min(d));
                    t.responses.append(&camp.id, &c.id, self.ts(click_day), "click", None);
                    if bought.is_some() || rng.r#gen::<f64>() < 0.5 {
                        t.responses.append(&camp.id, &c.id, self.ts(click_day + 0.01), "visit", None);
                    }
                }
                if let Some((d, amount)) = bought {
                    t.responses.append(&camp.id, &c.id, self.ts(d), "purchase", Some(amount));
                }
            };
        for w in &self.waves {
            if w.start < c.signup || w.start >= self.days {
                continue;
            }
            let reachable = match w.channel {
                "email" => c.email.is_some() && c.consent_email,
                "sms" => c.phone.is_some() && c.consent_sms,
                _ => c.phone.is_some() && c.consent_call,
            };
            if reachable && rng.r#gen::<f64>() < 0.3 {
                contacted(w, w.start + rng.gen_range(0.3..0.8), t, &mut rng, &mut extra);
            }
        }
        if c.email.is_some() && c.consent_email {
            if c.signup >= 0.0 && c.signup < self.days - 1.0 {
                contacted(&self.welcome, c.signup + 0.5, t, &mut rng, &mut extra);
            }
            // Win-back trigger: 60 days after a purchase with none since,
            // at most once per 180 days.
            let mut last_fire = f64::NEG_INFINITY;
            let mut last = active_from;
            let mut gaps: Vec<f64> = purchases.iter().map(|p| p.0).collect();
            gaps.push(self.days);
            for d in gaps {
                let fire = last + 60.0;
                if fire < d && fire < self.days && fire >= 0.0 && fire - last_fire >= 180.0 {
                    contacted(&self.winback, fire + 0.4, t, &mut rng, &mut extra);
                    last_fire = fire;
                }
                last = d;
            }
        }
        purchases.extend(extra);
        purchases.sort_by(|a, b| a.0.total_cmp(&b.0));

        // Transactions, refunds and store visits.
        for &(day, amount) in &purchases {
            let channel = c.pick_channel(&mut rng);
            let ids = match channel {
                "store" => Ids {
                    loyalty_id: c.loyalty.as_deref().map(|l| noisy_loyalty(l, &mut rng)),
                    ..Ids::default()
                },
                "web" if c.email.is_some() && rng.r#gen::<f64>() < 0.3 => Ids::email(&c, &mut rng),
                _ => Ids::customer(&c),
            };
            if channel == "store" && ids.loyalty_id.is_none() {
                continue; // an anonymous till receipt: no identifier, no row
            }
            let id = next_id('T');
            t.transactions.append(&id, self.ts(day), amount, channel, &ids);
            if channel == "store" {
                t.interactions.event(
                    self,
                    &next_id('E'),
                    day,
                    "store",
                    "store_visit",
                    None,
                    None,
                    ids.clone(),
                );
            }
            if rng.r#gen::<f64>() < 0.05 {
                let refund_day = day + rng.gen_range(3.0..30.0);
                if refund_day < self.days {
                    let refund = -(amount * rng.gen_range(0.3..1.0) * 100.0).round() / 100.0;
                    t.transactions.append(&next_id('T'), self.ts(refund_day), refund, channel, &ids);
                }
            }
        }

        // Newsletters every 14 days to consenting addresses until unsubscribed.
        if c.email.is_some() && c.consent_email {
            let unsubscribe = c.churn + Exp::new(1.0 / 200.0).expect("valid").sample(&mut rng);
            let mut day = 3.0 + 0.35;
            while day < self.days {
                if day >= c.signup && day < unsubscribe {
                    t.interactions.event(
                        self,
                        &next_id('E'),
                        day,
                        "email",
                        "email_sent",
                        None,
                        None,
                        Ids::email(&c, &mut rng),
                    );
                    let p_open =
                        0.6 * c.engagement * if day < c.churn { c.activity(day).max(0.05) } else { 0.03 };
                    if rng.r#gen::<f64>() < p_open {
                        let open = day + rng.gen_range(0.01..2.0);
                        t.interactions.event(
                            self,
                            &next_id('E'),
                            open,
                            "email",
                            "email_open",
                            None,
                            None,
                            Ids::email(&c, &mut rng),
                        );
                        if rng.r#gen::<f64>() < 0.2 {
                            t.interactions.event(
                                self,
                                &next_id('E'),
                                open + 0.01,
                                "email",
                                "email_click",
                                None,
                                None,
                                Ids::email(&c, &mut rng),
                            );
                        }
                    }
                }
                day += 14.0;
            }
        }
        // Monthly SMS to consenting phones while a customer.
        if c.phone.is_some() && c.consent_sms {
            let mut day = 12.6;
            while day < self.days.min(c.churn + 180.0) {
                if day >= c.signup {
                    t.interactions.event(
                        self,
                        &next_id('E'),
                        day,
                        "sms",
                        "sms_sent",
                        None,
                        None,
                        Ids::phone(&c, &mut rng),
                    );
                    if rng.r#gen::<f64>() < 0.08 * c.engagement * c.activity(day) {
                        t.interactions.event(
                            self,
                            &next_id('E'),
                            day + 0.05,
                            "sms",
                            "sms_click",
                            None,
                            None,
                            Ids::phone(&c, &mut rng),
                        );
                    }
                }
                day += 30.0;
            }
        }
        // Web visits (logged in or cookie only), app sessions, calls, complaints.
        let visit_rate = 2.0 + 24.0 * c.engagement;
        self.poisson_events(
            &mut rng,
            active_from,
            self.days,
            visit_rate,
            &c,
            |day, rng, t: &mut Tables| {
                let ids = if c.email.is_some() && rng.r#gen::<f64>() < 0.4 {
                    let mut ids = Ids::email(&c, rng);
                    ids.cookie_id = Some(c.cookies[rng.gen_range(0..c.cookies.len())].clone());
                    ids
                } else {
                    Ids {
                        cookie_id: Some(c.cookies[rng.gen_range(0..c.cookies.len())].clone()),
                        ..Ids::default()
                    }
                };
                t.interactions.event(self, &next_id('E'), day, "web", "web_visit", None, None, ids);
            },
            t,
        );
        if c.app_user {
            self.poisson_events(
                &mut rng,
                active_from,
                self.days,
                40.0 * c.engagement,
                &c,
                |day, _, t: &mut Tables| {
                    t.interactions.event(
                        self,
                        &next_id('E'),
                        day,
                        "app",
                        "app_session",
                        None,
                        None,
                        Ids::customer(&c),
                    );
                },
                t,
            );
        }
        let call_ids = |c: &Person, rng: &mut ChaCha8Rng| {
            if c.phone.is_some() { Ids::phone(c, rng) } else { Ids::customer(c) }
        };
        let duration = LogNormal::new(300f64.ln(), 0.6).expect("valid");
        let mut day = active_from;
        let call_gap = Exp::new(0.8 / 365.0).expect("valid");
        loop {
            day += call_gap.sample(&mut rng);
            if day >= active_to {
                break;
            }
            let secs = duration.sample(&mut rng).round();
            t.interactions.event(
                self,
                &next_id('E'),
                day,
                "call_center",
                "call_inbound",
                None,
                Some(secs),
                call_ids(&c, &mut rng),
            );
        }
        // Complaints: a base rate from the risk, rising sharply before churn.
        let mut day = active_from;
        let base = 0.15 * (0.9 * c.z).exp();
        let complaint_gap = Exp::new((base * 6.0) / 365.0).expect("valid");
        loop {
            day += complaint_gap.sample(&mut rng);
            if day >= active_to {
                break;
            }
            let near_churn = (1.0 - (c.churn - day) / 90.0).clamp(0.0, 1.0);
            if rng.r#gen::<f64>() < (1.0 + 5.0 * near_churn) / 6.0 {
                let secs = (duration.sample(&mut rng) * 1.8).round();
                t.interactions.event(
                    self,
                    &next_id('E'),
                    day,
                    "call_center",
                    "complaint",
                    None,
                    Some(secs),
                    call_ids(&c, &mut rng),
                );
            }
        }
        t.truth.append(&c, self);
        t.truth_identities.append(&c);
    }

    #[allow(clippy::too_many_arguments)]
    /// Calls `emit` at the times of a Poisson process of `rate` per year,
    /// thinned by the customer's activity (and mostly silenced after churn).
    fn poisson_events(
        &self,
        rng: &mut ChaCha8Rng,
        from: f64,
        to: f64,
        rate: f64,
        c: &Person,
        mut emit: impl FnMut(f64, &mut ChaCha8Rng, &mut Tables),
        t: &mut Tables,
    ) {
        if rate <= 0.0 || to <= from {
            return;
        }
        let gap = Exp::new(rate / 365.0).expect("positive rate");
        let mut day = from + gap.sample(rng);
        while day < to {
            let keep = if day < c.churn { c.activity(day) } else { 0.03 };
            if rng.r#gen::<f64>() < keep {
                emit(day, rng, t);
            }
            day += gap.sample(rng);
        }
    }
}

/// A simulated customer's latent traits and identifiers.
struct Person {
    id: String,
    /// Days from the start of history (negative: signed up before it).
    signup: f64,
    /// Churn risk, standard normal.
    z: f64,
    hazard: f64,
    /// Day of churn (may be after the end of history).
    churn: f64,
    /// Purchases per year while fully active.
    rate: f64,
    order_value: f64,
    engagement: f64,
    channel_weights: [f64; 4],
    email: Option<String>,
    phone: Option<String>,
    loyalty: Option<String>,
    region: &'static str,
    consent_email: bool,
    consent_sms: bool,
    consent_call: bool,
    app_user: bool,
    cookies: Vec<String>,
}

/// The shop's own phone number, recorded for one customer in 250.
const SHOP_PHONE: &str = "+15550100000";

const FIRST: &[&str] = &[
    "anna", "ben", "carla", "dev", "eva", "femi", "gus", "hana", "ivan", "jo", "kim", "lea", "max", "nia",
    "omar", "pia",
];
const LAST: &[&str] =
    &["smith", "garcia", "chen", "muller", "okafor", "rossi", "kowalski", "nguyen", "silva", "berg"];
const DOMAINS: &[&str] = &["example.com", "mail.test", "inbox.test", "post.example"];

impl Person {
    fn draw(index: usize, w: &World, rng: &mut ChaCha8Rng) -> Person {
        let z: f64 = Normal::new(0.0, 1.0).expect("valid").sample(rng);
        let signup = rng.gen_range(-3.0 * 365.0..w.days - 30.0);
        let hazard = 0.35 * (0.8 * z).exp();
        let churn = signup + Exp::new(hazard).expect("positive hazard").sample(rng) * 365.0;
        let rate = Gamma::new(0.9, 20.0).expect("valid").sample(rng) + 0.5;
        let order_value = LogNormal::new(45f64.ln(), 0.6).expect("valid").sample(rng);
        let engagement = sigmoid(Normal::new(-0.3, 1.0).expect("valid").sample(rng) - 0.6 * z);
        let has_email = rng.r#gen::<f64>() < 0.92;
        let has_phone = rng.r#gen::<f64>() < 0.85;
        let has_loyalty = rng.r#gen::<f64>() < 0.6;
        let app_user = rng.r#gen::<f64>() < 0.35;
        let first = FIRST[rng.gen_range(0..FIRST.len())];
        let last = LAST[rng.gen_range(0..LAST.len())];
        // Shared identifiers, as real CRMs have them: two family members on
        // one address (customers 50 and 51 of every hundred) and a shop's
        // own number typed in for customers without a phone of their own
        // (one in 250).
        let email = has_email.then(|| match index % 100 {
            50 | 51 => format!("family.{}@home.test", index / 100),
            _ => format!("{first}.{last}{}@{}", index + 1, DOMAINS[index % DOMAINS.len()]),
        });
        let phone = if index % 250 == 17 {
            Some(SHOP_PHONE.to_string())
        } else {
            has_phone.then(|| format!("+1{}{:07}", 200 + (index % 700), (index * 7919) % 10_000_000))
        };
        let loyalty = has_loyalty.then(|| format!("L{:09}", (index as u64 * 104_729) % 1_000_000_007));
        let cookies = (0..rng.gen_range(1..=3)).map(|_| format!("ck_{:016x}", rng.r#gen::<u64>())).collect();
        let channel_weights = [
            rng.r#gen::<f64>() + 0.2,                                 // web
            rng.r#gen::<f64>() * if has_loyalty { 1.5 } else { 0.3 }, // store
            if app_user { rng.r#gen::<f64>() + 0.3 } else { 0.0 },    // app
            rng.r#gen::<f64>() * 0.1,                                 // call_center
        ];
        Person {
            id: format!("C{:07}", index + 1),
            signup,
            z,
            hazard,
            churn,
            rate,
            order_value,
            engagement,
            channel_weights,
            consent_email: has_email && rng.r#gen::<f64>() < 0.75,
            consent_sms: has_phone && rng.r#gen::<f64>() < 0.4,
            consent_call: has_phone && rng.r#gen::<f64>() < 0.5,
            email,
            phone,
            loyalty,
            region: REGIONS[rng.gen_range(0..REGIONS.len())],
            app_user,
            cookies,
        }
    }

    /// A contact at `day` by a campaign of `strength`: the probability of
    /// the organic purchase in the response window, and of the contact
    /// winning a purchase otherwise. A campaign moves the customers who
    /// read it (the effect grows with the cube of engagement, which opens,
    /// clicks and visits show) and most those slipping away.
    fn contact_effect(&self, day: f64, strength: f64) -> (f64, f64) {
        let alive = day < self.churn;
        let activity = if alive { self.activity(day) } else { 0.0 };
        let p_organic = 1.0 - (-(self.rate * activity) * RESPONSE_DAYS / 365.0).exp();
        let uplift = if alive {
            strength * (0.3 + 1.7 * (1.0 - activity)) * 6.0 * self.engagement.powi(3)
        } else {
            strength * 0.1
        };
        (p_organic, uplift.min(0.9))
    }

    /// Activity multiplier at `day`: 1 when healthy, decaying linearly over
    /// the 120 days before churn to 0.15, 0 after.
    fn activity(&self, day: f64) -> f64 {
        if day >= self.churn { 0.0 } else { ((self.churn - day) / 120.0).clamp(0.15, 1.0) }
    }

    fn pick_channel(&self, rng: &mut ChaCha8Rng) -> &'static str {
        let total: f64 = self.channel_weights.iter().sum();
        let mut u = rng.r#gen::<f64>() * total;
        for (i, w) in self.channel_weights.iter().enumerate() {
            if u < *w {
                return ["web", "store", "app", "call_center"][i];
            }
            u -= w;
        }
        "web"
    }
}

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// The identity columns an event row carries.
#[derive(Debug, Clone, Default)]
struct Ids {
    customer_id: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    loyalty_id: Option<String>,
    cookie_id: Option<String>,
}

impl Ids {
    fn customer(c: &Person) -> Ids {
        Ids { customer_id: Some(c.id.clone()), ..Ids::default() }
    }
    /// Keyed by email as another system typed it; by customer id if none.
    fn email(c: &Person, rng: &mut ChaCha8Rng) -> Ids {
        match &c.email {
            Some(e) => Ids { email: Some(noisy_email(e, rng)), ..Ids::default() },
            None => Ids::customer(c),
        }
    }
    fn phone(c: &Person, rng: &mut ChaCha8Rng) -> Ids {
        match &c.phone {
            Some(p) => Ids { phone: Some(noisy_phone(p, rng)), ..Ids::default() },
            None => Ids::customer(c),
        }
    }
}

/// An email as typed elsewhere: mostly as is, sometimes capitalised or padded.
fn noisy_email(email: &str, rng: &mut ChaCha8Rng) -> String {
    match rng.gen_range(0..20) {
        0 => email.to_uppercase(),
        1 => format!(" {email} "),
        2 => {
            let mut s = email.to_string();
            if let Some(f) = s.get_mut(0..1) {
                f.make_ascii_uppercase();
            }
            s
        }
        _ => email.to_string(),
    }
}

/// A +1XXXXXXXXXX number in one of the formats call-center systems use.
fn noisy_phone(phone: &str, rng: &mut ChaCha8Rng) -> String {
    let d = &phone[2..];
    match rng.gen_range(0..5) {
        0 => phone.to_string(),
        1 => format!("({}) {}-{}", &d[0..3], &d[3..6], &d[6..]),
        2 => format!("{}.{}.{}", &d[0..3], &d[3..6], &d[6..]),
        3 => format!("1-{}-{}-{}", &d[0..3], &d[3..6], &d[6..]),
        _ => format!("+1 {} {} {}", &d[0..3], &d[3..6], &d[6..]),
    }
}

fn noisy_loyalty(id: &str, rng: &mut ChaCha8Rng) -> String {
    if rng.gen_range(0..30) == 0 { format!("{id} ") } else { id.to_string() }
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| PipelineError::Query { name: "internal: generator batch".into(), source: e.into() })
}

/// Arrow schemas of the generated files. Transactions use microsecond and
/// interactions millisecond timestamps without a zone, contacts and
/// responses microseconds in UTC: the contract accepts any unit.
mod schemas {
    use super::*;

    fn utf8(name: &str, nullable: bool) -> Field {
        Field::new(name, DataType::Utf8, nullable)
    }
    fn ts(unit: TimeUnit, tz: Option<&str>) -> Field {
        Field::new("ts", DataType::Timestamp(unit, tz.map(Into::into)), false)
    }

    pub fn customers() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("customer_id", false),
            Field::new("signup_date", DataType::Date32, true),
            utf8("email", true),
            utf8("phone", true),
            utf8("loyalty_id", true),
            utf8("region", true),
            Field::new("consent_email", DataType::Boolean, true),
            Field::new("consent_sms", DataType::Boolean, true),
            Field::new("consent_call", DataType::Boolean, true),
        ]))
    }
    pub fn transactions() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("transaction_id", false),
            ts(TimeUnit::Microsecond, None),
            Field::new("amount", DataType::Float64, false),
            utf8("channel", false),
            utf8("customer_id", true),
            utf8("email", true),
            utf8("loyalty_id", true),
        ]))
    }
    pub fn interactions() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("event_id", false),
            ts(TimeUnit::Millisecond, None),
            utf8("channel", false),
            utf8("event_type", false),
            utf8("campaign_id", true),
            Field::new("duration_s", DataType::Float64, true),
            utf8("customer_id", true),
            utf8("email", true),
            utf8("phone", true),
            utf8("loyalty_id", true),
            utf8("cookie_id", true),
        ]))
    }
    pub fn campaigns() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("campaign_id", false),
            utf8("name", false),
            utf8("kind", false),
            utf8("channel", false),
            utf8("offer", false),
            Field::new("start_date", DataType::Date32, false),
            Field::new("end_date", DataType::Date32, false),
        ]))
    }
    pub fn contacts() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("campaign_id", false),
            utf8("customer_id", false),
            ts(TimeUnit::Microsecond, Some("UTC")),
            utf8("channel", false),
            utf8("group", false),
        ]))
    }
    pub fn responses() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("campaign_id", false),
            utf8("customer_id", false),
            ts(TimeUnit::Microsecond, Some("UTC")),
            utf8("stage", false),
            Field::new("revenue", DataType::Float64, true),
        ]))
    }
    pub fn truth_customers() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("customer_id", false),
            Field::new("risk_z", DataType::Float64, false),
            Field::new("hazard_per_year", DataType::Float64, false),
            Field::new("churn_date", DataType::Date32, false),
            Field::new("purchase_rate_per_year", DataType::Float64, false),
            Field::new("mean_order_value", DataType::Float64, false),
            Field::new("engagement", DataType::Float64, false),
            utf8("cookie_ids", false),
        ]))
    }
    pub fn truth_identities() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("identifier_type", false),
            utf8("identifier_value", false),
            utf8("customer_id", false),
        ]))
    }
    pub fn truth_contacts() -> SchemaRef {
        Arc::new(Schema::new(vec![
            utf8("campaign_id", false),
            utf8("customer_id", false),
            Field::new("p_response_control", DataType::Float64, false),
            Field::new("p_response_treatment", DataType::Float64, false),
        ]))
    }
}

#[derive(Default)]
struct CustomerRows {
    id: StringBuilder,
    signup: Date32Builder,
    email: StringBuilder,
    phone: StringBuilder,
    loyalty: StringBuilder,
    region: StringBuilder,
    consent_email: BooleanBuilder,
    consent_sms: BooleanBuilder,
    consent_call: BooleanBuilder,
}

impl CustomerRows {
    fn append(&mut self, c: &Person, w: &World) {
        self.id.append_value(&c.id);
        self.signup.append_value(w.epoch_day + c.signup.floor() as i32);
        self.email.append_option(c.email.as_deref());
        self.phone.append_option(c.phone.as_deref());
        self.loyalty.append_option(c.loyalty.as_deref());
        self.region.append_value(c.region);
        self.consent_email.append_value(c.consent_email);
        self.consent_sms.append_value(c.consent_sms);
        // Unknown call consent is common in CRMs: leave a fifth null.
        if c.id.ends_with('5') {
            self.consent_call.append_null();
        } else {
            self.consent_call.append_value(c.consent_call);
        }
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.signup.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.phone.finish()),
            Arc::new(self.loyalty.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.consent_email.finish()),
            Arc::new(self.consent_sms.finish()),
            Arc::new(self.consent_call.finish()),
        ]
    }
}

#[derive(Default)]
struct TransactionRows {
    id: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    amount: Float64Builder,
    channel: StringBuilder,
    customer_id: StringBuilder,
    email: StringBuilder,
    loyalty_id: StringBuilder,
}

impl TransactionRows {
    fn append(&mut self, id: &str, ts: i64, amount: f64, channel: &str, ids: &Ids) {
        self.id.append_value(id);
        self.ts.append_value(ts);
        self.amount.append_value(amount);
        self.channel.append_value(channel);
        self.customer_id.append_option(ids.customer_id.as_deref());
        self.email.append_option(ids.email.as_deref());
        self.loyalty_id.append_option(ids.loyalty_id.as_deref());
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.loyalty_id.finish()),
        ]
    }
}

#[derive(Default)]
struct InteractionRows {
    id: StringBuilder,
    ts: TimestampMillisecondBuilder,
    channel: StringBuilder,
    event_type: StringBuilder,
    campaign_id: StringBuilder,
    duration: Float64Builder,
    customer_id: StringBuilder,
    email: StringBuilder,
    phone: StringBuilder,
    loyalty_id: StringBuilder,
    cookie_id: StringBuilder,
}

impl InteractionRows {
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        w: &World,
        id: &str,
        day: f64,
        channel: &str,
        event_type: &str,
        campaign: Option<&str>,
        duration: Option<f64>,
        ids: Ids,
    ) {
        if day >= w.days {
            return;
        }
        self.id.append_value(id);
        self.ts.append_value(w.ts(day) / 1000);
        self.channel.append_value(channel);
        self.event_type.append_value(event_type);
        self.campaign_id.append_option(campaign);
        self.duration.append_option(duration);
        self.customer_id.append_option(ids.customer_id);
        self.email.append_option(ids.email);
        self.phone.append_option(ids.phone);
        self.loyalty_id.append_option(ids.loyalty_id);
        self.cookie_id.append_option(ids.cookie_id);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.campaign_id.finish()),
            Arc::new(self.duration.finish()),
            Arc::new(self.customer_id.finish()),
            Arc::new(self.email.finish()),
            Arc::new(self.phone.finish()),
            Arc::new(self.loyalty_id.finish()),
            Arc::new(self.cookie_id.finish()),
        ]
    }
}

#[derive(Default)]
struct ContactRows {
    campaign: StringBuilder,
    customer: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    channel: StringBuilder,
    group: StringBuilder,
}

impl ContactRows {
    fn append(&mut self, campaign: &str, customer: &str, ts: i64, channel: &str, group: &str) {
        self.campaign.append_value(campaign);
        self.customer.append_value(customer);
        self.ts.append_value(ts);
        self.channel.append_value(channel);
        self.group.append_value(group);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.campaign.finish()),
            Arc::new(self.customer.finish()),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.channel.finish()),
            Arc::new(self.group.finish()),
        ]
    }
}

#[derive(Default)]
struct ResponseRows {
    campaign: StringBuilder,
    customer: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    stage: StringBuilder,
    revenue: Float64Builder,
}

impl ResponseRows {
    fn append(&mut self, campaign: &str, customer: &str, ts: i64, stage: &str, revenue: Option<f64>) {
        self.campaign.append_value(campaign);
        self.customer.append_value(customer);
        self.ts.append_value(ts);
        self.stage.append_value(stage);
        self.revenue.append_option(revenue);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.campaign.finish()),
            Arc::new(self.customer.finish()),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.stage.finish()),
            Arc::new(self.revenue.finish()),
        ]
    }
}

#[derive(Default)]
struct TruthRows {
    id: StringBuilder,
    z: Float64Builder,
    hazard: Float64Builder,
    churn: Date32Builder,
    rate: Float64Builder,
    value: Float64Builder,
    engagement: Float64Builder,
    cookies: StringBuilder,
}

impl TruthRows {
    fn append(&mut self, c: &Person, w: &World) {
        self.id.append_value(&c.id);
        self.z.append_value(c.z);
        self.hazard.append_value(c.hazard);
        self.churn.append_value(w.epoch_day + c.churn.min(1e6).floor() as i32);
        self.rate.append_value(c.rate);
        self.value.append_value(c.order_value);
        self.engagement.append_value(c.engagement);
        self.cookies.append_value(c.cookies.join(","));
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.z.finish()),
            Arc::new(self.hazard.finish()),
            Arc::new(self.churn.finish()),
            Arc::new(self.rate.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.engagement.finish()),
            Arc::new(self.cookies.finish()),
        ]
    }
}

#[derive(Default)]
struct TruthContactRows {
    campaign: StringBuilder,
    customer: StringBuilder,
    p_control: Float64Builder,
    p_treatment: Float64Builder,
}

impl TruthContactRows {
    fn append(&mut self, campaign: &str, customer: &str, p_control: f64, p_treatment: f64) {
        self.campaign.append_value(campaign);
        self.customer.append_value(customer);
        self.p_control.append_value(p_control);
        self.p_treatment.append_value(p_treatment);
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.campaign.finish()),
            Arc::new(self.customer.finish()),
            Arc::new(self.p_control.finish()),
            Arc::new(self.p_treatment.finish()),
        ]
    }
}

/// Every identifier of a customer in its canonical (normalised) form.
#[derive(Default)]
struct TruthIdentityRows {
    ty: StringBuilder,
    value: StringBuilder,
    customer: StringBuilder,
}

impl TruthIdentityRows {
    fn append(&mut self, c: &Person) {
        let mut add = |ty: &str, value: &str| {
            self.ty.append_value(ty);
            self.value.append_value(value);
            self.customer.append_value(&c.id);
        };
        add("customer_id", &c.id);
        c.email.iter().for_each(|v| add("email", v));
        c.phone.iter().for_each(|v| add("phone", v));
        c.loyalty.iter().for_each(|v| add("loyalty_id", v));
        c.cookies.iter().for_each(|v| add("cookie_id", v));
    }
    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![Arc::new(self.ty.finish()), Arc::new(self.value.finish()), Arc::new(self.customer.finish())]
    }
}

/// Rows of every table for one batch of customers.
#[derive(Default)]
struct Tables {
    customers: CustomerRows,
    transactions: TransactionRows,
    interactions: InteractionRows,
    contacts: ContactRows,
    responses: ResponseRows,
    truth: TruthRows,
    truth_contacts: TruthContactRows,
    truth_identities: TruthIdentityRows,
}

/// One open Parquet part file per table.
struct PartWriters {
    writers: Vec<(PathBuf, ArrowWriter<std::fs::File>)>,
}

/// A generated table: its path under the output and its schema.
type PartTable = (&'static str, fn() -> SchemaRef);

const PART_TABLES: &[PartTable] = &[
    ("customers", schemas::customers),
    ("transactions", schemas::transactions),
    ("interactions", schemas::interactions),
    ("contacts", schemas::contacts),
    ("responses", schemas::responses),
    ("truth/customers", schemas::truth_customers),
    ("truth/contacts", schemas::truth_contacts),
    ("truth/identities", schemas::truth_identities),
];

impl PartWriters {
    fn open(dir: &Path, part: usize) -> Result<PartWriters> {
        let mut writers = Vec::new();
        for (table, schema) in PART_TABLES {
            let table_dir = dir.join(table);
            std::fs::create_dir_all(&table_dir).map_err(io(&table_dir))?;
            let path = table_dir.join(format!("part-{part:05}.parquet"));
            let file = std::fs::File::create(&path).map_err(io(&path))?;
            let schema = schema();
            let properties = writer_properties(&schema);
            let w = ArrowWriter::try_new(file, schema, Some(properties))
                .map_err(|source| PipelineError::Write { path: path.display().to_string(), source })?;
            writers.push((path, w));
        }
        Ok(PartWriters { writers })
    }

    fn write(&mut self, t: &mut Tables, summary: &mut GenerateSummary) -> Result<()> {
        let columns = [
            t.customers.finish(),
            t.transactions.finish(),
            t.interactions.finish(),
            t.contacts.finish(),
            t.responses.finish(),
            t.truth.finish(),
            t.truth_contacts.finish(),
            t.truth_identities.finish(),
        ];
        for (i, cols) in columns.into_iter().enumerate() {
            let b = batch(&PART_TABLES[i].1(), cols)?;
            let rows = b.num_rows() as u64;
            match i {
                0 => summary.customers += rows,
                1 => summary.transactions += rows,
                2 => summary.interactions += rows,
                3 => summary.contacts += rows,
                4 => summary.responses += rows,
                _ => {}
            }
            let (path, w) = &mut self.writers[i];
            w.write(&b)
                .map_err(|source| PipelineError::Write { path: path.display().to_string(), source })?;
        }
        Ok(())
    }

    fn close(self) -> Result<()> {
        for (path, w) in self.writers {
            w.close().map_err(|source| PipelineError::Write { path: path.display().to_string(), source })?;
        }
        Ok(())
    }
}
