//! Contractual churn (subscriptions, where a customer's leaving is seen):
//! the shifted-beta-geometric model of Fader & Hardie (2007), "How to
//! Project Customer Retention". Each customer churns at the end of any
//! period with their own probability theta, Beta(alpha, beta) distributed
//! across customers; the mix explains why retention rates rise with tenure.

use serde::{Deserialize, Serialize};

use crate::clv::{Fit, fit_positive};
use crate::error::ModelError;

/// One customer's observed tenure: `periods` renewals seen (1 = churned
/// or censored after the first period) and whether they churned then or
/// are still active (censored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenure {
    pub periods: u32,
    pub churned: bool,
}

/// Shifted-beta-geometric parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShiftedBetaGeometric {
    pub alpha: f64,
    pub beta: f64,
}

impl ShiftedBetaGeometric {
    /// `ln P(T = t)`: churn at the end of period `t` (t >= 1).
    pub fn ln_churn_probability(&self, t: u32) -> f64 {
        let ShiftedBetaGeometric { alpha, beta } = *self;
        ln_beta(alpha + 1.0, beta + t as f64 - 1.0) - ln_beta(alpha, beta)
    }

    /// `S(t)`: probability of surviving past period `t`.
    pub fn survival(&self, t: u32) -> f64 {
        let ShiftedBetaGeometric { alpha, beta } = *self;
        (ln_beta(alpha, beta + t as f64) - ln_beta(alpha, beta)).exp()
    }

    /// Retention rate at period `t` (t >= 1): share of those alive at
    /// `t - 1` who renew, `(beta + t - 1) / (alpha + beta + t - 1)`.
    pub fn retention_rate(&self, t: u32) -> f64 {
        let ShiftedBetaGeometric { alpha, beta } = *self;
        (beta + t as f64 - 1.0) / (alpha + beta + t as f64 - 1.0)
    }

    /// Log-likelihood of `customers`.
    pub fn log_likelihood(&self, customers: &[Tenure]) -> f64 {
        customers.iter().map(|c| self.tenure_log_likelihood(*c)).sum()
    }

    /// Log-likelihood of one customer's tenure.
    fn tenure_log_likelihood(&self, c: Tenure) -> f64 {
        if c.churned { self.ln_churn_probability(c.periods) } else { self.survival(c.periods).ln() }
    }

    /// Maximum-likelihood parameters for `customers`.
    pub fn fit(customers: &[Tenure]) -> Result<Fit<ShiftedBetaGeometric>, ModelError> {
        if let Some(c) = customers.iter().find(|c| c.periods == 0) {
            return Err(ModelError::Data(format!(
                "sBG: a tenure of 0 periods ({c:?}); expected 1 or more (churn happens at the end of a period)"
            )));
        }
        if !customers.iter().any(|c| c.churned) || customers.iter().all(|c| c.churned && c.periods == 1) {
            return Err(ModelError::Data(
                "sBG: needs churned customers and customers who renewed at least once".into(),
            ));
        }
        let from = |p: &[f64]| ShiftedBetaGeometric { alpha: p[0].exp(), beta: p[1].exp() };
        // Customers with the same tenure are evaluated once, weighted by
        // their number: millions of subscribers have few distinct tenures.
        let mut counts: std::collections::BTreeMap<(u32, bool), f64> = Default::default();
        for c in customers {
            *counts.entry((c.periods, c.churned)).or_default() += 1.0;
        }
        let distinct: Vec<(Tenure, f64)> =
            counts.into_iter().map(|((periods, churned), n)| (Tenure { periods, churned }, n)).collect();
        let ll = |m: &ShiftedBetaGeometric, d: &[(Tenure, f64)]| -> f64 {
            d.iter().map(|(t, n)| n * m.tenure_log_likelihood(*t)).sum()
        };
        let fit = fit_positive(&distinct, 2, from, ll);
        Ok(Fit { customers: customers.len(), ..fit })
    }
}

/// One period of a fitted retention curve beside what was observed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RetentionPeriod {
    /// Period number, from 1.
    pub period: u32,
    /// Model: probability of still being a customer after this period.
    pub survival: f64,
    /// Model: share of those active after the previous period who renew.
    pub retention_rate: f64,
    /// Customers observed in this period (tenure at least this long).
    pub at_risk: u64,
    /// Observed survival after this period (Kaplan-Meier, so customers
    /// seen for fewer periods count while they were seen); `None` past the
    /// longest observed tenure.
    pub observed_survival: Option<f64>,
}

impl ShiftedBetaGeometric {
    /// The model's survival and retention for periods 1..=`periods` beside
    /// the observed survival of `customers`.
    pub fn projection(&self, customers: &[Tenure], periods: u32) -> Vec<RetentionPeriod> {
        let observed = kaplan_meier(customers);
        (1..=periods)
            .map(|t| {
                let seen = observed.get(t as usize - 1);
                RetentionPeriod {
                    period: t,
                    survival: self.survival(t),
                    retention_rate: self.retention_rate(t),
                    at_risk: seen.map_or(0, |s| s.0),
                    observed_survival: seen.map(|s| s.1),
                }
            })
            .collect()
    }
}

/// Observed survival after each period 1..=longest tenure: (customers at
/// risk in the period, Kaplan-Meier survival). A customer with `periods`
/// p is at risk in periods 1..=p and, if churned, leaves at the end of p.
pub fn kaplan_meier(customers: &[Tenure]) -> Vec<(u64, f64)> {
    let longest = customers.iter().map(|c| c.periods).max().unwrap_or(0) as usize;
    let mut ending = vec![0u64; longest + 1];
    let mut churned = vec![0u64; longest + 1];
    for c in customers {
        ending[c.periods as usize] += 1;
        churned[c.periods as usize] += c.churned as u64;
    }
    let mut at_risk = customers.len() as u64;
    let mut survival = 1.0;
    let mut out = Vec::with_capacity(longest);
    for t in 1..=longest {
        at_risk -= ending[t - 1];
        survival *= 1.0 - churned[t] as f64 / at_risk as f64;
        out.push((at_risk, survival));
    }
    out
}

/// Tenures of a cohort from the number still active at the end of each
/// period: `alive[0]` at the start, `alive[t]` after period t; those alive
/// at the end are censored.
pub fn cohort_tenures(alive: &[u64]) -> Vec<Tenure> {
    let mut out = Vec::new();
    for t in 1..alive.len() {
        let churned = alive[t - 1].saturating_sub(alive[t]);
        out.extend(std::iter::repeat_n(Tenure { periods: t as u32, churned: true }, churned as usize));
    }
    if let Some(&last) = alive.last().filter(|_| alive.len() > 1) {
        let periods = (alive.len() - 1) as u32;
        out.extend(std::iter::repeat_n(Tenure { periods, churned: false }, last as usize));
    }
    out
}

fn ln_beta(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaplan_meier_by_hand() {
        // Five customers: churned after 1, churned after 2, censored at 2,
        // churned after 3, censored at 3.
        let t = |periods, churned| Tenure { periods, churned };
        let km = kaplan_meier(&[t(1, true), t(2, true), t(2, false), t(3, true), t(3, false)]);
        assert_eq!(km.len(), 3);
        assert_eq!(km[0], (5, 0.8));
        // Period 2: 4 at risk, 1 churns: 0.8 x 3/4.
        assert_eq!(km[1].0, 4);
        assert!((km[1].1 - 0.6).abs() < 1e-12);
        // Period 3: the censored-at-2 customer is gone; 2 at risk, 1 churns.
        assert_eq!(km[2].0, 2);
        assert!((km[2].1 - 0.3).abs() < 1e-12);
        // A single cohort: observed survival is the share still active.
        let alive = [1000, 869, 743, 653];
        let km = kaplan_meier(&cohort_tenures(&alive));
        for (k, (_, s)) in km.iter().enumerate() {
            assert!((s - alive[k + 1] as f64 / 1000.0).abs() < 1e-12);
        }
    }

    #[test]
    fn projection_extends_past_the_observed_periods() {
        let model = ShiftedBetaGeometric { alpha: 0.7, beta: 1.2 };
        let rows = model.projection(&cohort_tenures(&[100, 80, 70]), 4);
        assert_eq!(rows.len(), 4);
        assert!((rows[1].observed_survival.unwrap() - 0.7).abs() < 1e-12);
        assert_eq!((rows[2].observed_survival, rows[2].at_risk), (None, 0));
        assert!((rows[3].survival - model.survival(4)).abs() < 1e-15);
        assert!(rows.windows(2).all(|w| w[1].retention_rate > w[0].retention_rate));
    }
}
