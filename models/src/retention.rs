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
        customers
            .iter()
            .map(
                |c| {
                    if c.churned {
                        self.ln_churn_probability(c.periods)
                    } else {
                        self.survival(c.periods).ln()
                    }
                },
            )
            .sum()
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
        Ok(fit_positive(customers, 2, from, ShiftedBetaGeometric::log_likelihood))
    }
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
