//! Campaign measurement: response rates of a treatment and a control
//! group, the lift between them with 95 % confidence intervals, and what it
//! means in responders, revenue and cost (docs/nightly.md, "Measuring
//! results"). Plain numbers in, plain numbers out.

use serde::{Deserialize, Serialize};

/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// One group's outcome at one funnel stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupOutcome {
    /// Customers in the group.
    pub customers: u64,
    /// Of them, those who reached the stage.
    pub responders: u64,
    /// Revenue attributed to the group's responses (any stage).
    pub revenue: f64,
}

impl GroupOutcome {
    /// `responders / customers` (NaN for an empty group).
    pub fn rate(&self) -> f64 {
        if self.customers == 0 { f64::NAN } else { self.responders as f64 / self.customers as f64 }
    }
}

/// Treatment against control at one stage. Undefined values are NaN
/// (`null` in JSON): no control group, or no control responder for the
/// relative lift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Lift {
    pub treatment_rate: f64,
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub control_rate: f64,
    /// `treatment_rate − control_rate`, with its 95 % interval (Wald).
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub absolute: f64,
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub absolute_low: f64,
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub absolute_high: f64,
    /// `treatment_rate / control_rate − 1`, with its 95 % interval (log
    /// risk ratio, Katz).
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub relative: f64,
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub relative_low: f64,
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub relative_high: f64,
    /// Responders the contact caused: `absolute × treated customers`.
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub incremental_responders: f64,
}

impl Lift {
    /// The lift of `t` over `c`.
    pub fn of(t: &GroupOutcome, c: &GroupOutcome) -> Lift {
        let (pt, pc) = (t.rate(), c.rate());
        let (nt, nc) = (t.customers as f64, c.customers as f64);
        let absolute = pt - pc;
        let se = (pt * (1.0 - pt) / nt + pc * (1.0 - pc) / nc).sqrt();
        let ratio = pt / pc;
        // Katz: se of ln(pt/pc) = sqrt(1/xt − 1/nt + 1/xc − 1/nc).
        let (xt, xc) = (t.responders as f64, c.responders as f64);
        let log_se = (1.0 / xt - 1.0 / nt + 1.0 / xc - 1.0 / nc).sqrt();
        let defined = |v: f64| if v.is_finite() { v } else { f64::NAN };
        let (relative_low, relative_high) = if xt > 0.0 && xc > 0.0 {
            ((ratio.ln() - Z95 * log_se).exp() - 1.0, (ratio.ln() + Z95 * log_se).exp() - 1.0)
        } else {
            (f64::NAN, f64::NAN)
        };
        Lift {
            treatment_rate: pt,
            control_rate: pc,
            absolute: defined(absolute),
            absolute_low: defined(absolute - Z95 * se),
            absolute_high: defined(absolute + Z95 * se),
            relative: defined(ratio - 1.0),
            relative_low,
            relative_high,
            incremental_responders: defined(absolute * nt),
        }
    }

    /// Whether the 95 % interval of the absolute lift excludes 0.
    pub fn significant(&self) -> bool {
        self.absolute_low > 0.0 || self.absolute_high < 0.0
    }
}

/// One stage of a campaign's funnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageResult {
    /// `any response`, or the funnel stage (responders reached it or a later one).
    pub stage: String,
    pub treatment: GroupOutcome,
    pub control: GroupOutcome,
    pub lift: Lift,
}

/// One campaign's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignResult {
    pub campaign_id: String,
    pub kind: Option<String>,
    pub offer: Option<String>,
    pub stages: Vec<StageResult>,
    /// Revenue per treated customer minus per control customer, times the
    /// treated customers.
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub incremental_revenue: f64,
    /// Treated customers × cost per contact, when the cost is configured.
    pub cost: Option<f64>,
    /// Cost over the incremental responders of the last stage; `null`
    /// without a cost or without a positive increment.
    pub cost_per_incremental_response: Option<f64>,
}

impl CampaignResult {
    /// Builds the result from per-stage group outcomes (the last stage is
    /// the one costs are judged by: the conversion both groups can reach).
    pub fn new(
        campaign_id: &str,
        kind: Option<String>,
        offer: Option<String>,
        stages: Vec<(String, GroupOutcome, GroupOutcome)>,
        cost_per_contact: Option<f64>,
    ) -> CampaignResult {
        let stages: Vec<StageResult> = stages
            .into_iter()
            .map(|(stage, treatment, control)| StageResult {
                lift: Lift::of(&treatment, &control),
                stage,
                treatment,
                control,
            })
            .collect();
        let first = stages.first().map(|s| (s.treatment, s.control));
        let incremental_revenue = first.map_or(f64::NAN, |(t, c)| {
            let per = |g: GroupOutcome| g.revenue / g.customers as f64;
            (per(t) - per(c)) * t.customers as f64
        });
        let cost = cost_per_contact.zip(first).map(|(per, (t, _))| per * t.customers as f64);
        let last = stages.last().map(|s| s.lift.incremental_responders).unwrap_or(f64::NAN);
        let cost_per_incremental_response = cost.filter(|_| last > 0.0).map(|c| c / last);
        CampaignResult {
            campaign_id: campaign_id.into(),
            kind,
            offer,
            stages,
            incremental_revenue: if incremental_revenue.is_finite() { incremental_revenue } else { f64::NAN },
            cost,
            cost_per_incremental_response,
        }
    }
}

/// The universal holdout against everyone else: the total effect of the
/// campaigns on buying.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldoutResult {
    /// The configured share of customers in the holdout.
    pub share: f64,
    /// The window measured: purchases from `since` to before `as_of`.
    pub since: String,
    /// Everyone the campaigns may contact; `responders` bought.
    pub marketed: GroupOutcome,
    pub holdout: GroupOutcome,
    /// Buying rate of the marketed over the holdout.
    pub lift: Lift,
    /// Revenue per marketed customer minus per holdout customer, times the
    /// marketed customers.
    #[serde(deserialize_with = "crate::artifact::null_as_nan")]
    pub incremental_revenue: f64,
}

impl HoldoutResult {
    pub fn new(share: f64, since: &str, marketed: GroupOutcome, holdout: GroupOutcome) -> HoldoutResult {
        let per = |g: &GroupOutcome| g.revenue / g.customers as f64;
        let incremental = (per(&marketed) - per(&holdout)) * marketed.customers as f64;
        HoldoutResult {
            share,
            since: since.into(),
            lift: Lift::of(&marketed, &holdout),
            marketed,
            holdout,
            incremental_revenue: if incremental.is_finite() { incremental } else { f64::NAN },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(customers: u64, responders: u64) -> GroupOutcome {
        GroupOutcome { customers, responders, revenue: 0.0 }
    }

    #[test]
    fn lift_and_intervals_by_hand() {
        // 120 of 1000 treated, 80 of 1000 control.
        let l = Lift::of(&g(1000, 120), &g(1000, 80));
        assert!((l.absolute - 0.04).abs() < 1e-12);
        // se = sqrt(.12*.88/1000 + .08*.92/1000) = sqrt(1.056e-4 + 7.36e-5) = 0.013387...
        let se = (0.12f64 * 0.88 / 1000.0 + 0.08 * 0.92 / 1000.0).sqrt();
        assert!((se - 0.0133866).abs() < 1e-6);
        assert!((l.absolute_low - (0.04 - 1.959964 * se)).abs() < 1e-6);
        assert!((l.absolute_high - (0.04 + 1.959964 * se)).abs() < 1e-6);
        assert!(l.significant());
        assert!((l.relative - 0.5).abs() < 1e-12);
        // ln(1.5) ± 1.96 sqrt(1/120 − 1/1000 + 1/80 − 1/1000) = 0.405465 ± 0.268977.
        assert!((l.relative_low - ((0.405465f64 - 0.268977).exp() - 1.0)).abs() < 1e-5, "{}", l.relative_low);
        assert!((l.relative_high - ((0.405465f64 + 0.268977).exp() - 1.0)).abs() < 1e-5);
        assert!((l.incremental_responders - 40.0).abs() < 1e-9);
        // Small groups: the interval spans 0.
        assert!(!Lift::of(&g(50, 6), &g(50, 4)).significant());
    }

    #[test]
    fn undefined_parts_are_nan_and_serialise_as_null() {
        // No control group at all.
        let l = Lift::of(&g(100, 10), &g(0, 0));
        assert!(l.control_rate.is_nan() && l.absolute.is_nan() && l.incremental_responders.is_nan());
        // No control responder: no relative lift, the absolute one stands.
        let l = Lift::of(&g(100, 10), &g(100, 0));
        assert!((l.absolute - 0.1).abs() < 1e-12 && l.relative.is_nan() && l.relative_low.is_nan());
        let json = serde_json::to_string(&l).unwrap();
        assert!(json.contains("\"relative\":null"), "{json}");
        let back: Lift = serde_json::from_str(&json).unwrap();
        assert!(back.relative.is_nan() && back.absolute == l.absolute);
    }

    #[test]
    fn revenue_and_cost_per_incremental_response() {
        let t = GroupOutcome { customers: 900, responders: 90, revenue: 4500.0 };
        let c = GroupOutcome { customers: 100, responders: 5, revenue: 200.0 };
        let r = CampaignResult::new(
            "W1",
            None,
            None,
            vec![("any response".into(), t, c), ("purchase".into(), g(900, 54), g(100, 3))],
            Some(0.5),
        );
        // (4500/900 − 200/100) × 900 = 2700.
        assert!((r.incremental_revenue - 2700.0).abs() < 1e-9);
        assert_eq!(r.cost, Some(450.0));
        // Purchase: (0.06 − 0.03) × 900 = 27 incremental buyers; 450 / 27.
        assert!((r.cost_per_incremental_response.unwrap() - 450.0 / 27.0).abs() < 1e-9);
        let none = CampaignResult::new("W2", None, None, vec![("x".into(), g(10, 1), g(10, 2))], Some(1.0));
        assert_eq!(none.cost_per_incremental_response, None, "no increment, no cost per increment");
    }

    #[test]
    fn holdout_against_the_marketed() {
        let marketed = GroupOutcome { customers: 9500, responders: 3800, revenue: 380_000.0 };
        let holdout = GroupOutcome { customers: 500, responders: 180, revenue: 15_000.0 };
        let h = HoldoutResult::new(0.05, "2026-04-01", marketed, holdout);
        // 0.40 against 0.36; (40 − 30) × 9500 = 95,000.
        assert!((h.lift.absolute - 0.04).abs() < 1e-12);
        assert!((h.incremental_revenue - 95_000.0).abs() < 1e-6);
        let empty = HoldoutResult::new(
            0.05,
            "x",
            marketed,
            GroupOutcome { customers: 0, responders: 0, revenue: 0.0 },
        );
        assert!(empty.incremental_revenue.is_nan() && empty.lift.absolute.is_nan());
    }
}
