//! Customer lifetime value for non-contractual customers: the BG/NBD model
//! of repeat purchases and dropout (Fader, Hardie & Lee 2005, "Counting
//! Your Customers the Easy Way") and the Gamma-Gamma model of spend per
//! purchase (Fader, Hardie & Lee 2005, "RFM and CLV"), fitted by maximum
//! likelihood on log parameters (BFGS with analytic gradients for
//! BG/NBD, [`nelder_mead`] for the others).
//!
//! Time is in whatever unit the summaries use (weeks in the literature,
//! days or weeks in engage); parameters are only meaningful in that unit.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::optimize::bfgs;

/// A fitted CLV model pair with everything needed to use and audit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvArtifact {
    /// [`crate::ARTIFACT_FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// Stable id and registry version: `<name>-<as_of>-<12 hex digits>`
    /// (see [`crate::model_version`]).
    pub model_version: String,
    /// Registry name (`clv` unless told otherwise).
    pub name: String,
    /// `clv`.
    pub task: String,
    /// engage version that trained it.
    pub engage_version: String,
    /// UTC time of training (RFC 3339).
    pub trained_at: String,
    /// Cutoff (ISO date): the models saw purchases strictly before it.
    pub as_of: String,
    /// The time unit of the parameters and of every time in the summaries:
    /// `days` or `weeks`.
    pub time_unit: String,
    /// Days per time unit (1 or 7).
    pub unit_days: f64,
    /// SHA-256 over the customer summaries the models were fitted on.
    pub data_fingerprint: String,
    /// Purchase counts and dropout.
    pub bg_nbd: Fit<BgNbd>,
    /// Spend per purchase (customers with repeat purchases only).
    pub gamma_gamma: Fit<GammaGamma>,
    /// Pareto/NBD on the same summaries, when asked for (`--pareto-nbd`).
    #[serde(default)]
    pub pareto_nbd: Option<Fit<ParetoNbd>>,
    /// The supervised second opinion: spend over the holdout length from
    /// the features at the cutoff (absent without a holdout).
    #[serde(default)]
    pub spend_model: Option<crate::spend::FittedSpend>,
}

impl ClvArtifact {
    /// Fits both models on `customers` (summaries in `time_unit`) and wraps
    /// them with their provenance.
    pub fn train(
        name: &str,
        customers: &[(String, Rfm)],
        as_of: &str,
        time_unit: TimeUnit,
    ) -> Result<ClvArtifact, ModelError> {
        if let Some((id, c)) = customers.iter().find(|(_, c)| !consistent(c)) {
            return Err(inconsistent(id, c));
        }
        let summaries: Vec<Rfm> = customers.iter().map(|(_, c)| *c).collect();
        let bg_nbd = BgNbd::fit(&summaries)?;
        let gamma_gamma = GammaGamma::fit(&summaries)?;
        let data_fingerprint = fingerprint(customers);
        Ok(ClvArtifact {
            format_version: crate::ARTIFACT_FORMAT_VERSION,
            model_version: crate::model_version(name, as_of, &data_fingerprint, &time_unit.name()),
            name: name.into(),
            task: "clv".into(),
            engage_version: env!("CARGO_PKG_VERSION").into(),
            trained_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            as_of: as_of.into(),
            time_unit: time_unit.name().into(),
            unit_days: time_unit.days(),
            data_fingerprint,
            bg_nbd,
            gamma_gamma,
            pareto_nbd: None,
            spend_model: None,
        })
    }

    /// Writes the artifact as JSON atomically.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        crate::artifact::save_json(self, path)
    }

    /// Reads an artifact and checks its format version.
    pub fn load(path: &Path) -> Result<ClvArtifact, ModelError> {
        crate::artifact::load_json(path)
    }

    /// What the registry lists and shows about these models.
    pub fn meta(&self) -> crate::registry::ModelMeta {
        let fit = |log_likelihood: f64, customers: usize, converged: bool| serde_json::json!({ "log_likelihood": log_likelihood, "customers": customers, "converged": converged });
        crate::registry::ModelMeta {
            format_version: crate::registry::REGISTRY_FORMAT_VERSION,
            name: self.name.clone(),
            version: self.model_version.clone(),
            task: self.task.clone(),
            kind: "bg_nbd+gamma_gamma".into(),
            engage_version: self.engage_version.clone(),
            trained_at: self.trained_at.clone(),
            as_of: self.as_of.clone(),
            horizon_days: 0,
            split: "none: fitted by maximum likelihood on every customer".into(),
            features: Vec::new(),
            config: serde_json::json!({ "time_unit": self.time_unit }),
            data_fingerprint: self.data_fingerprint.clone(),
            metrics: serde_json::json!({
                "bg_nbd": fit(self.bg_nbd.log_likelihood, self.bg_nbd.customers, self.bg_nbd.converged),
                "gamma_gamma": fit(self.gamma_gamma.log_likelihood, self.gamma_gamma.customers, self.gamma_gamma.converged),
            }),
        }
    }
}

/// The time unit of CLV summaries and parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    Days,
    Weeks,
}

impl TimeUnit {
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Days => "days",
            TimeUnit::Weeks => "weeks",
        }
    }

    pub fn days(self) -> f64 {
        match self {
            TimeUnit::Days => 1.0,
            TimeUnit::Weeks => 7.0,
        }
    }
}

fn fingerprint(customers: &[(String, Rfm)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (id, c) in customers {
        h.update(id.as_bytes());
        h.update([0u8]);
        for v in [c.frequency, c.recency, c.age, c.monetary] {
            h.update(v.to_bits().to_le_bytes());
        }
    }
    format!("{:x}", h.finalize())
}

/// One customer's purchase history summarised as the models need it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rfm {
    /// Repeat purchases (x): purchase occasions after the first.
    pub frequency: f64,
    /// Time of the last repeat purchase after the first purchase (t_x); 0 if none.
    pub recency: f64,
    /// Time from the first purchase to the end of observation (T).
    pub age: f64,
    /// Mean value of the repeat purchases (zbar); 0 if none.
    pub monetary: f64,
}

/// Summarises purchases `(customer, day, value)` as of `end_day` the way
/// the literature does: purchases on the same day are one purchase (values
/// summed), the first purchase is not counted, purchases after `end_day`
/// are ignored, and times are `(day difference) / unit_days` (7 for weeks).
/// Days are any integer day count (e.g. days since 1970-01-01). Returns one
/// summary per customer whose first purchase is on or before `end_day`,
/// sorted by customer.
pub fn summarize<S: AsRef<str>>(
    purchases: impl IntoIterator<Item = (S, i64, f64)>,
    end_day: i64,
    unit_days: f64,
) -> Vec<(String, Rfm)> {
    let mut by_customer: std::collections::BTreeMap<String, std::collections::BTreeMap<i64, f64>> =
        Default::default();
    for (customer, day, value) in purchases {
        if day <= end_day {
            let customer = customer.as_ref();
            let days = match by_customer.get_mut(customer) {
                Some(days) => days,
                None => by_customer.entry(customer.to_string()).or_default(),
            };
            *days.entry(day).or_default() += value;
        }
    }
    by_customer
        .into_iter()
        .map(|(customer, days)| {
            let (&first, _) = days.first_key_value().expect("a purchase per customer");
            let (&last, _) = days.last_key_value().expect("a purchase per customer");
            let repeats = days.len() - 1;
            let repeat_value: f64 = days.values().skip(1).sum();
            let rfm = Rfm {
                frequency: repeats as f64,
                recency: (last - first) as f64 / unit_days,
                age: (end_day - first) as f64 / unit_days,
                monetary: if repeats > 0 { repeat_value / repeats as f64 } else { 0.0 },
            };
            (customer, rfm)
        })
        .collect()
}

/// Outcome of a maximum-likelihood fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fit<P> {
    pub params: P,
    /// Total log-likelihood at `params`.
    pub log_likelihood: f64,
    /// Customers the fit used.
    pub customers: usize,
    /// Nelder-Mead iterations over all restarts.
    pub iterations: usize,
    /// Whether the simplex met the tolerance before the iteration cap.
    pub converged: bool,
}

/// BG/NBD parameters: purchase rates are Gamma(r, alpha) across customers,
/// the dropout probability after each purchase Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

impl BgNbd {
    /// Log-likelihood of one customer (equation 6 of the BG/NBD paper, in
    /// log space: the two terms of the sum combined with log-sum-exp).
    pub fn customer_log_likelihood(&self, c: &Rfm) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let x = c.frequency;
        let ln_a1 = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln();
        let ln_a2 = ln_gamma(a + b) + ln_gamma(b + x) - ln_gamma(b) - ln_gamma(a + b + x);
        let ln_a3 = -(r + x) * (alpha + c.age).ln();
        if x > 0.0 {
            let ln_a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + c.recency).ln();
            ln_a1 + ln_a2 + log_add_exp(ln_a3, ln_a4)
        } else {
            ln_a1 + ln_a2 + ln_a3
        }
    }

    /// Total log-likelihood of `customers`. The terms that depend only on
    /// the purchase count (four `ln Γ`) are computed once per distinct
    /// count, which makes a fit over a million customers affordable.
    pub fn log_likelihood(&self, customers: &[Rfm]) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let head = |x: f64| {
            ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + ln_gamma(a + b) + ln_gamma(b + x)
                - ln_gamma(b)
                - ln_gamma(a + b + x)
        };
        let mut by_count: Vec<f64> = Vec::new();
        let mut total = 0.0;
        for c in customers {
            let x = c.frequency;
            let h = if x.fract() == 0.0 && x < 100_000.0 {
                let i = x as usize;
                if i >= by_count.len() {
                    by_count.resize(i + 1, f64::NAN);
                }
                if by_count[i].is_nan() {
                    by_count[i] = head(x);
                }
                by_count[i]
            } else {
                head(x)
            };
            let ln_a3 = -(r + x) * (alpha + c.age).ln();
            total += if x > 0.0 {
                let ln_a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * (alpha + c.recency).ln();
                h + log_add_exp(ln_a3, ln_a4)
            } else {
                h + ln_a3
            };
        }
        total
    }

    /// Maximum-likelihood parameters for `customers`: BFGS on the log
    /// parameters with the analytic gradient ([`BgNbd::weighted_gradient`])
    /// over the distinct summaries (customers with the same frequency,
    /// recency and age count once, weighted), from all parameters 1;
    /// Nelder-Mead from BFGS's best point if BFGS does not converge.
    pub fn fit(customers: &[Rfm]) -> Result<Fit<BgNbd>, ModelError> {
        check_summaries(customers)?;
        if !customers.iter().any(|c| c.frequency > 0.0) {
            return Err(ModelError::Data("BG/NBD: no customer made a repeat purchase".into()));
        }
        let from = |p: &[f64]| BgNbd { r: p[0].exp(), alpha: p[1].exp(), a: p[2].exp(), b: p[3].exp() };
        let distinct = weighted(customers);
        let objective = |p: &[f64]| {
            let m = from(p);
            let (ll, g) = m.weighted_gradient(&distinct);
            // d/d ln θ = θ · d/dθ
            let g = vec![-g[0] * m.r, -g[1] * m.alpha, -g[2] * m.a, -g[3] * m.b];
            (-ll, g)
        };
        let (mut best, mut iterations, mut converged) = bfgs(objective, &[0.0; 4], 1_000, 1e-6);
        if !converged {
            let nll = |p: &[f64]| -from(p).weighted_log_likelihood(&distinct);
            let (point, its, ok) = nelder_mead(nll, &best);
            (best, iterations, converged) = (point, iterations + its, ok);
        }
        let params = from(&best);
        Ok(Fit {
            params,
            log_likelihood: params.log_likelihood(customers),
            customers: customers.len(),
            iterations,
            converged,
        })
    }

    /// Log-likelihood of distinct summaries, each counted `weight` times.
    pub fn weighted_log_likelihood(&self, distinct: &[(Rfm, f64)]) -> f64 {
        self.weighted_gradient(distinct).0
    }

    /// Log-likelihood of distinct summaries (each counted `weight` times) and
    /// its gradient with respect to (r, alpha, a, b). The terms that depend
    /// only on the purchase count are computed once per distinct count.
    pub fn weighted_gradient(&self, distinct: &[(Rfm, f64)]) -> (f64, [f64; 4]) {
        let BgNbd { r, alpha, a, b } = *self;
        let (ln_alpha, dg_r, dg_ab) = (alpha.ln(), digamma(r), digamma(a + b));
        let (lg_r, lg_b, lg_ab) = (ln_gamma(r), ln_gamma(b), ln_gamma(a + b));
        let dg_b = digamma(b);
        // Per count: (A1 + A2, dA/dr, dA/da, dA/db); dA/dalpha = r / alpha for all.
        let head = |x: f64| {
            let (dg_rx, dg_abx) = (digamma(r + x), digamma(a + b + x));
            (
                ln_gamma(r + x) - lg_r + r * ln_alpha + lg_ab + ln_gamma(b + x) - lg_b - ln_gamma(a + b + x),
                dg_rx - dg_r + ln_alpha,
                dg_ab - dg_abx,
                dg_ab + digamma(b + x) - dg_b - dg_abx,
            )
        };
        let mut by_count: Vec<Option<(f64, f64, f64, f64)>> = Vec::new();
        let (mut ll, mut g) = (0.0, [0.0; 4]);
        for (c, w) in distinct {
            let x = c.frequency;
            let h = if x.fract() == 0.0 && x < 100_000.0 {
                let i = x as usize;
                if i >= by_count.len() {
                    by_count.resize(i + 1, None);
                }
                *by_count[i].get_or_insert_with(|| head(x))
            } else {
                head(x)
            };
            let ln_t = (alpha + c.age).ln();
            let a3 = -(r + x) * ln_t;
            let (d3_r, d3_alpha) = (-ln_t, -(r + x) / (alpha + c.age));
            let (tail, dr, dalpha, da, db) = if x > 0.0 {
                let ln_tx = (alpha + c.recency).ln();
                let a4 = a.ln() - (b + x - 1.0).ln() - (r + x) * ln_tx;
                let l = log_add_exp(a3, a4);
                let (w3, w4) = ((a3 - l).exp(), (a4 - l).exp());
                (
                    l,
                    w3 * d3_r - w4 * ln_tx,
                    w3 * d3_alpha - w4 * (r + x) / (alpha + c.recency),
                    w4 / a,
                    -w4 / (b + x - 1.0),
                )
            } else {
                (a3, d3_r, d3_alpha, 0.0, 0.0)
            };
            ll += w * (h.0 + tail);
            g[0] += w * (h.1 + dr);
            g[1] += w * (r / alpha + dalpha);
            g[2] += w * (h.2 + da);
            g[3] += w * (h.3 + db);
        }
        (ll, g)
    }

    /// Probability that the customer has not dropped out by the end of
    /// observation.
    pub fn probability_alive(&self, c: &Rfm) -> f64 {
        if c.frequency <= 0.0 {
            return 1.0;
        }
        1.0 / (1.0 + self.dropout_odds(c))
    }

    /// `a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x)`, in log space.
    fn dropout_odds(&self, c: &Rfm) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let x = c.frequency;
        (a.ln() - (b + x - 1.0).ln() + (r + x) * ((alpha + c.age).ln() - (alpha + c.recency).ln())).exp()
    }

    /// Expected repeat purchases in the next `t` time units of a customer
    /// with this history (equation 10 of the BG/NBD paper).
    pub fn expected_purchases(&self, c: &Rfm, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let x = c.frequency;
        let z = t / (alpha + c.age + t);
        let ratio = ((alpha + c.age) / (alpha + c.age + t)).powf(r + x);
        let numerator =
            (a + b + x - 1.0) / (a - 1.0) * (1.0 - ratio * hyp2f1(r + x, b + x, a + b + x - 1.0, z));
        let odds = if x > 0.0 { self.dropout_odds(c) } else { 0.0 };
        numerator / (1.0 + odds)
    }

    /// Expected purchases in `(0, t]` of a new customer (equation 9).
    pub fn expected_purchases_new(&self, t: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let z = t / (alpha + t);
        (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)).powf(r) * hyp2f1(r, b, a + b - 1.0, z))
    }
}

/// What the diagnostics and scoring need of a purchase-count model
/// (BG/NBD, Pareto/NBD).
pub trait PurchaseModel {
    /// Expected repeat purchases in the next `t` of a customer with history `c`.
    fn expected_purchases(&self, c: &Rfm, t: f64) -> f64;
    /// Expected purchases in `(0, t]` of a new customer.
    fn expected_purchases_new(&self, t: f64) -> f64;
    /// Probability that a customer with history `c` is still alive.
    fn probability_alive(&self, c: &Rfm) -> f64;
}

macro_rules! purchase_model {
    ($t:ty) => {
        impl PurchaseModel for $t {
            fn expected_purchases(&self, c: &Rfm, t: f64) -> f64 {
                <$t>::expected_purchases(self, c, t)
            }
            fn expected_purchases_new(&self, t: f64) -> f64 {
                <$t>::expected_purchases_new(self, t)
            }
            fn probability_alive(&self, c: &Rfm) -> f64 {
                <$t>::probability_alive(self, c)
            }
        }
    };
}
purchase_model!(BgNbd);
purchase_model!(ParetoNbd);

/// Pareto/NBD parameters (Schmittlein, Morrison & Colombo 1987): purchase
/// rates Gamma(r, alpha) across customers, lifetimes exponential with
/// rates Gamma(s, beta): a customer can leave at any moment, not only
/// after a purchase as in BG/NBD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ParetoNbd {
    pub r: f64,
    pub alpha: f64,
    pub s: f64,
    pub beta: f64,
}

impl ParetoNbd {
    /// `ln A0` of Fader, Hardie & Lee's note "Deriving the Pareto/NBD model
    /// and related expressions" (2005), equations 19-20: the difference of
    /// two hypergeometric terms at t_x and T.
    fn ln_a0(&self, c: &Rfm) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let x = c.frequency;
        let rsx = r + s + x;
        let (big, second) = if alpha >= beta { (alpha, s + 1.0) } else { (beta, r + x) };
        let diff = (alpha - beta).abs();
        let term =
            |t: f64| -> f64 { hyp2f1(rsx, second, rsx + 1.0, diff / (big + t)).ln() - rsx * (big + t).ln() };
        let (at_tx, at_t) = (term(c.recency), term(c.age));
        // ln(e^a - e^b) for a > b.
        at_tx + (-(at_t - at_tx).exp()).ln_1p()
    }

    /// Log-likelihood of one customer (equation 22 of the note).
    pub fn customer_log_likelihood(&self, c: &Rfm) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let x = c.frequency;
        let head = ln_gamma(r + x) - ln_gamma(r) + r * alpha.ln() + s * beta.ln();
        let alive = -(r + x) * (alpha + c.age).ln() - s * (beta + c.age).ln();
        if c.age > c.recency {
            head + log_add_exp(alive, (s / (r + s + x)).ln() + self.ln_a0(c))
        } else {
            head + alive
        }
    }

    /// Total log-likelihood of `customers`.
    pub fn log_likelihood(&self, customers: &[Rfm]) -> f64 {
        customers.iter().map(|c| self.customer_log_likelihood(c)).sum()
    }

    /// Maximum-likelihood parameters for `customers`.
    pub fn fit(customers: &[Rfm]) -> Result<Fit<ParetoNbd>, ModelError> {
        check_summaries(customers)?;
        if !customers.iter().any(|c| c.frequency > 0.0) {
            return Err(ModelError::Data("Pareto/NBD: no customer made a repeat purchase".into()));
        }
        let from =
            |p: &[f64]| ParetoNbd { r: p[0].exp(), alpha: p[1].exp(), s: p[2].exp(), beta: p[3].exp() };
        Ok(fit_positive(customers, 4, from, ParetoNbd::log_likelihood))
    }

    /// Probability that the customer is still alive at the end of
    /// observation (equation 18 of the note).
    pub fn probability_alive(&self, c: &Rfm) -> f64 {
        if c.age <= c.recency {
            return 1.0;
        }
        let ParetoNbd { r, alpha, s, beta } = *self;
        let x = c.frequency;
        let ln_ratio =
            (s / (r + s + x)).ln() + (r + x) * (alpha + c.age).ln() + s * (beta + c.age).ln() + self.ln_a0(c);
        1.0 / (1.0 + ln_ratio.exp())
    }

    /// Expected purchases in the next `t` time units of a customer with
    /// this history (equation 41 of the note).
    pub fn expected_purchases(&self, c: &Rfm, t: f64) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        let x = c.frequency;
        let rate = (r + x) * (beta + c.age) / ((alpha + c.age) * (s - 1.0));
        rate * (1.0 - ((beta + c.age) / (beta + c.age + t)).powf(s - 1.0)) * self.probability_alive(c)
    }

    /// Expected purchases in `(0, t]` of a new customer.
    pub fn expected_purchases_new(&self, t: f64) -> f64 {
        let ParetoNbd { r, alpha, s, beta } = *self;
        r * beta / (alpha * (s - 1.0)) * (1.0 - (beta / (beta + t)).powf(s - 1.0))
    }
}

/// Gamma-Gamma parameters: a customer's mean spend per purchase varies
/// across customers as Gamma(q, gamma) in its rate; single purchases as
/// Gamma(p, nu) around it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl GammaGamma {
    /// Log-likelihood of one customer's mean repeat spend `monetary` over
    /// `frequency` purchases (frequency must be positive).
    pub fn customer_log_likelihood(&self, c: &Rfm) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        let (x, m) = (c.frequency, c.monetary);
        ln_gamma(p * x + q) - ln_gamma(p * x) - ln_gamma(q)
            + q * gamma.ln()
            + (p * x - 1.0) * m.ln()
            + p * x * x.ln()
            - (p * x + q) * (gamma + m * x).ln()
    }

    /// Total log-likelihood of the customers with repeat purchases.
    pub fn log_likelihood(&self, customers: &[Rfm]) -> f64 {
        customers.iter().filter(|c| c.frequency > 0.0).map(|c| self.customer_log_likelihood(c)).sum()
    }

    /// Maximum-likelihood parameters from the customers with at least one
    /// repeat purchase (the others carry no spend information here).
    pub fn fit(customers: &[Rfm]) -> Result<Fit<GammaGamma>, ModelError> {
        check_summaries(customers)?;
        let repeat: Vec<Rfm> = customers.iter().filter(|c| c.frequency > 0.0).copied().collect();
        if let Some(c) = repeat.iter().find(|c| c.monetary <= 0.0) {
            return Err(ModelError::Data(format!(
                "Gamma-Gamma: a customer with {} repeat purchases has mean spend {}; expected a positive amount",
                c.frequency, c.monetary
            )));
        }
        if repeat.is_empty() {
            return Err(ModelError::Data("Gamma-Gamma: no customer made a repeat purchase".into()));
        }
        let from = |p: &[f64]| GammaGamma { p: p[0].exp(), q: p[1].exp(), gamma: p[2].exp() };
        Ok(fit_positive(&repeat, 3, from, GammaGamma::log_likelihood))
    }

    /// Expected spend per purchase of a customer with this history: the
    /// population mean `p gamma / (q - 1)` shrunk toward the customer's own
    /// mean as purchases accumulate.
    pub fn expected_spend(&self, c: &Rfm) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        let x = c.frequency.max(0.0);
        p * (gamma + c.monetary * x) / (p * x + q - 1.0)
    }
}

/// Lifetime value over `periods` periods of `period_length` time units:
/// the expected purchases in each period (BG/NBD) times the expected spend
/// per purchase (Gamma-Gamma), discounted at `discount_rate` per period
/// (the value of period i is divided by `(1 + discount_rate)^i`).
pub fn customer_lifetime_value(
    purchases: &BgNbd,
    spend: &GammaGamma,
    c: &Rfm,
    periods: u32,
    period_length: f64,
    discount_rate: f64,
) -> f64 {
    let value = spend.expected_spend(c);
    let mut before = 0.0;
    let mut clv = 0.0;
    for i in 1..=periods {
        let through = purchases.expected_purchases(c, i as f64 * period_length);
        clv += (through - before) * value / (1.0 + discount_rate).powi(i as i32);
        before = through;
    }
    clv
}

fn check_summaries(customers: &[Rfm]) -> Result<(), ModelError> {
    if customers.is_empty() {
        return Err(ModelError::Data("no customers to fit".into()));
    }
    match customers.iter().position(|c| !consistent(c)) {
        Some(i) => Err(inconsistent(&i.to_string(), &customers[i])),
        None => Ok(()),
    }
}

/// Whether a summary can come from a purchase history: a customer whose
/// first purchase is on the last observed day has age 0.
fn consistent(c: &Rfm) -> bool {
    [c.frequency, c.recency, c.age, c.monetary].iter().all(|v| v.is_finite())
        && c.frequency >= 0.0
        && c.recency >= 0.0
        && c.recency <= c.age
        && c.monetary >= 0.0
        && (c.frequency > 0.0 || c.recency == 0.0)
}

fn inconsistent(customer: &str, c: &Rfm) -> ModelError {
    ModelError::Data(format!(
        "customer {customer}: summary {c:?} is inconsistent; expected frequency >= 0, \
         0 <= recency <= age, monetary >= 0, recency 0 without repeat purchases"
    ))
}

/// `ln Γ(x)` for `x > 0`.
fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Gauss hypergeometric function `2F1(a, b; c; z)` for `0 <= z < 1`, by
/// its power series (terms until they no longer change the sum).
fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let (mut term, mut sum) = (1.0, 1.0);
    for k in 0..100_000 {
        let k = k as f64;
        term *= (a + k) * (b + k) / ((c + k) * (k + 1.0)) * z;
        sum += term;
        if term.abs() < 1e-15 * sum.abs() {
            break;
        }
    }
    sum
}

/// The distinct summaries of `customers` with how many customers have
/// each (the likelihood only sees frequency, recency and age).
fn weighted(customers: &[Rfm]) -> Vec<(Rfm, f64)> {
    let mut seen: std::collections::HashMap<[u64; 3], usize> = std::collections::HashMap::new();
    let mut out: Vec<(Rfm, f64)> = Vec::new();
    for c in customers {
        let key = [c.frequency.to_bits(), c.recency.to_bits(), c.age.to_bits()];
        match seen.get(&key) {
            Some(&i) => out[i].1 += 1.0,
            None => {
                seen.insert(key, out.len());
                out.push((Rfm { monetary: 0.0, ..*c }, 1.0));
            }
        }
    }
    out
}

/// The digamma function ψ(x) = d ln Γ(x) / dx for x > 0: the recurrence
/// ψ(x) = ψ(x + 1) − 1/x up to x >= 10, then the asymptotic series
/// (error below 1e-13 there).
fn digamma(mut x: f64) -> f64 {
    let mut result = 0.0;
    while x < 10.0 {
        result -= 1.0 / x;
        x += 1.0;
    }
    let inv2 = 1.0 / (x * x);
    result + x.ln()
        - 0.5 / x
        - inv2
            * (1.0 / 12.0 - inv2 * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))))
}

/// Maximum likelihood over `dims` positive parameters: Nelder-Mead on
/// their logarithms from all ones; `from` maps the logarithms to the
/// parameters.
pub(crate) fn fit_positive<P: Copy, T>(
    data: &[T],
    dims: usize,
    from: impl Fn(&[f64]) -> P,
    log_likelihood: impl Fn(&P, &[T]) -> f64,
) -> Fit<P> {
    let (best, iterations, converged) = nelder_mead(|p| -log_likelihood(&from(p), data), &vec![0.0; dims]);
    let params = from(&best);
    Fit {
        params,
        log_likelihood: log_likelihood(&params, data),
        customers: data.len(),
        iterations,
        converged,
    }
}

/// Minimises `f` from `start` with the Nelder-Mead simplex method,
/// restarting from the best point until a restart no longer improves it.
/// Returns the minimiser, the iterations used and whether every run met the
/// tolerance (relative spread of the simplex values below 1e-12) within
/// its cap.
pub fn nelder_mead(f: impl Fn(&[f64]) -> f64, start: &[f64]) -> (Vec<f64>, usize, bool) {
    let f = |p: &[f64]| {
        let v = f(p);
        if v.is_nan() { f64::INFINITY } else { v }
    };
    let (mut best, mut iterations, mut converged) = (start.to_vec(), 0, true);
    let mut best_value = f(&best);
    for _ in 0..20 {
        let (point, value, its, ok) = nelder_mead_run(&f, &best, 5_000);
        iterations += its;
        converged &= ok;
        let improved = best_value - value > 1e-10 * best_value.abs().max(1.0);
        if value < best_value {
            best = point;
            best_value = value;
        }
        if !improved {
            break;
        }
    }
    (best, iterations, converged)
}

fn nelder_mead_run(f: &impl Fn(&[f64]) -> f64, start: &[f64], cap: usize) -> (Vec<f64>, f64, usize, bool) {
    let n = start.len();
    let mut simplex: Vec<Vec<f64>> = vec![start.to_vec()];
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += 0.5;
        simplex.push(p);
    }
    let mut values: Vec<f64> = simplex.iter().map(|p| f(p)).collect();
    let along = |from: &[f64], to: &[f64], t: f64| -> Vec<f64> {
        from.iter().zip(to).map(|(a, b)| a + t * (b - a)).collect()
    };
    for it in 0..cap {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
        simplex = order.iter().map(|&i| simplex[i].clone()).collect();
        values = order.iter().map(|&i| values[i]).collect();
        let spread = (values[n] - values[0]).abs();
        if spread <= 1e-12 * values[0].abs().max(1e-12) {
            return (simplex[0].clone(), values[0], it, true);
        }
        let centroid: Vec<f64> =
            (0..n).map(|d| simplex[..n].iter().map(|p| p[d]).sum::<f64>() / n as f64).collect();
        let reflected = along(&centroid, &simplex[n], -1.0);
        let fr = f(&reflected);
        if fr < values[0] {
            let expanded = along(&centroid, &simplex[n], -2.0);
            let fe = f(&expanded);
            (simplex[n], values[n]) = if fe < fr { (expanded, fe) } else { (reflected, fr) };
        } else if fr < values[n - 1] {
            (simplex[n], values[n]) = (reflected, fr);
        } else {
            let (towards, ft) =
                if fr < values[n] { (reflected, fr) } else { (simplex[n].clone(), values[n]) };
            let contracted = along(&centroid, &towards, 0.5);
            let fc = f(&contracted);
            if fc < ft {
                (simplex[n], values[n]) = (contracted, fc);
            } else {
                for i in 1..=n {
                    simplex[i] = along(&simplex[0], &simplex[i], 0.5);
                    values[i] = f(&simplex[i]);
                }
            }
        }
    }
    let i = (0..=n).min_by(|&i, &j| values[i].total_cmp(&values[j])).expect("a simplex");
    (simplex[i].clone(), values[i], cap, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nelder_mead_finds_the_rosenbrock_minimum() {
        let rosenbrock = |p: &[f64]| (1.0 - p[0]).powi(2) + 100.0 * (p[1] - p[0] * p[0]).powi(2);
        let (best, _, converged) = nelder_mead(rosenbrock, &[-1.2, 1.0]);
        assert!(converged);
        assert!((best[0] - 1.0).abs() < 1e-4 && (best[1] - 1.0).abs() < 1e-4, "{best:?}");
    }

    #[test]
    fn digamma_matches_known_values() {
        // ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(x + 1) = ψ(x) + 1/x.
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-12);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-12);
        assert!((digamma(7.3) - digamma(6.3) - 1.0 / 6.3).abs() < 1e-12);
    }

    #[test]
    fn bg_nbd_gradient_matches_finite_differences() {
        let customers: Vec<(Rfm, f64)> = (0..40)
            .map(|i| {
                let x = (i % 6) as f64;
                let c = Rfm {
                    frequency: x,
                    recency: if x > 0.0 { 2.0 + i as f64 / 7.0 } else { 0.0 },
                    age: 30.0 + (i % 5) as f64,
                    monetary: 0.0,
                };
                (c, 1.0 + (i % 3) as f64)
            })
            .collect();
        let m = BgNbd { r: 0.3, alpha: 4.0, a: 0.8, b: 2.5 };
        let (ll, g) = m.weighted_gradient(&customers);
        let direct: f64 = customers.iter().map(|(c, w)| w * m.customer_log_likelihood(c)).sum();
        assert!((ll - direct).abs() < 1e-9 * direct.abs());
        let at = |d: [f64; 4]| BgNbd { r: m.r + d[0], alpha: m.alpha + d[1], a: m.a + d[2], b: m.b + d[3] };
        for k in 0..4 {
            let mut e = [0.0; 4];
            e[k] = 1e-6;
            let up = at(e).weighted_log_likelihood(&customers);
            e[k] = -1e-6;
            let down = at(e).weighted_log_likelihood(&customers);
            let numeric = (up - down) / 2e-6;
            assert!(
                (g[k] - numeric).abs() < 1e-5 * numeric.abs().max(1.0),
                "parameter {k}: {} vs {numeric}",
                g[k]
            );
        }
    }

    #[test]
    fn cached_bg_nbd_likelihood_equals_the_per_customer_sum() {
        let m = BgNbd { r: 0.24, alpha: 4.4, a: 0.79, b: 2.4 };
        let customers: Vec<Rfm> = (0..50)
            .map(|i| {
                let x = (i % 7) as f64;
                Rfm {
                    frequency: x,
                    recency: if x > 0.0 { 3.0 + i as f64 / 10.0 } else { 0.0 },
                    age: 39.0,
                    monetary: 0.0,
                }
            })
            .collect();
        let direct: f64 = customers.iter().map(|c| m.customer_log_likelihood(c)).sum();
        assert!((m.log_likelihood(&customers) - direct).abs() < 1e-9 * direct.abs());
    }

    #[test]
    fn hypergeometric_series_matches_closed_forms() {
        // 2F1(1, 1; 2; z) = -ln(1 - z) / z; 2F1(a, b; b; z) = (1 - z)^-a.
        for z in [0.1, 0.5, 0.9] {
            assert!((hyp2f1(1.0, 1.0, 2.0, z) - (-(1.0 - z).ln() / z)).abs() < 1e-10);
            assert!((hyp2f1(0.7, 2.5, 2.5, z) - (1.0 - z).powf(-0.7)).abs() < 1e-10);
        }
    }
}
