//! Model metrics. Conventions: `scores` rank risk (higher = more likely bad), `labels` are 1 = bad, 0 = good.
//! Every function returns `None` (or a neutral value) instead of panicking on degenerate input
//! (empty, one class only, length mismatch, non-finite scores).

use serde::{Deserialize, Serialize};

fn valid(scores: &[f64], labels: &[u8]) -> Option<(usize, usize)> {
    if scores.len() != labels.len() || scores.is_empty() || scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let n_pos = labels.iter().filter(|&&l| l == 1).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    Some((n_pos, n_neg))
}

/// Indices sorted by score ascending (stable; NaN-free input is guaranteed by `valid`).
fn order_ascending(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    idx
}

/// Area under the ROC curve with ties counted as 1/2 (Mann–Whitney U with average ranks;
/// equal to the trapezoidal ROC area and to scikit-learn's `roc_auc_score`).
pub fn auc(scores: &[f64], labels: &[u8]) -> Option<f64> {
    let (n_pos, n_neg) = valid(scores, labels)?;
    let idx = order_ascending(scores);
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // ranks i+1 ..= j+1 share the average rank
        let avg_rank = (i + 1 + j + 1) as f64 / 2.0;
        let pos_in_group = idx[i..=j].iter().filter(|&&k| labels[k] == 1).count();
        rank_sum_pos += avg_rank * pos_in_group as f64;
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos as f64) * (n_pos as f64 + 1.0) / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Kolmogorov–Smirnov statistic: max |TPR − FPR| over the ROC thresholds (ties form one threshold).
pub fn ks(scores: &[f64], labels: &[u8]) -> Option<f64> {
    let (n_pos, n_neg) = valid(scores, labels)?;
    let mut idx = order_ascending(scores);
    idx.reverse(); // descending: threshold sweeps from the riskiest score down
    let (mut tp, mut fp, mut best) = (0usize, 0usize, 0.0f64);
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] == 1 {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        let d = (tp as f64 / n_pos as f64 - fp as f64 / n_neg as f64).abs();
        if d > best {
            best = d;
        }
    }
    Some(best)
}

/// Gini = 2·AUC − 1.
pub fn gini(scores: &[f64], labels: &[u8]) -> Option<f64> {
    auc(scores, labels).map(|a| 2.0 * a - 1.0)
}

const EPS: f64 = 1e-15;

/// Mean binary cross-entropy of probabilities of bad (clipped to [1e-15, 1 − 1e-15], like scikit-learn).
pub fn log_loss(pd: &[f64], labels: &[u8]) -> Option<f64> {
    if pd.len() != labels.len() || pd.is_empty() || pd.iter().any(|p| !p.is_finite()) {
        return None;
    }
    let s: f64 = pd
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = p.clamp(EPS, 1.0 - EPS);
            if y == 1 {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Some(s / pd.len() as f64)
}

/// Brier score: mean squared error of the probability of bad.
pub fn brier(pd: &[f64], labels: &[u8]) -> Option<f64> {
    if pd.len() != labels.len() || pd.is_empty() || pd.iter().any(|p| !p.is_finite()) {
        return None;
    }
    let s: f64 = pd
        .iter()
        .zip(labels)
        .map(|(&p, &y)| (p - y as f64).powi(2))
        .sum();
    Some(s / pd.len() as f64)
}

/// Share of `values` per bin. `edges` are the inner cut points, sorted ascending; bin k holds
/// values v with edges[k-1] <= v < edges[k] (so there are edges.len() + 1 bins). Non-finite
/// values are ignored. Empty input gives all-zero shares.
pub fn bin_shares(values: &[f64], edges: &[f64]) -> Vec<f64> {
    let mut counts = vec![0usize; edges.len() + 1];
    let mut n = 0usize;
    for &v in values.iter().filter(|v| v.is_finite()) {
        counts[edges.partition_point(|&e| e <= v)] += 1;
        n += 1;
    }
    counts
        .iter()
        .map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 })
        .collect()
}

/// Population stability index between two share vectors over the same bins:
/// Σ (a − e)·ln(a / e), with each share floored at 1e-4 so that empty bins stay finite.
pub fn psi_from_shares(expected: &[f64], actual: &[f64]) -> Option<f64> {
    if expected.len() != actual.len() || expected.is_empty() {
        return None;
    }
    let floor = 1e-4;
    Some(
        expected
            .iter()
            .zip(actual)
            .map(|(&e, &a)| {
                let (e, a) = (e.max(floor), a.max(floor));
                (a - e) * (a / e).ln()
            })
            .sum(),
    )
}

/// PSI between two score samples over fixed bins (see [`bin_shares`]).
pub fn psi(expected: &[f64], actual: &[f64], edges: &[f64]) -> Option<f64> {
    psi_from_shares(&bin_shares(expected, edges), &bin_shares(actual, edges))
}

/// Fixed score bins for PSI on the 350–950 scale: 350, 400, …, 900 as inner cut points.
pub fn score_psi_edges() -> Vec<f64> {
    (1..12).map(|k| 350.0 + 50.0 * k as f64).collect()
}

/// The usual summary of a binary scorer on one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub n_bad: usize,
    pub auc: f64,
    pub ks: f64,
    pub gini: f64,
    pub log_loss: f64,
    pub brier: f64,
}

/// Summarise probabilities of bad against labels; `None` when a metric is undefined (e.g. one class).
pub fn summarize(pd: &[f64], labels: &[u8]) -> Option<Summary> {
    let auc = auc(pd, labels)?;
    Some(Summary {
        n: labels.len(),
        n_bad: labels.iter().filter(|&&l| l == 1).count(),
        auc,
        ks: ks(pd, labels)?,
        gini: 2.0 * auc - 1.0,
        log_loss: log_loss(pd, labels)?,
        brier: brier(pd, labels)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn auc_without_ties() {
        // pairs (pos, neg): pos {0.8, 0.4}, neg {0.6, 0.2}: 0.8>0.6,0.8>0.2,0.4<0.6,0.4>0.2 → 3/4
        let s = [0.8, 0.6, 0.4, 0.2];
        let y = [1, 0, 1, 0];
        assert!(close(auc(&s, &y).unwrap(), 0.75));
        assert!(close(gini(&s, &y).unwrap(), 0.5));
    }

    #[test]
    fn auc_with_ties_matches_sklearn() {
        // sklearn.metrics.roc_auc_score([0,0,1,1,1,0],[0.1,0.5,0.5,0.9,0.5,0.2]) = 0.8888...
        // pos {0.5,0.9,0.5} vs neg {0.1,0.5,0.2}: 0.5 beats 0.1,0.2, ties 0.5 → 2.5 each; 0.9 → 3 ⇒ 8/9
        let s = [0.1, 0.5, 0.5, 0.9, 0.5, 0.2];
        let y = [0, 0, 1, 1, 1, 0];
        assert!(close(auc(&s, &y).unwrap(), 8.0 / 9.0));
        // all scores equal → 0.5
        assert!(close(auc(&[0.3; 4], &[0, 1, 0, 1]).unwrap(), 0.5));
        // perfectly inverted → 0
        assert!(close(auc(&[0.9, 0.1], &[0, 1]).unwrap(), 0.0));
    }

    #[test]
    fn degenerate_inputs_give_none() {
        assert_eq!(auc(&[], &[]), None);
        assert_eq!(auc(&[0.1, 0.2], &[1, 1]), None);
        assert_eq!(auc(&[0.1], &[1, 0]), None);
        assert_eq!(auc(&[f64::NAN, 0.2], &[1, 0]), None);
        assert_eq!(ks(&[0.1, 0.2], &[0, 0]), None);
        assert_eq!(log_loss(&[], &[]), None);
        assert_eq!(summarize(&[0.5], &[1]), None);
    }

    #[test]
    fn ks_hand_computed() {
        // descending: 0.9(1) 0.8(0) 0.7(1) 0.6(1) 0.3(0) 0.2(0); P=3, N=3
        // after 0.9: 1/3-0; 0.8: 1/3-1/3; 0.7: 2/3-1/3; 0.6: 1-1/3 = 2/3; ...
        let s = [0.9, 0.8, 0.7, 0.6, 0.3, 0.2];
        let y = [1, 0, 1, 1, 0, 0];
        assert!(close(ks(&s, &y).unwrap(), 2.0 / 3.0));
        // ties treated as one threshold: {0.5: 1,0} can't be split
        let s = [0.5, 0.5, 0.1];
        let y = [1, 0, 0];
        // after 0.5 group: tpr 1, fpr 1/2 → 0.5
        assert!(close(ks(&s, &y).unwrap(), 0.5));
    }

    #[test]
    fn log_loss_and_brier() {
        let p = [0.8, 0.3];
        let y = [1, 0];
        let ll = -(0.8f64.ln() + 0.7f64.ln()) / 2.0;
        assert!(close(log_loss(&p, &y).unwrap(), ll));
        assert!(close(brier(&p, &y).unwrap(), (0.04 + 0.09) / 2.0));
        // clipping keeps the loss finite
        assert!(log_loss(&[0.0], &[1]).unwrap().is_finite());
    }

    #[test]
    fn psi_hand_computed() {
        let e = [0.5, 0.5];
        let a = [0.25, 0.75];
        let want = (0.25 - 0.5) * (0.5f64).ln() + (0.75 - 0.5) * (1.5f64).ln();
        assert!(close(psi_from_shares(&e, &a).unwrap(), want));
        assert!(close(psi_from_shares(&e, &e).unwrap(), 0.0));
        // samples over edges [10]: expected {5, 15} → [0.5,0.5]; actual {5, 15, 20, 30} → [0.25, 0.75]
        assert!(close(
            psi(&[5.0, 15.0], &[5.0, 15.0, 20.0, 30.0], &[10.0]).unwrap(),
            want
        ));
        assert_eq!(bin_shares(&[10.0], &[10.0]), vec![0.0, 1.0]);
        assert!(psi(&[], &[1.0], &[10.0]).unwrap().is_finite());
    }
}
