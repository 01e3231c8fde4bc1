//! What a data scientist checks after fitting BG/NBD (the charts of Fader,
//! Hardie & Lee 2005): the cohort's cumulative repeat purchases tracked
//! week by week against the model through calibration and holdout, holdout
//! purchases against the model's conditional expectation by calibration
//! frequency, and the probability-alive matrix over frequency and recency.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::clv::{BgNbd, GammaGamma, PurchaseModel, Rfm};
use crate::metrics::RegressionMetrics;
use crate::spend::{FittedSpend, SpendParams};

/// Most points of the tracking curve.
const TRACKING_POINTS: f64 = 200.0;
/// Calibration frequencies get their own bucket up to this; the rest share `N+`.
const FREQUENCY_BUCKETS: usize = 7;
/// Cells per axis of the probability-alive matrix.
const ALIVE_CELLS: usize = 20;

/// The diagnostics of one BG/NBD fit; times in the model's unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvDiagnostics {
    /// Cumulative repeat purchases of the cohort (customers whose first
    /// purchase is in the calibration period), actual and expected, from
    /// the cohort's first purchase day.
    pub tracking: Vec<TrackingPoint>,
    /// Where calibration ends on the tracking time axis.
    pub calibration_end: f64,
    /// The holdout check, when the data reaches past the calibration.
    pub holdout: Option<Holdout>,
    /// P(alive) for customers of the largest calibration age.
    pub p_alive: AliveMatrix,
    /// Holdout spend: BG/NBD x Gamma-Gamma against the supervised spend
    /// model, when there is a holdout and features to learn from.
    #[serde(default)]
    pub spend: Option<SpendComparison>,
    /// The same tracking and holdout checks for Pareto/NBD, when fitted.
    #[serde(default)]
    pub pareto_nbd: Option<Box<ClvDiagnostics>>,
}

/// One point of the tracking curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackingPoint {
    /// Time since the cohort's first purchase day.
    pub t: f64,
    pub actual: f64,
    pub expected: f64,
}

/// Repeat purchases in the holdout period against the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holdout {
    /// Length of the holdout period.
    pub length: f64,
    /// Repeat purchases of the cohort in the holdout, and the model's
    /// conditional expectation given each customer's calibration history.
    pub actual: f64,
    pub expected: f64,
    /// The same per calibration frequency (`0` .. `6`, `7+`): mean per customer.
    pub by_frequency: Vec<FrequencyBucket>,
}

/// Customers with one calibration frequency (or more, for the last bucket).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrequencyBucket {
    pub frequency: String,
    pub customers: usize,
    /// Mean holdout repeat purchases per customer.
    pub actual: f64,
    pub expected: f64,
}

/// `values[i][j]` = P(alive) at `frequencies[i]` repeat purchases with the
/// last at `recencies[j]`, for a customer of age `age`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliveMatrix {
    pub age: f64,
    pub frequencies: Vec<f64>,
    pub recencies: Vec<f64>,
    pub values: Vec<Vec<f64>>,
}

/// Diagnostics of `model` (BG/NBD or Pareto/NBD) from purchase days `(customer, day)` (one per
/// customer and day, as `summarize` merges them): `calibration` holds the
/// days up to `end_day`, `holdout` the later ones (which may be empty).
/// Days are whole days (e.g. since 1970-01-01); `unit_days` is the model's
/// time unit in days.
pub fn diagnose<S: AsRef<str>>(
    model: &impl PurchaseModel,
    calibration: impl IntoIterator<Item = (S, i64)>,
    holdout: impl IntoIterator<Item = (S, i64)>,
    end_day: i64,
    unit_days: f64,
) -> ClvDiagnostics {
    // Each customer's distinct purchase days, calibration then holdout.
    let mut days: HashMap<String, (Vec<i64>, Vec<i64>)> = HashMap::new();
    let mut add = |customer: S, day: i64, holdout: bool| {
        let customer = customer.as_ref();
        let entry = match days.get_mut(customer) {
            Some(e) => e,
            None => days.entry(customer.to_string()).or_default(),
        };
        if holdout { entry.1.push(day) } else { entry.0.push(day) }
    };
    for (c, d) in calibration {
        if d <= end_day {
            add(c, d, false);
        }
    }
    for (c, d) in holdout {
        if d > end_day {
            add(c, d, true);
        }
    }
    let mut cohort = Vec::new();
    for (cal, hold) in days.into_values() {
        if cal.is_empty() {
            continue; // first purchase after calibration: not in the cohort
        }
        let (mut cal, mut hold) = (cal, hold);
        cal.sort_unstable();
        cal.dedup();
        hold.sort_unstable();
        hold.dedup();
        cohort.push((cal, hold));
    }
    let first_day = cohort.iter().map(|(c, _)| c[0]).min().unwrap_or(end_day);
    let last_day = cohort.iter().filter_map(|(_, h)| h.last()).copied().max().unwrap_or(end_day).max(end_day);
    let unit = |days: i64| days as f64 / unit_days;

    // Tracking: repeat purchase days against Σ E[X(t − first_i)] over the
    // cohort, grouped by first purchase day; E is cached per day difference.
    let mut by_first: BTreeMap<i64, usize> = BTreeMap::new();
    let mut repeats: Vec<i64> = Vec::new();
    for (cal, hold) in &cohort {
        *by_first.entry(cal[0]).or_default() += 1;
        repeats.extend(cal[1..].iter().chain(hold));
    }
    repeats.sort_unstable();
    let span = last_day - first_day;
    let step = ((span as f64 / TRACKING_POINTS).ceil() as i64).max(unit_days as i64).max(1);
    let mut expected_new: Vec<f64> = vec![f64::NAN; span as usize + 1];
    let mut grid: Vec<i64> = (1..).map(|k| first_day + k * step).take_while(|&d| d < last_day).collect();
    grid.extend([end_day, last_day]);
    grid.sort_unstable();
    grid.dedup();
    let tracking = grid
        .into_iter()
        .map(|d| {
            let actual = repeats.partition_point(|&r| r <= d) as f64;
            let mut expected = 0.0;
            for (&first, &n) in by_first.range(..=d) {
                let diff = (d - first) as usize;
                if expected_new[diff].is_nan() {
                    expected_new[diff] = model.expected_purchases_new(unit(d - first));
                }
                expected += n as f64 * expected_new[diff];
            }
            TrackingPoint { t: unit(d - first_day), actual, expected }
        })
        .collect();

    let rfm = |cal: &[i64]| Rfm {
        frequency: (cal.len() - 1) as f64,
        recency: unit(cal[cal.len() - 1] - cal[0]),
        age: unit(end_day - cal[0]),
        monetary: 0.0,
    };
    let holdout = (last_day > end_day).then(|| {
        let length = unit(last_day - end_day);
        let mut buckets = [(0usize, 0.0, 0.0); FREQUENCY_BUCKETS + 1];
        for (cal, hold) in &cohort {
            let c = rfm(cal);
            let b = &mut buckets[(c.frequency as usize).min(FREQUENCY_BUCKETS)];
            b.0 += 1;
            b.1 += hold.len() as f64;
            b.2 += model.expected_purchases(&c, length);
        }
        Holdout {
            length,
            actual: buckets.iter().map(|b| b.1).sum(),
            expected: buckets.iter().map(|b| b.2).sum(),
            by_frequency: buckets
                .iter()
                .enumerate()
                .map(|(i, &(n, actual, expected))| FrequencyBucket {
                    frequency: if i == FREQUENCY_BUCKETS { format!("{i}+") } else { i.to_string() },
                    customers: n,
                    actual: actual / n.max(1) as f64,
                    expected: expected / n.max(1) as f64,
                })
                .collect(),
        }
    });

    let age = unit(end_day - first_day);
    let mut counts: Vec<usize> = cohort.iter().map(|(c, _)| c.len() - 1).collect();
    counts.sort_unstable();
    let high = counts.get(counts.len() * 99 / 100).copied().unwrap_or(0).max(1);
    let mut frequencies: Vec<f64> =
        (0..ALIVE_CELLS).map(|i| (i * high) as f64 / (ALIVE_CELLS - 1) as f64).map(f64::round).collect();
    frequencies.dedup();
    let recencies: Vec<f64> = (0..ALIVE_CELLS).map(|j| age * j as f64 / (ALIVE_CELLS - 1) as f64).collect();
    let values = frequencies
        .iter()
        .map(|&x| {
            recencies
                .iter()
                .map(|&t| {
                    let recency = if x == 0.0 { 0.0 } else { t };
                    model.probability_alive(&Rfm { frequency: x, recency, age, monetary: 0.0 })
                })
                .collect()
        })
        .collect();
    ClvDiagnostics {
        tracking,
        calibration_end: unit(end_day - first_day),
        holdout,
        p_alive: AliveMatrix { age, frequencies, recencies, values },
        spend: None,
        pareto_nbd: None,
    }
}

/// Holdout spend predicted two ways and judged on the same customers: BG/NBD
/// x Gamma-Gamma from each customer's purchase summary, and the supervised
/// spend model ([`crate::spend`]) from their features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpendComparison {
    /// The holdout length the spend is summed over (model time unit).
    pub horizon: f64,
    /// Customers the supervised model was fitted on, and those both models
    /// are judged on (a stratified 20 %, seed 42).
    pub train_customers: usize,
    pub valid_customers: usize,
    pub bg_nbd_gamma_gamma: RegressionMetrics,
    pub supervised: RegressionMetrics,
    /// Share of the held-out customers' spend reached by targeting the top
    /// share by each prediction (Lorenz curves, every 5 %).
    pub gains_bg_nbd_gamma_gamma: Vec<[f64; 2]>,
    pub gains_supervised: Vec<[f64; 2]>,
}

/// Fits the supervised spend model on 80 % of the cohort and compares it
/// with BG/NBD x Gamma-Gamma on the other 20 %: row `i` of `x` is the
/// customer with summary `summaries[i]` and holdout spend `spend[i]`.
#[allow(clippy::too_many_arguments)]
pub fn compare_spend(
    purchases: &BgNbd,
    value: &GammaGamma,
    summaries: &[Rfm],
    feature_names: &[String],
    x: &ndarray::Array2<f64>,
    spend: &[f64],
    horizon: f64,
    params: &SpendParams,
) -> Result<(FittedSpend, SpendComparison), ModelError> {
    let spent: Vec<bool> = spend.iter().map(|&v| v > 0.0).collect();
    let (train, valid) = crate::stratified_split(&spent, 0.2, 42);
    let pick = |rows: &[usize], v: &[f64]| -> Vec<f64> { rows.iter().map(|&i| v[i]).collect() };
    let model = params.fit(feature_names, &x.select(ndarray::Axis(0), &train), &pick(&train, spend))?;
    let actual = pick(&valid, spend);
    let supervised = model.predict(&x.select(ndarray::Axis(0), &valid));
    let probabilistic: Vec<f64> = valid
        .iter()
        .map(|&i| purchases.expected_purchases(&summaries[i], horizon) * value.expected_spend(&summaries[i]))
        .collect();
    let comparison = SpendComparison {
        horizon,
        train_customers: train.len(),
        valid_customers: valid.len(),
        bg_nbd_gamma_gamma: RegressionMetrics::compute(&actual, &probabilistic),
        supervised: RegressionMetrics::compute(&actual, &supervised),
        gains_bg_nbd_gamma_gamma: spend_gains(&actual, &probabilistic),
        gains_supervised: spend_gains(&actual, &supervised),
    };
    Ok((model, comparison))
}

/// (share of customers by prediction, share of actual spend), every 5 %.
fn spend_gains(actual: &[f64], predicted: &[f64]) -> Vec<[f64; 2]> {
    let order = crate::metrics::by_score_descending(predicted);
    let total: f64 = actual.iter().sum::<f64>().max(1e-12);
    (0..=20)
        .map(|k| {
            let top = (k as f64 / 20.0 * order.len() as f64).round() as usize;
            [k as f64 / 20.0, order[..top].iter().map(|&i| actual[i]).sum::<f64>() / total]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_and_holdout_count_repeat_purchases_by_hand() {
        let model = BgNbd { r: 0.5, alpha: 5.0, a: 0.8, b: 2.5 };
        // a: days 0, 3, 10 (calibration) and 12 (holdout); b: day 5 and 5
        // again (one purchase), then 14; c: first purchase after calibration.
        let cal = [("a", 0), ("a", 3), ("a", 10), ("b", 5), ("b", 5)];
        let hold = [("a", 12), ("b", 14), ("c", 13)];
        let d = diagnose(&model, cal, hold, 10, 1.0);
        assert_eq!(d.calibration_end, 10.0);
        let last = d.tracking.last().unwrap();
        assert_eq!((last.t, last.actual), (14.0, 4.0), "a: 3, 10, 12; b: 14");
        let at_end = d.tracking.iter().find(|p| p.t == 10.0).unwrap();
        assert_eq!(at_end.actual, 2.0);
        let expected = model.expected_purchases_new(10.0) + model.expected_purchases_new(5.0);
        assert!((at_end.expected - expected).abs() < 1e-12);
        let h = d.holdout.unwrap();
        assert_eq!((h.length, h.actual), (4.0, 2.0));
        assert_eq!(h.by_frequency[0].customers, 1, "b: no repeat in calibration");
        assert_eq!((h.by_frequency[2].customers, h.by_frequency[2].actual), (1, 1.0));
        let a = Rfm { frequency: 2.0, recency: 10.0, age: 10.0, monetary: 0.0 };
        assert!((h.by_frequency[2].expected - model.expected_purchases(&a, 4.0)).abs() < 1e-12);
        // P(alive) falls as the last purchase recedes, for a repeat buyer.
        let m = &d.p_alive;
        let row = &m.values[m.frequencies.len() - 1];
        assert!(row[0] < row[row.len() - 1], "{row:?}");
        assert!(m.values[0].iter().all(|&p| p == 1.0), "no repeat purchase: alive");
    }
}
