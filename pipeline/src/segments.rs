//! Segments and contact strategy: each customer's value tier (from
//! predicted CLV), churn-risk band (from the churn probability) and
//! lifecycle stage, mapped by a rule table to a contact strategy and a
//! recommended treatment (docs/nightly.md, "Segments").
//!
//! Everything here is plain data in, plain data out: the nightly job
//! feeds it the scores and writes what it returns.

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};

/// Value tiers and risk bands: `high`, `medium`, `low`.
pub const LEVELS: &[&str] = &["high", "medium", "low"];

/// How customers are segmented (`[segments]` in the nightly config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentConfig {
    pub value: ValueTiers,
    pub risk: RiskBands,
    /// Tried in order, the first match wins; the last must match everyone.
    pub rules: Vec<StrategyRule>,
}

/// Value tier from predicted CLV.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValueTiers {
    /// `quantile`: `high` and `medium` are shares of the CLV distribution
    /// (0.8 = at or above the 80th percentile); `amount`: they are CLV
    /// amounts in the data's currency.
    pub by: TierBasis,
    pub high: f64,
    pub medium: f64,
}

/// What [`ValueTiers`]' limits are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TierBasis {
    Quantile,
    Amount,
}

impl Default for ValueTiers {
    /// Top 20 % of predicted value high, the next 30 % medium.
    fn default() -> Self {
        ValueTiers { by: TierBasis::Quantile, high: 0.8, medium: 0.5 }
    }
}

/// Churn-risk band: churn probability at or above `high` is high, at or
/// above `medium` is medium, else low.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskBands {
    pub high: f64,
    pub medium: f64,
}

impl Default for RiskBands {
    fn default() -> Self {
        RiskBands { high: 0.6, medium: 0.3 }
    }
}

/// How a customer is contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Personal contact by an agent or account manager.
    HighTouch,
    /// Periodic campaigns.
    LowTouch,
    /// Automated digital contact only.
    TechTouch,
}

/// What to do with a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Treatment {
    Retain,
    WinBack,
    Nurture,
    Upsell,
    DoNotDisturb,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::HighTouch => "high_touch",
            Strategy::LowTouch => "low_touch",
            Strategy::TechTouch => "tech_touch",
        }
    }
}

impl Treatment {
    pub fn name(self) -> &'static str {
        match self {
            Treatment::Retain => "retain",
            Treatment::WinBack => "win_back",
            Treatment::Nurture => "nurture",
            Treatment::Upsell => "upsell",
            Treatment::DoNotDisturb => "do_not_disturb",
        }
    }
}

/// One row of the rule table: a customer matches when each non-empty list
/// holds their value (an empty list matches anything, including a missing
/// value; a non-empty list never matches a missing one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StrategyRule {
    /// Lifecycle stages (`prospect`, `new`, `active`, `at_risk`, `dormant`,
    /// `churned`, `reactivated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage: Vec<String>,
    /// Value tiers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value: Vec<String>,
    /// Churn-risk bands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risk: Vec<String>,
    pub strategy: Strategy,
    pub treatment: Treatment,
}

impl Default for SegmentConfig {
    /// The default rule table (docs/nightly.md explains each row).
    fn default() -> Self {
        use Strategy::*;
        use Treatment::*;
        let rule = |stage: &[&str], value: &[&str], risk: &[&str], strategy, treatment| StrategyRule {
            stage: stage.iter().map(|s| s.to_string()).collect(),
            value: value.iter().map(|s| s.to_string()).collect(),
            risk: risk.iter().map(|s| s.to_string()).collect(),
            strategy,
            treatment,
        };
        SegmentConfig {
            value: ValueTiers::default(),
            risk: RiskBands::default(),
            rules: vec![
                rule(&["prospect"], &[], &[], TechTouch, Nurture),
                rule(&["churned", "dormant"], &["high"], &[], HighTouch, WinBack),
                rule(&["churned"], &["low"], &[], TechTouch, DoNotDisturb),
                rule(&["churned", "dormant"], &[], &[], TechTouch, WinBack),
                rule(&[], &["high"], &["high"], HighTouch, Retain),
                rule(&[], &["medium"], &["high"], LowTouch, Retain),
                rule(&[], &[], &["high"], TechTouch, Retain),
                rule(&["new", "reactivated"], &[], &[], LowTouch, Nurture),
                rule(&[], &["high", "medium"], &[], LowTouch, Upsell),
                rule(&[], &[], &[], TechTouch, Nurture),
            ],
        }
    }
}

/// One customer's inputs to segmentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegmentInput<'a> {
    pub stage: Option<&'a str>,
    pub clv: Option<f64>,
    pub churn_probability: Option<f64>,
}

/// One customer's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub value_tier: Option<&'static str>,
    pub risk_band: Option<&'static str>,
    pub strategy: Strategy,
    pub treatment: Treatment,
}

impl SegmentConfig {
    /// Checks limits and rule values; `stages` are the lifecycle stages
    /// the features produce. Errors name the field (`segments.rules[3].stage`).
    pub fn check(&self, stages: &[String]) -> Result<()> {
        let bad = |field: String, reason: String| PipelineError::Config { field, reason };
        let v = &self.value;
        let limits_ok = match v.by {
            TierBasis::Quantile => 0.0 < v.medium && v.medium <= v.high && v.high < 1.0,
            TierBasis::Amount => v.medium.is_finite() && v.high.is_finite() && v.medium <= v.high,
        };
        if !limits_ok {
            return Err(bad(
                "segments.value".into(),
                format!(
                    "high = {}, medium = {}: need medium <= high{}",
                    v.high,
                    v.medium,
                    if v.by == TierBasis::Quantile { ", both strictly between 0 and 1" } else { "" }
                ),
            ));
        }
        let r = &self.risk;
        if !(0.0 <= r.medium && r.medium <= r.high && r.high <= 1.0) {
            return Err(bad(
                "segments.risk".into(),
                format!("high = {}, medium = {}: need 0 <= medium <= high <= 1", r.high, r.medium),
            ));
        }
        if self.rules.is_empty() {
            return Err(bad("segments.rules".into(), "no rules: every customer needs a strategy".into()));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let known: [(&str, &Vec<String>, Vec<&str>); 3] = [
                ("stage", &rule.stage, stages.iter().map(String::as_str).collect()),
                ("value", &rule.value, LEVELS.to_vec()),
                ("risk", &rule.risk, LEVELS.to_vec()),
            ];
            for (field, values, allowed) in known {
                if let Some(v) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
                    return Err(bad(
                        format!("segments.rules[{i}].{field}"),
                        format!("`{v}` is not one of {}", allowed.join(", ")),
                    ));
                }
            }
        }
        let last = self.rules.last().expect("not empty");
        if !(last.stage.is_empty() && last.value.is_empty() && last.risk.is_empty()) {
            return Err(bad(
                format!("segments.rules[{}]", self.rules.len() - 1),
                "the last rule must match everyone (no stage, value or risk): it is the default".into(),
            ));
        }
        Ok(())
    }

    /// The CLV limits of the high and medium tiers over `clv` (the
    /// quantiles, or the configured amounts).
    pub fn value_limits(&self, clv: &[f64]) -> Option<(f64, f64)> {
        match self.value.by {
            TierBasis::Amount => Some((self.value.high, self.value.medium)),
            TierBasis::Quantile => {
                let mut sorted: Vec<f64> = clv.iter().copied().filter(|v| v.is_finite()).collect();
                if sorted.is_empty() {
                    return None;
                }
                sorted.sort_by(f64::total_cmp);
                let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize];
                Some((q(self.value.high), q(self.value.medium)))
            }
        }
    }

    /// One customer's segments, given the value limits of [`Self::value_limits`].
    pub fn assign(&self, input: &SegmentInput, value_limits: Option<(f64, f64)>) -> Segment {
        let level = |v: f64, high: f64, medium: f64| {
            if v >= high {
                "high"
            } else if v >= medium {
                "medium"
            } else {
                "low"
            }
        };
        let value_tier = match (input.clv, value_limits) {
            (Some(v), Some((high, medium))) if v.is_finite() => Some(level(v, high, medium)),
            _ => None,
        };
        let risk_band = input
            .churn_probability
            .filter(|p| p.is_finite())
            .map(|p| level(p, self.risk.high, self.risk.medium));
        let matches = |list: &[String], v: Option<&str>| {
            list.is_empty() || v.is_some_and(|v| list.iter().any(|l| l == v))
        };
        let rule = self
            .rules
            .iter()
            .find(|r| {
                matches(&r.stage, input.stage) && matches(&r.value, value_tier) && matches(&r.risk, risk_band)
            })
            .expect("checked: the last rule matches everyone");
        Segment { value_tier, risk_band, strategy: rule.strategy, treatment: rule.treatment }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages() -> Vec<String> {
        crate::registry::feature("lifecycle_stage").expect("registered").categories
    }

    fn input<'a>(stage: &'a str, clv: Option<f64>, churn: Option<f64>) -> SegmentInput<'a> {
        SegmentInput { stage: Some(stage), clv, churn_probability: churn }
    }

    #[test]
    fn default_rules_are_valid_and_read_as_documented() {
        let config = SegmentConfig::default();
        config.check(&stages()).unwrap();
        // CLV 0..=99: the 80th percentile is 79, the median 50 (rounded index).
        let clv: Vec<f64> = (0..100).map(f64::from).collect();
        let limits = config.value_limits(&clv);
        assert_eq!(limits, Some((79.0, 50.0)));
        let seg = |stage, clv, churn| config.assign(&input(stage, clv, churn), limits);
        let s = seg("churned", Some(90.0), Some(0.9));
        assert_eq!((s.value_tier, s.risk_band), (Some("high"), Some("high")));
        assert_eq!((s.strategy, s.treatment), (Strategy::HighTouch, Treatment::WinBack));
        let s = seg("churned", Some(10.0), Some(0.9));
        assert_eq!((s.strategy, s.treatment), (Strategy::TechTouch, Treatment::DoNotDisturb));
        // Without a CLV model a churned customer has no tier: win back by machine.
        let s = seg("churned", None, Some(0.9));
        assert_eq!((s.value_tier, s.strategy, s.treatment), (None, Strategy::TechTouch, Treatment::WinBack));
        let s = seg("active", Some(60.0), Some(0.65));
        assert_eq!((s.value_tier, s.risk_band), (Some("medium"), Some("high")));
        assert_eq!((s.strategy, s.treatment), (Strategy::LowTouch, Treatment::Retain));
        let s = seg("active", Some(99.0), Some(0.1));
        assert_eq!(
            (s.risk_band, s.strategy, s.treatment),
            (Some("low"), Strategy::LowTouch, Treatment::Upsell)
        );
        let s = seg("new", Some(1.0), Some(0.3));
        assert_eq!(
            (s.risk_band, s.strategy, s.treatment),
            (Some("medium"), Strategy::LowTouch, Treatment::Nurture)
        );
        // Prospects have never bought: nothing to retain, whatever the risk.
        let s = seg("prospect", None, Some(0.99));
        assert_eq!((s.strategy, s.treatment), (Strategy::TechTouch, Treatment::Nurture));
        let s = seg("active", Some(1.0), Some(0.1));
        assert_eq!((s.strategy, s.treatment), (Strategy::TechTouch, Treatment::Nurture));
    }

    #[test]
    fn amount_tiers_use_the_configured_limits() {
        let config = SegmentConfig {
            value: ValueTiers { by: TierBasis::Amount, high: 500.0, medium: 100.0 },
            ..SegmentConfig::default()
        };
        config.check(&stages()).unwrap();
        let limits = config.value_limits(&[1.0, 2.0]);
        let tier = |v| config.assign(&input("active", Some(v), None), limits).value_tier;
        assert_eq!(
            [tier(500.0), tier(499.0), tier(100.0), tier(99.9)],
            [Some("high"), Some("medium"), Some("medium"), Some("low")]
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |config: SegmentConfig| config.check(&stages()).unwrap_err().to_string();
        let mut c = SegmentConfig::default();
        c.rules[2].stage.push("sleeping".into());
        let e = err(c);
        assert!(e.contains("segments.rules[2].stage") && e.contains("`sleeping`"), "{e}");
        let mut c = SegmentConfig::default();
        c.rules.pop();
        let e = err(c);
        assert!(e.contains("segments.rules[8]") && e.contains("must match everyone"), "{e}");
        let c = SegmentConfig { risk: RiskBands { high: 0.2, medium: 0.5 }, ..SegmentConfig::default() };
        assert!(err(c).contains("segments.risk"));
        let c = SegmentConfig {
            value: ValueTiers { by: TierBasis::Quantile, high: 80.0, medium: 50.0 },
            ..SegmentConfig::default()
        };
        assert!(err(c).contains("strictly between 0 and 1"));
        let e =
            toml::from_str::<SegmentConfig>("[[rules]]\nstrategy = \"high_touch\"\ntreatment = \"pamper\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("pamper") && e.contains("win_back"), "{e}");
    }
}
