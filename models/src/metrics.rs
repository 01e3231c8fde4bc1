//! Evaluation metrics for binary scores (ROC AUC, log loss, Brier score,
//! top-decile lift: labels and predicted probabilities of the positive
//! class, in the same order) and for amounts (MAE, RMSE, R², Gini).

use serde::{Deserialize, Serialize};

/// The validation metrics recorded in every classifier artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Rows evaluated.
    pub rows: usize,
    /// Share of positive labels.
    pub positive_rate: f64,
    /// Area under the ROC curve (0.5 = chance, 1 = perfect ranking).
    pub roc_auc: f64,
    /// Mean negative log-likelihood, natural log (lower is better).
    pub log_loss: f64,
    /// Mean squared error of the probabilities (lower is better).
    pub brier: f64,
    /// Positive rate in the top 10% by score over the overall positive rate.
    pub top_decile_lift: f64,
    /// Area under the precision-recall curve (average precision); the
    /// positive rate is chance. Absent (0) in artifacts written before it.
    #[serde(default)]
    pub pr_auc: f64,
}

impl Metrics {
    /// Computes every metric. `y` and `p` must have the same length.
    pub fn compute(y: &[bool], p: &[f64]) -> Metrics {
        Metrics {
            rows: y.len(),
            positive_rate: positive_rate(y),
            roc_auc: roc_auc(y, p),
            log_loss: log_loss(y, p),
            brier: brier(y, p),
            top_decile_lift: lift_at(y, p, 0.1),
            pr_auc: average_precision(y, p),
        }
    }
}

fn positive_rate(y: &[bool]) -> f64 {
    if y.is_empty() {
        return f64::NAN;
    }
    y.iter().filter(|&&v| v).count() as f64 / y.len() as f64
}

/// ROC AUC as the Mann-Whitney statistic: the probability that a random
/// positive scores above a random negative, ties counting one half.
/// NaN when either class is absent.
pub fn roc_auc(y: &[bool], p: &[f64]) -> f64 {
    assert_eq!(y.len(), p.len(), "labels and scores differ in length");
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    // Average ranks (1-based) over runs of tied scores.
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && p[order[j + 1]] == p[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if y[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let n_pos = y.iter().filter(|&&v| v).count() as f64;
    let n_neg = y.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    (rank_sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Mean log loss with probabilities clipped to [1e-15, 1 - 1e-15].
pub fn log_loss(y: &[bool], p: &[f64]) -> f64 {
    assert_eq!(y.len(), p.len(), "labels and scores differ in length");
    let eps = 1e-15;
    let total: f64 = y
        .iter()
        .zip(p)
        .map(|(&yi, &pi)| {
            let pi = pi.clamp(eps, 1.0 - eps);
            if yi { -pi.ln() } else { -(1.0 - pi).ln() }
        })
        .sum();
    total / y.len() as f64
}

/// Mean squared difference between probability and outcome.
pub fn brier(y: &[bool], p: &[f64]) -> f64 {
    assert_eq!(y.len(), p.len(), "labels and scores differ in length");
    let total: f64 = y.iter().zip(p).map(|(&yi, &pi)| (pi - if yi { 1.0 } else { 0.0 }).powi(2)).sum();
    total / y.len() as f64
}

/// Positive rate among the top `share` of rows by score (at least one row),
/// divided by the overall positive rate. Ties at the boundary are broken by
/// row order, so the figure is deterministic.
pub fn lift_at(y: &[bool], p: &[f64], share: f64) -> f64 {
    assert_eq!(y.len(), p.len(), "labels and scores differ in length");
    let base = positive_rate(y);
    if y.is_empty() || base == 0.0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let k = ((y.len() as f64 * share).round() as usize).max(1);
    let hits = order[..k].iter().filter(|&&i| y[i]).count() as f64;
    (hits / k as f64) / base
}

/// Average precision: the mean, over the positives in score order
/// (highest first), of the precision at each one's rank. NaN without
/// positives.
pub fn average_precision(y: &[bool], p: &[f64]) -> f64 {
    assert_eq!(y.len(), p.len(), "labels and scores differ in length");
    let order = by_score_descending(p);
    let (mut hits, mut sum) = (0.0, 0.0);
    for (rank, &i) in order.iter().enumerate() {
        if y[i] {
            hits += 1.0;
            sum += hits / (rank + 1) as f64;
        }
    }
    if hits == 0.0 { f64::NAN } else { sum / hits }
}

/// Row indices by score, highest first; ties keep row order (stable sort).
pub(crate) fn by_score_descending(p: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    order
}

/// The curves of a validation, for reports (`metrics.json`, `report.html`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curves {
    /// ROC curve: (false positive rate, true positive rate), one point per
    /// distinct score, from (0, 0) to (1, 1).
    pub roc: Vec<[f64; 2]>,
    /// Cumulative gains: (share of rows contacted, share of positives
    /// reached), targeting by score, at every 5 %.
    pub gains: Vec<[f64; 2]>,
    /// Lift of each score decile (positive rate over the overall rate),
    /// highest scores first.
    pub decile_lift: Vec<f64>,
    /// Calibration: ten equal-count bins by score.
    pub calibration: Vec<CalibrationBin>,
}

/// One calibration bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    pub rows: usize,
    /// Mean predicted probability in the bin.
    pub predicted: f64,
    /// Share of positives in the bin.
    pub observed: f64,
}

impl Curves {
    /// Every curve for labels `y` and scores `p`.
    pub fn compute(y: &[bool], p: &[f64]) -> Curves {
        assert_eq!(y.len(), p.len(), "labels and scores differ in length");
        let n = y.len();
        let positives = y.iter().filter(|&&v| v).count() as f64;
        let negatives = n as f64 - positives;
        let order = by_score_descending(p);
        let mut roc = vec![[0.0, 0.0]];
        let (mut tp, mut fp) = (0.0, 0.0);
        for (k, &i) in order.iter().enumerate() {
            if y[i] {
                tp += 1.0
            } else {
                fp += 1.0
            }
            let last_of_tie = order.get(k + 1).is_none_or(|&j| p[j] != p[i]);
            if last_of_tie {
                roc.push([fp / negatives.max(1.0), tp / positives.max(1.0)]);
            }
        }
        let reached =
            |rows: usize| order[..rows].iter().filter(|&&i| y[i]).count() as f64 / positives.max(1.0);
        let gains = (0..=20)
            .map(|k| {
                let share = k as f64 / 20.0;
                [share, reached((share * n as f64).round() as usize)]
            })
            .collect();
        let rate = positives / n.max(1) as f64;
        let slice = |k: usize, parts: usize| &order[k * n / parts..(k + 1) * n / parts];
        let decile_lift = (0..10)
            .map(|k| {
                let rows = slice(k, 10);
                let hit = rows.iter().filter(|&&i| y[i]).count() as f64 / rows.len().max(1) as f64;
                hit / rate
            })
            .collect();
        let calibration = (0..10)
            .rev()
            .map(|k| {
                let rows = slice(k, 10);
                let m = rows.len().max(1) as f64;
                CalibrationBin {
                    rows: rows.len(),
                    predicted: rows.iter().map(|&i| p[i]).sum::<f64>() / m,
                    observed: rows.iter().filter(|&&i| y[i]).count() as f64 / m,
                }
            })
            .collect();
        Curves { roc, gains, decile_lift, calibration }
    }
}

/// Validation metrics of a predicted amount (e.g. spend in a horizon).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub rows: usize,
    /// Mean actual and mean predicted amount (their gap is the bias).
    pub mean_actual: f64,
    pub mean_predicted: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// 1 − (squared error / squared deviation from the mean); 0 = no better
    /// than predicting the mean, negative = worse.
    pub r2: f64,
    /// Normalised Gini ([`normalized_gini`]): how well the prediction ranks
    /// who spends most; 1 = perfect order, 0 = random.
    pub gini: f64,
}

impl RegressionMetrics {
    /// Every metric of predictions `p` against actual amounts `y`.
    pub fn compute(y: &[f64], p: &[f64]) -> RegressionMetrics {
        assert_eq!(y.len(), p.len(), "amounts and predictions differ in length");
        let n = y.len().max(1) as f64;
        let mean_actual = y.iter().sum::<f64>() / n;
        let ss_res: f64 = y.iter().zip(p).map(|(a, b)| (a - b).powi(2)).sum();
        let ss_tot: f64 = y.iter().map(|a| (a - mean_actual).powi(2)).sum();
        RegressionMetrics {
            rows: y.len(),
            mean_actual,
            mean_predicted: p.iter().sum::<f64>() / n,
            mae: y.iter().zip(p).map(|(a, b)| (a - b).abs()).sum::<f64>() / n,
            rmse: (ss_res / n).sqrt(),
            r2: if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { f64::NAN },
            gini: normalized_gini(y, p),
        }
    }
}

/// The Gini of amounts `y` ordered by prediction `p` (highest first), over
/// that of the best order (by `y` itself): the area between the Lorenz
/// curve of the ordered amounts and the diagonal, normalised. Ties in `p`
/// keep row order. NaN when every amount is equal.
pub fn normalized_gini(y: &[f64], p: &[f64]) -> f64 {
    let gini = |score: &[f64]| {
        let order = by_score_descending(score);
        let total: f64 = y.iter().sum();
        let n = y.len() as f64;
        let mut cumulative = 0.0;
        let mut sum = 0.0;
        for (k, &i) in order.iter().enumerate() {
            cumulative += y[i];
            sum += cumulative / total - (k + 1) as f64 / n;
        }
        sum / n
    };
    let best = gini(y);
    if best.abs() < 1e-15 { f64::NAN } else { gini(p) / best }
}

#[cfg(test)]
mod tests {
    #[test]
    fn regression_metrics_by_hand() {
        let y = [1.0, 2.0, 3.0, 4.0];
        let m = RegressionMetrics::compute(&y, &[1.0, 2.0, 2.0, 6.0]);
        assert_eq!((m.mean_actual, m.mean_predicted), (2.5, 2.75));
        assert!((m.mae - 0.75).abs() < 1e-12, "(0 + 0 + 1 + 2) / 4");
        assert!((m.rmse - 1.25f64.sqrt()).abs() < 1e-12, "(1 + 4) / 4");
        assert!((m.r2 - (1.0 - 5.0 / 5.0)).abs() < 1e-12, "squared deviations 2.25 + 0.25 + 0.25 + 2.25");
        // Sorted by y: shares 0.4, 0.7, 0.9, 1 against 0.25 .. 1: Gini 0.125.
        assert!((normalized_gini(&y, &[0.1, 0.2, 0.3, 0.4]) - 1.0).abs() < 1e-12);
        assert!((normalized_gini(&y, &[0.4, 0.3, 0.2, 0.1]) + 1.0).abs() < 1e-12);
        // Order 4, 2, 3, 1: shares 0.4, 0.6, 0.9, 1 -> (0.15 + 0.1 + 0.15) / 4 = 0.1.
        assert!((normalized_gini(&y, &[0.0, 0.3, 0.2, 0.4]) - 0.8).abs() < 1e-12);
    }

    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        // Pairs (pos, neg): (0.8,0.1) win, (0.8,0.4) win, (0.4,0.1) win,
        // (0.4,0.4) tie -> (3 + 0.5) / 4.
        let y = [true, false, true, false];
        let p = [0.8, 0.1, 0.4, 0.4];
        assert!((roc_auc(&y, &p) - 0.875).abs() < 1e-12);
    }

    #[test]
    fn auc_perfect_and_inverted() {
        let y = [false, false, true, true];
        assert_eq!(roc_auc(&y, &[0.1, 0.2, 0.3, 0.4]), 1.0);
        assert_eq!(roc_auc(&y, &[0.4, 0.3, 0.2, 0.1]), 0.0);
        assert!(roc_auc(&[true, true], &[0.1, 0.2]).is_nan());
    }

    #[test]
    fn log_loss_and_brier_by_hand() {
        let y = [true, false];
        let p = [0.8, 0.4];
        // -(ln 0.8 + ln 0.6) / 2
        let expected = -((0.8f64).ln() + (0.6f64).ln()) / 2.0;
        assert!((log_loss(&y, &p) - expected).abs() < 1e-12);
        // ((0.2)^2 + (0.4)^2) / 2 = 0.1
        assert!((brier(&y, &p) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn lift_of_top_decile() {
        // 20 rows, 4 positives (base 0.2). Top 2 by score: one positive.
        // Lift = (1/2) / 0.2 = 2.5.
        let mut y = vec![false; 20];
        let mut p: Vec<f64> = (0..20).map(|i| i as f64 / 100.0).collect();
        y[19] = true; // highest score
        y[0] = true;
        y[1] = true;
        y[2] = true;
        p[18] = 0.5; // second highest, negative
        assert!((lift_at(&y, &p, 0.1) - 2.5).abs() < 1e-12);
    }

    #[test]
    fn average_precision_and_curves_by_hand() {
        let y = [true, false, true, false];
        let p = [0.9, 0.8, 0.7, 0.1];
        // Positives at ranks 1 and 3: precision 1 and 2/3.
        assert!((average_precision(&y, &p) - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        let c = Curves::compute(&y, &p);
        assert_eq!(c.roc, vec![[0.0, 0.0], [0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [1.0, 1.0]]);
        assert_eq!(c.gains.first(), Some(&[0.0, 0.0]));
        assert_eq!(c.gains.last(), Some(&[1.0, 1.0]));
        assert_eq!(c.gains[10], [0.5, 0.5], "top 2 rows hold one of two positives");
        // Tied scores are one ROC point.
        let tied = Curves::compute(&[true, false], &[0.5, 0.5]);
        assert_eq!(tied.roc, vec![[0.0, 0.0], [1.0, 1.0]]);
    }

    #[test]
    fn calibration_bins_hold_equal_counts_lowest_scores_first() {
        let p: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let y: Vec<bool> = (0..100).map(|i| i >= 90).collect();
        let c = Curves::compute(&y, &p);
        assert_eq!(c.calibration.len(), 10);
        assert!(c.calibration.iter().all(|b| b.rows == 10));
        assert!((c.calibration[0].predicted - 0.045).abs() < 1e-12);
        assert_eq!(c.calibration[9].observed, 1.0);
        assert_eq!(c.calibration[8].observed, 0.0);
        assert!((c.decile_lift[0] - 10.0).abs() < 1e-12);
    }
}
