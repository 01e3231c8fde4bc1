//! Seeded, stratified train/validation splits.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Splits row indices into (train, validation) so that each class keeps its
/// share in both parts. `valid_share` of each class (rounded, at least one
/// row when the class has two or more) goes to validation. The same labels
/// and seed always give the same split.
pub fn stratified_split(y: &[bool], valid_share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let classes: Vec<u32> = y.iter().map(|&v| v as u32).collect();
    stratified_split_by(&classes, valid_share, seed)
}

/// [`stratified_split`] over any number of classes (e.g. treatment arm and
/// label together): each class, in ascending order, gives `valid_share` of
/// its rows to validation.
pub fn stratified_split_by(classes: &[u32], valid_share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut train = Vec::with_capacity(classes.len());
    let mut valid = Vec::new();
    let mut distinct: Vec<u32> = classes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for class in distinct {
        let mut idx: Vec<usize> = (0..classes.len()).filter(|&i| classes[i] == class).collect();
        idx.shuffle(&mut rng);
        let mut k = (idx.len() as f64 * valid_share).round() as usize;
        if idx.len() >= 2 {
            k = k.clamp(1, idx.len() - 1);
        } else {
            k = 0;
        }
        valid.extend_from_slice(&idx[..k]);
        train.extend_from_slice(&idx[k..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    (train, valid)
}

/// Assigns each row to one of `k` folds so that each class is spread
/// evenly (shuffled with `seed`, then dealt round-robin). Returns the fold
/// of each row.
pub fn stratified_folds(y: &[bool], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold = vec![0; y.len()];
    let mut next = 0;
    for class in [false, true] {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == class).collect();
        idx.shuffle(&mut rng);
        for i in idx {
            fold[i] = next % k;
            next += 1;
        }
    }
    fold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_class_shares_and_is_deterministic() {
        let y: Vec<bool> = (0..1000).map(|i| i % 10 == 0).collect(); // 100 positives
        let (train, valid) = stratified_split(&y, 0.2, 7);
        assert_eq!(train.len() + valid.len(), 1000);
        assert_eq!(valid.iter().filter(|&&i| y[i]).count(), 20);
        assert_eq!(valid.len(), 200);
        assert_eq!(stratified_split(&y, 0.2, 7), (train.clone(), valid.clone()));
        assert_ne!(stratified_split(&y, 0.2, 8).1, valid);
        let mut all: Vec<usize> = train.into_iter().chain(valid).collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn folds_spread_each_class_evenly() {
        let y: Vec<bool> = (0..1000).map(|i| i % 10 == 0).collect();
        let folds = stratified_folds(&y, 5, 1);
        for f in 0..5 {
            let rows: Vec<usize> = (0..1000).filter(|&i| folds[i] == f).collect();
            assert_eq!(rows.len(), 200);
            assert_eq!(rows.iter().filter(|&&i| y[i]).count(), 20);
        }
        assert_eq!(folds, stratified_folds(&y, 5, 1));
    }
}
