//! Histogram gradient boosting for binary classification (log loss), the
//! LightGBM/XGBoost-hist recipe in plain Rust: features are cut into at most
//! 255 quantile bins once, each tree grows depth-first from per-bin
//! gradient histograms (the larger child's histogram is the parent's minus
//! the smaller one's), a missing value goes to whichever side of a split
//! gains more, and boosting stops early when the log loss of a held-out
//! slice of the training rows stops improving.
//!
//! Explanations are exact and additive (Saabas path attribution): walking a
//! row down a tree, each split moves the prediction from the node's value
//! to the child's; that step is credited to the split's feature. Per row,
//! the credits plus the base score are the log-odds.
//!
//! Why our own and not a crate: see docs/models.md, "Choosing the tree model".

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{ModelError, TrainingSet};

/// Hyperparameters; every field has a default, so a TOML table may name
/// only what it changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbmParams {
    /// Maximum number of trees; default 500 (early stopping usually ends sooner).
    pub n_trees: usize,
    /// Shrinkage of each tree's values; default 0.1.
    pub learning_rate: f64,
    /// Depth of each tree (root = 0); default 6.
    pub max_depth: usize,
    /// Fewest training rows in a leaf; default 50.
    pub min_samples_leaf: usize,
    /// L2 penalty on leaf values (XGBoost's lambda); default 1.0.
    pub l2: f64,
    /// Bins per feature, 2..=255; default 255.
    pub max_bins: usize,
    /// Share of rows each tree sees (without replacement), (0, 1]; default 1.0.
    pub subsample: f64,
    /// Stop after this many trees without improvement on the early-stopping
    /// rows; 0 = never stop early. Default 20.
    pub early_stopping_rounds: usize,
    /// Share of the training rows held out for early stopping; default 0.1.
    pub early_stopping_share: f64,
    /// Seed of the early-stopping split and of subsampling; default 42.
    pub seed: u64,
    /// Class weight of the positive rows (negatives weigh 1): > 1 makes
    /// the rare class count more, e.g. `negatives / positives` for
    /// balanced classes. Predictions then estimate the weighted odds, not
    /// the observed rate. Default 1.0.
    pub positive_weight: f64,
}

impl Default for GbmParams {
    fn default() -> Self {
        GbmParams {
            n_trees: 500,
            learning_rate: 0.1,
            max_depth: 6,
            min_samples_leaf: 50,
            l2: 1.0,
            max_bins: 255,
            subsample: 1.0,
            early_stopping_rounds: 20,
            early_stopping_share: 0.1,
            seed: 42,
            positive_weight: 1.0,
        }
    }
}

fn invalid(name: &'static str, value: impl ToString, reason: &'static str) -> ModelError {
    ModelError::InvalidParam { name, value: value.to_string(), reason }
}

impl GbmParams {
    /// Validates every parameter.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.n_trees == 0 {
            return Err(invalid("n_trees", 0, "must be > 0"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return Err(invalid("learning_rate", self.learning_rate, "must be in (0, 1]"));
        }
        if self.max_depth == 0 || self.max_depth > 16 {
            return Err(invalid("max_depth", self.max_depth, "must be in 1..=16"));
        }
        if self.min_samples_leaf == 0 {
            return Err(invalid("min_samples_leaf", 0, "must be > 0"));
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(invalid("l2", self.l2, "must be a finite number >= 0"));
        }
        if !(2..=255).contains(&self.max_bins) {
            return Err(invalid("max_bins", self.max_bins, "must be in 2..=255"));
        }
        if !(self.subsample > 0.0 && self.subsample <= 1.0) {
            return Err(invalid("subsample", self.subsample, "must be in (0, 1]"));
        }
        if !(self.positive_weight.is_finite() && self.positive_weight > 0.0) {
            return Err(invalid("positive_weight", self.positive_weight, "must be a finite number > 0"));
        }
        if !(self.early_stopping_share > 0.0 && self.early_stopping_share < 0.5) {
            return Err(invalid("early_stopping_share", self.early_stopping_share, "must be in (0, 0.5)"));
        }
        Ok(())
    }

    /// Fits on `train`; needs both classes.
    pub fn fit(&self, train: &TrainingSet) -> Result<FittedGbm, ModelError> {
        self.check()?;
        train.check()?;
        let positives = train.y.iter().filter(|&&v| v).count();
        if positives == 0 || positives == train.y.len() {
            return Err(ModelError::Data(format!(
                "{} rows with {positives} positives: both classes are needed",
                train.y.len()
            )));
        }
        let (fit_rows, stop_rows) = if self.early_stopping_rounds > 0 {
            crate::stratified_split(&train.y, self.early_stopping_share, self.seed)
        } else {
            ((0..train.y.len()).collect(), Vec::new())
        };
        let bins = Binned::new(&train.x, &fit_rows, self.max_bins);
        let y: Vec<f64> = fit_rows.iter().map(|&i| train.y[i] as u8 as f64).collect();
        let weight = |positive: bool| if positive { self.positive_weight } else { 1.0 };
        let w: Vec<f64> = y.iter().map(|&v| weight(v > 0.5)).collect();
        let rate = y.iter().sum::<f64>() / y.len() as f64;
        let base_score = (self.positive_weight * rate / (1.0 - rate)).ln();
        let n = fit_rows.len();
        let mut score = vec![base_score; n];
        let stop_x = train.x.select(ndarray::Axis(0), &stop_rows);
        let stop_y: Vec<bool> = stop_rows.iter().map(|&i| train.y[i]).collect();
        let mut stop_score = vec![base_score; stop_rows.len()];
        let (mut best_loss, mut best_trees, mut since_best) = (f64::INFINITY, 0, 0);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut trees = Vec::new();
        let (mut grad, mut hess) = (vec![0.0; n], vec![0.0; n]);
        for _ in 0..self.n_trees {
            for i in 0..n {
                let p = sigmoid(score[i]);
                grad[i] = w[i] * (p - y[i]);
                hess[i] = w[i] * (p * (1.0 - p)).max(1e-16);
            }
            let mut rows: Vec<u32> = if self.subsample < 1.0 {
                (0..n as u32).filter(|_| rng.gen_bool(self.subsample)).collect()
            } else {
                (0..n as u32).collect()
            };
            let tree = TreeBuilder { bins: &bins, grad: &grad, hess: &hess, params: self }.build(&mut rows);
            for (i, s) in score.iter_mut().enumerate() {
                *s += tree.predict_binned(&bins, i);
            }
            for (i, s) in stop_score.iter_mut().enumerate() {
                *s += tree.predict_row(stop_x.row(i).as_slice().expect("standard layout"));
            }
            trees.push(tree);
            if self.early_stopping_rounds > 0 {
                // Weighted log loss: the objective the trees minimise.
                let (mut total, mut weights) = (0.0, 0.0);
                for (&s, &yi) in stop_score.iter().zip(&stop_y) {
                    let p = sigmoid(s).clamp(1e-15, 1.0 - 1e-15);
                    total += weight(yi) * -(if yi { p } else { 1.0 - p }).ln();
                    weights += weight(yi);
                }
                let loss = total / weights;
                if loss < best_loss - 1e-9 {
                    (best_loss, best_trees, since_best) = (loss, trees.len(), 0);
                } else {
                    since_best += 1;
                    if since_best >= self.early_stopping_rounds {
                        break;
                    }
                }
            }
        }
        let trained = trees.len();
        if self.early_stopping_rounds > 0 {
            trees.truncate(best_trees.max(1));
        }
        let mut importance = vec![0.0; train.feature_names.len()];
        for tree in &trees {
            for node in &tree.nodes {
                if node.feature != LEAF {
                    importance[node.feature as usize] += node.gain;
                }
            }
        }
        let total: f64 = importance.iter().sum();
        if total > 0.0 {
            importance.iter_mut().for_each(|v| *v /= total);
        }
        Ok(FittedGbm {
            feature_names: train.feature_names.clone(),
            base_score,
            trees,
            trees_trained: trained,
            early_stopping_log_loss: best_loss.is_finite().then_some(best_loss),
            importance,
        })
    }
}

pub(crate) fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// `feature` of a leaf.
const LEAF: u32 = u32::MAX;

/// A tree node; leaves have `feature == u32::MAX`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    /// Rows with `value <= threshold` go left.
    pub threshold: f64,
    /// Where a missing value goes.
    pub missing_left: bool,
    pub left: u32,
    pub right: u32,
    /// The node's output (log-odds, already scaled by the learning rate):
    /// the leaf value, or what a leaf here would have been.
    pub value: f64,
    /// Loss reduction of the split (0 for leaves).
    pub gain: f64,
}

/// One regression tree on the log-odds scale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    fn goes_left(node: &Node, v: f64) -> bool {
        if v.is_nan() { node.missing_left } else { v <= node.threshold }
    }

    /// The leaf value for one row of raw features.
    pub fn predict_row(&self, row: &[f64]) -> f64 {
        let mut node = &self.nodes[0];
        while node.feature != LEAF {
            let next = if Self::goes_left(node, row[node.feature as usize]) { node.left } else { node.right };
            node = &self.nodes[next as usize];
        }
        node.value
    }

    /// Adds each split's step to its feature's entry of `out`; returns the
    /// root value.
    fn attribute(&self, row: &[f64], out: &mut [f64]) -> f64 {
        let mut node = &self.nodes[0];
        while node.feature != LEAF {
            let next = if Self::goes_left(node, row[node.feature as usize]) { node.left } else { node.right };
            let child = &self.nodes[next as usize];
            out[node.feature as usize] += child.value - node.value;
            node = child;
        }
        self.nodes[0].value
    }

    fn predict_binned(&self, bins: &Binned, row: usize) -> f64 {
        let mut node = &self.nodes[0];
        while node.feature != LEAF {
            let b = bins.bin(node.feature as usize, row);
            let left = if b == 0 {
                node.missing_left
            } else {
                bins.upper(node.feature as usize, b) <= node.threshold
            };
            node = &self.nodes[if left { node.left } else { node.right } as usize];
        }
        node.value
    }
}

/// A fitted boosted model: plain data inside a [`crate::ModelArtifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedGbm {
    pub feature_names: Vec<String>,
    /// Log-odds of the training positive rate; every row starts here.
    pub base_score: f64,
    pub trees: Vec<Tree>,
    /// Trees grown before early stopping cut back to the best iteration.
    pub trees_trained: usize,
    /// Log loss on the early-stopping rows at the kept iteration.
    pub early_stopping_log_loss: Option<f64>,
    /// Share of the total split gain per feature (sums to 1).
    pub importance: Vec<f64>,
}

impl FittedGbm {
    fn row_values(x: &Array2<f64>, i: usize, buf: &mut Vec<f64>) {
        buf.clear();
        buf.extend(x.row(i).iter().copied());
    }

    /// Probability of the positive class per row of `x` (columns in
    /// `feature_names` order).
    pub fn predict_proba(&self, x: &Array2<f64>) -> Vec<f64> {
        let mut buf = Vec::with_capacity(x.ncols());
        (0..x.nrows())
            .map(|i| {
                Self::row_values(x, i, &mut buf);
                sigmoid(self.base_score + self.trees.iter().map(|t| t.predict_row(&buf)).sum::<f64>())
            })
            .collect()
    }

    /// Per row and feature, the feature's share of the log-odds (see the
    /// module docs); a row's contributions plus [`FittedGbm::expected_log_odds`]
    /// are its log-odds.
    pub fn contributions(&self, x: &Array2<f64>) -> Array2<f64> {
        let mut out = Array2::zeros(x.dim());
        let mut buf = Vec::with_capacity(x.ncols());
        for i in 0..x.nrows() {
            Self::row_values(x, i, &mut buf);
            let row = out.row_mut(i).into_slice().expect("standard layout");
            for tree in &self.trees {
                tree.attribute(&buf, row);
            }
        }
        out
    }

    /// The log-odds before any split: base score plus every root value.
    pub fn expected_log_odds(&self) -> f64 {
        self.base_score + self.trees.iter().map(|t| t.nodes[0].value).sum::<f64>()
    }
}

/// The training matrix cut into bins, column-major. Bin 0 is "missing";
/// bins 1..=k of feature j hold values up to `upper[j][b - 1]`.
struct Binned {
    rows: usize,
    codes: Vec<u8>,
    /// Per feature, the upper edge of bins 1..k (the last is +inf).
    upper: Vec<Vec<f64>>,
    /// Offset of each feature's bins in a flat histogram.
    offsets: Vec<usize>,
}

impl Binned {
    /// Bins the rows `rows` of `x`; edges are quantiles of (at most 200,000
    /// evenly spaced) finite values.
    fn new(x: &Array2<f64>, rows: &[usize], max_bins: usize) -> Binned {
        let n = rows.len();
        let mut codes = vec![0u8; n * x.ncols()];
        let mut upper = Vec::with_capacity(x.ncols());
        let mut offsets = Vec::with_capacity(x.ncols() + 1);
        let mut offset = 0;
        let step = (n / 200_000).max(1);
        for j in 0..x.ncols() {
            let col = x.column(j);
            let mut sample: Vec<f64> =
                rows.iter().step_by(step).map(|&i| col[i]).filter(|v| v.is_finite()).collect();
            sample.sort_by(f64::total_cmp);
            sample.dedup();
            let mut edges: Vec<f64> = if sample.len() <= max_bins {
                sample.windows(2).map(|w| w[0] + (w[1] - w[0]) / 2.0).collect()
            } else {
                (1..max_bins).map(|q| sample[q * sample.len() / max_bins]).collect()
            };
            edges.dedup();
            edges.push(f64::INFINITY);
            for (r, &i) in rows.iter().enumerate() {
                let v = col[i];
                codes[j * n + r] = if v.is_nan() {
                    0
                } else {
                    (1 + edges.partition_point(|&e| e < v)).min(edges.len()) as u8
                };
            }
            offsets.push(offset);
            offset += edges.len() + 1;
            upper.push(edges);
        }
        offsets.push(offset);
        Binned { rows: n, codes, upper, offsets }
    }

    fn bin(&self, feature: usize, row: usize) -> u8 {
        self.codes[feature * self.rows + row]
    }

    fn upper(&self, feature: usize, bin: u8) -> f64 {
        self.upper[feature][bin as usize - 1]
    }

    fn column(&self, feature: usize) -> &[u8] {
        &self.codes[feature * self.rows..(feature + 1) * self.rows]
    }
}

/// Gradient, hessian and row count of a bin.
#[derive(Clone, Copy, Default)]
struct Stat {
    g: f64,
    h: f64,
    n: u32,
}

impl Stat {
    fn add(&mut self, o: Stat) {
        self.g += o.g;
        self.h += o.h;
        self.n += o.n;
    }
    fn minus(self, o: Stat) -> Stat {
        Stat { g: self.g - o.g, h: self.h - o.h, n: self.n - o.n }
    }
}

struct Split {
    feature: usize,
    /// Bins 1..=bin go left.
    bin: u8,
    missing_left: bool,
    gain: f64,
}

struct TreeBuilder<'a> {
    bins: &'a Binned,
    grad: &'a [f64],
    hess: &'a [f64],
    params: &'a GbmParams,
}

impl TreeBuilder<'_> {
    fn histogram(&self, rows: &[u32]) -> Vec<Stat> {
        let mut hist = vec![Stat::default(); *self.bins.offsets.last().expect("offsets")];
        let features = self.bins.upper.len();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(features);
        if rows.len() < 20_000 || threads < 2 {
            for j in 0..features {
                self.fill(j, rows, &mut hist[self.bins.offsets[j]..self.bins.offsets[j + 1]]);
            }
            return hist;
        }
        // Features are independent: split them over threads.
        let mut parts: Vec<(usize, &mut [Stat])> = Vec::new();
        let mut rest = hist.as_mut_slice();
        for j in 0..features {
            let (part, tail) = rest.split_at_mut(self.bins.offsets[j + 1] - self.bins.offsets[j]);
            parts.push((j, part));
            rest = tail;
        }
        let per = features.div_ceil(threads);
        std::thread::scope(|s| {
            let mut parts = parts.into_iter();
            for _ in 0..threads {
                let chunk: Vec<_> = parts.by_ref().take(per).collect();
                s.spawn(move || {
                    for (j, part) in chunk {
                        self.fill(j, rows, part);
                    }
                });
            }
        });
        hist
    }

    fn fill(&self, feature: usize, rows: &[u32], part: &mut [Stat]) {
        let col = self.bins.column(feature);
        for &r in rows {
            let s = &mut part[col[r as usize] as usize];
            s.g += self.grad[r as usize];
            s.h += self.hess[r as usize];
            s.n += 1;
        }
    }

    fn value(&self, s: Stat) -> f64 {
        -s.g / (s.h + self.params.l2) * self.params.learning_rate
    }

    fn score(&self, s: Stat) -> f64 {
        s.g * s.g / (s.h + self.params.l2)
    }

    fn best_split(&self, hist: &[Stat], total: Stat) -> Option<Split> {
        let min_n = self.params.min_samples_leaf as u32;
        let parent = self.score(total);
        let mut best: Option<Split> = None;
        for j in 0..self.bins.upper.len() {
            let h = &hist[self.bins.offsets[j]..self.bins.offsets[j + 1]];
            let missing = h[0];
            let mut left = Stat::default();
            // The last bin cannot be a threshold: everything would go left.
            for (b, bin) in h.iter().enumerate().take(h.len() - 1).skip(1) {
                left.add(*bin);
                for missing_left in [false, true] {
                    if missing_left && missing.n == 0 {
                        continue;
                    }
                    let mut l = left;
                    if missing_left {
                        l.add(missing);
                    }
                    let r = total.minus(l);
                    if l.n < min_n || r.n < min_n || l.h < 1e-6 || r.h < 1e-6 {
                        continue;
                    }
                    let gain = self.score(l) + self.score(r) - parent;
                    if gain > best.as_ref().map_or(1e-12, |s| s.gain) {
                        best = Some(Split { feature: j, bin: b as u8, missing_left, gain });
                    }
                }
            }
        }
        best
    }

    fn build(&self, rows: &mut [u32]) -> Tree {
        let mut nodes = Vec::new();
        let hist = self.histogram(rows);
        let total = hist[..self.bins.offsets[1]].iter().fold(Stat::default(), |mut a, s| {
            a.add(*s);
            a
        });
        self.grow(rows, hist, total, 0, &mut nodes);
        Tree { nodes }
    }

    /// Adds the subtree over `rows` to `nodes`; returns its index.
    fn grow(
        &self,
        rows: &mut [u32],
        hist: Vec<Stat>,
        total: Stat,
        depth: usize,
        nodes: &mut Vec<Node>,
    ) -> u32 {
        let id = nodes.len() as u32;
        nodes.push(Node {
            feature: LEAF,
            threshold: 0.0,
            missing_left: false,
            left: 0,
            right: 0,
            value: self.value(total),
            gain: 0.0,
        });
        if depth >= self.params.max_depth || total.n < 2 * self.params.min_samples_leaf as u32 {
            return id;
        }
        let Some(split) = self.best_split(&hist, total) else { return id };
        let col = self.bins.column(split.feature);
        let goes_left = |r: u32| {
            let b = col[r as usize];
            if b == 0 { split.missing_left } else { b <= split.bin }
        };
        // Stable partition keeps rows ascending (cache-friendly histograms).
        let (left_rows, right_rows): (Vec<u32>, Vec<u32>) = rows.iter().partition(|&&r| goes_left(r));
        let n_left = left_rows.len();
        rows[..n_left].copy_from_slice(&left_rows);
        rows[n_left..].copy_from_slice(&right_rows);
        let (lrows, rrows) = rows.split_at_mut(n_left);
        let (small_is_left, small) =
            if lrows.len() <= rrows.len() { (true, &*lrows) } else { (false, &*rrows) };
        let small_hist = self.histogram(small);
        let large_hist: Vec<Stat> = hist.iter().zip(&small_hist).map(|(p, s)| p.minus(*s)).collect();
        let (lhist, rhist) = if small_is_left { (small_hist, large_hist) } else { (large_hist, small_hist) };
        let sum = |h: &[Stat]| {
            h[..self.bins.offsets[1]].iter().fold(Stat::default(), |mut a, s| {
                a.add(*s);
                a
            })
        };
        let (ltotal, rtotal) = (sum(&lhist), sum(&rhist));
        drop(hist);
        let left = self.grow(lrows, lhist, ltotal, depth + 1, nodes);
        let right = self.grow(rrows, rhist, rtotal, depth + 1, nodes);
        let node = &mut nodes[id as usize];
        node.feature = split.feature as u32;
        node.threshold = self.bins.upper(split.feature, split.bin);
        node.missing_left = split.missing_left;
        node.left = left;
        node.right = right;
        node.gain = split.gain;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::roc_auc;

    /// y depends on an interaction (x0 high AND x1 low) that a linear model
    /// cannot express, plus x2 missing means "likely positive".
    fn interaction(n: usize, seed: u64) -> TrainingSet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut x = Array2::zeros((n, 3));
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let (a, b): (f64, f64) = (rng.r#gen(), rng.r#gen());
            let missing = rng.gen_bool(0.1);
            x[[i, 0]] = a;
            x[[i, 1]] = b;
            x[[i, 2]] = if missing { f64::NAN } else { rng.r#gen() };
            let p = if (a > 0.5 && b < 0.5) || missing { 0.85 } else { 0.1 };
            y.push(rng.gen_bool(p));
        }
        TrainingSet {
            ids: (0..n).map(|i| i.to_string()).collect(),
            feature_names: vec!["x0".into(), "x1".into(), "x2".into()],
            x,
            y,
        }
    }

    #[test]
    fn learns_an_interaction_and_missingness_that_logistic_regression_cannot() {
        let (train, valid) = (interaction(20_000, 1), interaction(5_000, 2));
        let gbm = GbmParams::default().fit(&train).unwrap();
        let auc = roc_auc(&valid.y, &gbm.predict_proba(&valid.x));
        let logistic = crate::ChurnModel::params().fit(&train).unwrap();
        let auc_lr = roc_auc(&valid.y, &logistic.predict_proba(&valid.x));
        // The Bayes-optimal AUC here is about 0.86.
        assert!(auc > 0.84 && auc > auc_lr + 0.03, "gbm {auc:.4}, logistic {auc_lr:.4}");
        assert!(gbm.trees.len() < gbm.trees_trained || gbm.trees_trained == 500);
        // x2 matters only through missingness, still it is used.
        assert!(gbm.importance[2] > 0.05, "{:?}", gbm.importance);
        assert!((gbm.importance.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn contributions_add_up_to_the_log_odds() {
        let set = interaction(5_000, 3);
        let gbm =
            GbmParams { n_trees: 30, early_stopping_rounds: 0, ..GbmParams::default() }.fit(&set).unwrap();
        assert_eq!(gbm.trees.len(), 30);
        let p = gbm.predict_proba(&set.x);
        let c = gbm.contributions(&set.x);
        for (i, row) in c.rows().into_iter().enumerate() {
            let log_odds = (p[i] / (1.0 - p[i])).ln();
            assert!((row.sum() + gbm.expected_log_odds() - log_odds).abs() < 1e-9, "row {i}");
        }
        // A row in the risky corner: x0 and x1 push up.
        let risky = (0..set.y.len())
            .find(|&i| set.x[[i, 0]] > 0.8 && set.x[[i, 1]] < 0.2 && set.x[[i, 2]].is_finite());
        let r = risky.unwrap();
        assert!(c[[r, 0]] > 0.0 && c[[r, 1]] > 0.0, "{:?}", c.row(r));
    }

    #[test]
    fn binned_and_raw_predictions_agree_and_fits_are_deterministic() {
        let set = interaction(3_000, 4);
        let params =
            GbmParams { n_trees: 10, early_stopping_rounds: 0, subsample: 0.7, ..GbmParams::default() };
        let a = params.fit(&set).unwrap();
        assert_eq!(a, params.fit(&set).unwrap());
        let rows: Vec<usize> = (0..set.y.len()).collect();
        let bins = Binned::new(&set.x, &rows, 255);
        for tree in &a.trees {
            for i in (0..set.y.len()).step_by(7) {
                let raw = tree.predict_row(set.x.row(i).as_slice().unwrap());
                assert_eq!(raw, tree.predict_binned(&bins, i), "row {i}");
            }
        }
    }

    #[test]
    fn positive_weight_shifts_probabilities_to_the_weighted_odds_and_keeps_the_ranking() {
        let (train, valid) = (interaction(20_000, 1), interaction(5_000, 2));
        let plain = GbmParams::default().fit(&train).unwrap();
        let weighted = GbmParams { positive_weight: 3.0, ..GbmParams::default() }.fit(&train).unwrap();
        let (p, q) = (plain.predict_proba(&valid.x), weighted.predict_proba(&valid.x));
        // Weighting the positives by 3 multiplies the odds by about 3.
        let odds = |p: f64| p / (1.0 - p);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let ratio: Vec<f64> = p.iter().zip(&q).map(|(&a, &b)| (odds(b) / odds(a)).ln()).collect();
        assert!((mean(&ratio) - 3f64.ln()).abs() < 0.15, "mean log odds ratio {}", mean(&ratio));
        let (auc_plain, auc_weighted) = (roc_auc(&valid.y, &p), roc_auc(&valid.y, &q));
        assert!((auc_plain - auc_weighted).abs() < 0.01, "{auc_plain} {auc_weighted}");
        let err = GbmParams { positive_weight: 0.0, ..GbmParams::default() }.fit(&train).unwrap_err();
        assert!(matches!(err, ModelError::InvalidParam { name: "positive_weight", .. }), "{err}");
    }

    #[test]
    fn rejects_bad_params_and_one_class() {
        let set = interaction(500, 5);
        let err = GbmParams { max_bins: 300, ..GbmParams::default() }.fit(&set).unwrap_err();
        assert!(matches!(err, ModelError::InvalidParam { name: "max_bins", .. }), "{err}");
        let mut one = set.clone();
        one.y = vec![true; one.y.len()];
        assert!(matches!(GbmParams::default().fit(&one), Err(ModelError::Data(_))));
    }
}
