//! Challenger: a random forest of CART trees on the scorecard's features.
//!
//! Encoding: numeric features enter raw (missing → −1e300, so a tree can split it off);
//! categorical features enter as the WoE of their scorecard bin. Each tree is grown on a seeded
//! bootstrap sample and a random subset of the features ([`grow_tree`]) into a plain node table
//! (left branch when x <= threshold); a leaf's value is the smoothed bad rate of the in-bag rows
//! that reach it. PD = mean leaf value over the trees. Bit-reproducible for a given seed, like
//! the scorecard. Saved as `challenger.json`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::domain::{ColumnValues, Dataset, FeatureValue};

use super::binning::{BinRule, FeatureBinning};
use super::ModelError;

pub const CHALLENGER_FILE: &str = "challenger.json";
const MISSING: f64 = -1e300;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChallengerConfig {
    pub n_trees: usize,
    pub max_depth: usize,
    pub min_leaf: f32,
    pub feature_fraction: f64,
    pub seed: u64,
    /// Rows drawn (with replacement) per tree: min(training rows, this). Bounds the cost and
    /// memory of each tree on large tables; below the cap every tree sees a full-size bootstrap.
    #[serde(default = "default_max_rows_per_tree")]
    pub max_rows_per_tree: usize,
}

fn default_max_rows_per_tree() -> usize {
    100_000
}

impl Default for ChallengerConfig {
    fn default() -> Self {
        ChallengerConfig {
            n_trees: 60,
            max_depth: 8,
            min_leaf: 40.0,
            feature_fraction: 0.7,
            seed: 20240601,
            max_rows_per_tree: default_max_rows_per_tree(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Feature index (into `Forest::features`); unused for leaves.
    pub feature: usize,
    pub threshold: f64,
    /// Child indices; both 0 for a leaf.
    pub left: usize,
    pub right: usize,
    pub leaf: bool,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    fn leaf_of(&self, x: &[f64]) -> usize {
        let mut k = 0;
        // depth is bounded by the node count; guard against malformed tables
        for _ in 0..=self.nodes.len() {
            let Some(n) = self.nodes.get(k) else { return 0 };
            if n.leaf {
                return k;
            }
            let v = x.get(n.feature).copied().unwrap_or(MISSING);
            // As the tree was grown: a value at the cut goes left.
            k = if v <= n.threshold { n.left } else { n.right };
        }
        0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Encoder {
    Raw,
    Woe(FeatureBinning),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub features: Vec<String>,
    pub encoders: Vec<Encoder>,
    pub trees: Vec<Tree>,
}

/// How far a tree grows (the parameters of linfa-trees' `DecisionTreeParams` of the same names).
struct TreeLimits {
    max_depth: usize,
    /// Rows each side of a split must keep.
    min_weight_leaf: f32,
    /// Rows a node needs to be split at all.
    min_weight_split: f32,
}

/// A split must lower the Gini impurity by at least this much (linfa-trees' default).
const MIN_IMPURITY_DECREASE: f64 = 1e-5;
/// Neighbouring values closer than this stay on one side of a split (as in linfa-trees).
const SAME_VALUE: f64 = 1e-5;

/// Gini impurity of a node holding `good` and `bad` rows (f32, as linfa-trees computes it).
fn gini(good: f32, bad: f32) -> f32 {
    let n = good + bad;
    let (g, b) = (good / n, bad / n);
    1.0 - (g * g + b * b)
}

/// One CART tree on a binary target, as a node table in preorder (a node, its left subtree, its
/// right subtree). `sample` holds one row per bootstrap draw, its columns the features `feats`
/// (indices into the forest's features, which the nodes record); `bad` is each row's target.
///
/// Grown the way linfa-trees 0.8 grows a Gini tree (presorted columns, every cut between two
/// distinct values tried, the first best cut kept, the row at exactly the cut goes left), with
/// two differences, and they are why this is written here rather than taken from linfa-trees:
/// linfa-trees prunes every finished tree by merging sibling leaves that predict the same
/// majority class, which throws away what a probability forest is for (a leaf at 10 % bad and
/// one at 45 % bad both predict "good"); and it breaks a tie in that majority through a
/// `HashMap`'s random order, so one seed grew different forests from run to run. Its trees have
/// no option to keep the unpruned tree.
fn grow_tree(sample: &[Vec<f64>], bad: &[bool], feats: &[usize], limits: &TreeLimits) -> Vec<Node> {
    let n = sample.len();
    // Each column's (row, value) pairs by value; a stable sort, so equal values keep row order.
    let sorted: Vec<Vec<(usize, f64)>> = (0..feats.len())
        .map(|j| {
            let mut column: Vec<(usize, f64)> =
                sample.iter().enumerate().map(|(i, r)| (i, r[j])).collect();
            column.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Greater));
            column
        })
        .collect();
    let grower = Grower {
        sample,
        bad,
        feats,
        limits,
        sorted,
    };
    let mut nodes = Vec::new();
    if n > 0 {
        grower.grow(&vec![true; n], 0, &mut nodes);
    }
    nodes
}

struct Grower<'a> {
    sample: &'a [Vec<f64>],
    bad: &'a [bool],
    feats: &'a [usize],
    limits: &'a TreeLimits,
    sorted: Vec<Vec<(usize, f64)>>,
}

impl Grower<'_> {
    /// Appends the subtree of the rows in `mask` to `nodes`; returns its index.
    fn grow(&self, mask: &[bool], depth: usize, nodes: &mut Vec<Node>) -> usize {
        let me = nodes.len();
        nodes.push(Node {
            feature: 0,
            threshold: 0.0,
            left: 0,
            right: 0,
            leaf: true,
            value: 0.0,
        });
        let (mut good, mut bad) = (0.0f32, 0.0f32);
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            if self.bad[i] {
                bad += 1.0;
            } else {
                good += 1.0;
            }
        }
        if good + bad < self.limits.min_weight_split || depth >= self.limits.max_depth {
            return me;
        }
        let Some((column, cut, score)) = self.best_cut(mask, good, bad) else {
            return me;
        };
        if f64::from(gini(good, bad)) - f64::from(score) < MIN_IMPURITY_DECREASE {
            return me;
        }
        let mut left = vec![false; mask.len()];
        let mut right = vec![false; mask.len()];
        let (mut any_left, mut any_right) = (false, false);
        for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
            if self.sample[i][column] <= cut {
                left[i] = true;
                any_left = true;
            } else {
                right[i] = true;
                any_right = true;
            }
        }
        // A cut that leaves one side empty makes this node a leaf (linfa-trees keeps such a node
        // as a leaf too).
        if !any_left || !any_right {
            return me;
        }
        let l = self.grow(&left, depth + 1, nodes);
        let r = self.grow(&right, depth + 1, nodes);
        nodes[me] = Node {
            feature: self.feats[column],
            threshold: cut,
            left: l,
            right: r,
            leaf: false,
            value: 0.0,
        };
        me
    }

    /// The cut with the lowest weighted Gini impurity over every column: (column, value, score).
    /// Rows move to the left side one at a time in value order; ties keep the first cut found.
    fn best_cut(&self, mask: &[bool], good: f32, bad: f32) -> Option<(usize, f64, f32)> {
        let total = good + bad;
        let mut best: Option<(usize, f64, f32)> = None;
        for (column, sorted) in self.sorted.iter().enumerate() {
            let (mut right_good, mut right_bad) = (good, bad);
            let (mut left_good, mut left_bad) = (0.0f32, 0.0f32);
            let (mut right_weight, mut left_weight) = (total, 0.0f32);
            for k in 0..sorted.len().saturating_sub(1) {
                let (row, value) = sorted[k];
                if !mask[row] {
                    continue;
                }
                if self.bad[row] {
                    right_bad -= 1.0;
                    left_bad += 1.0;
                } else {
                    right_good -= 1.0;
                    left_good += 1.0;
                }
                right_weight -= 1.0;
                left_weight += 1.0;
                let next = sorted[k + 1].1;
                if (value - next).abs() < SAME_VALUE {
                    continue;
                }
                if right_weight < self.limits.min_weight_leaf
                    || left_weight < self.limits.min_weight_leaf
                {
                    continue;
                }
                let w = right_weight / total;
                let score = w * gini(right_good, right_bad) + (1.0 - w) * gini(left_good, left_bad);
                if best.is_none_or(|(_, _, b)| score < b) {
                    best = Some((column, (value + next) / 2.0, score));
                }
            }
        }
        best
    }
}

impl Forest {
    fn encode(&self, j: usize, v: &FeatureValue) -> f64 {
        match self.encoders.get(j) {
            Some(Encoder::Woe(b)) => b.bins.get(b.bin_index(v)).map(|x| x.woe).unwrap_or(0.0),
            _ => match v {
                FeatureValue::Num(x) if x.is_finite() => *x,
                FeatureValue::Cat(s) => s
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .unwrap_or(MISSING),
                _ => MISSING,
            },
        }
    }

    fn matrix(&self, ds: &Dataset) -> Result<Vec<Vec<f64>>, ModelError> {
        let cols: Vec<&ColumnValues> = self
            .features
            .iter()
            .map(|n| {
                ds.column(n)
                    .map(|c| &c.values)
                    .ok_or_else(|| ModelError::MissingColumn(n.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok((0..ds.n_rows())
            .map(|i| {
                cols.iter()
                    .enumerate()
                    .map(|(j, c)| {
                        if i < c.len() {
                            self.encode(j, &c.value(i))
                        } else {
                            MISSING
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// Fit on `train` using the named columns; `binnings[j]` encodes column j when categorical.
    pub fn fit(
        train: &Dataset,
        names: &[String],
        binnings: &[FeatureBinning],
        cfg: &ChallengerConfig,
    ) -> Result<Forest, ModelError> {
        let target = train.target.as_deref().ok_or(ModelError::NoTarget)?;
        let encoders = binnings
            .iter()
            .map(|b| match b.rule {
                BinRule::Categorical { .. } => Encoder::Woe(b.clone()),
                BinRule::Numeric { .. } => Encoder::Raw,
            })
            .collect();
        let mut forest = Forest {
            features: names.to_vec(),
            encoders,
            trees: Vec::new(),
        };
        let x = forest.matrix(train)?;
        let n = x.len();
        let p = names.len();
        if n == 0 || p == 0 {
            return Err(ModelError::Empty);
        }
        let prior = target.iter().filter(|&&y| y == 1).count() as f64 / n as f64;
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let k = ((p as f64 * cfg.feature_fraction).ceil() as usize).clamp(1, p);
        let m = n.min(cfg.max_rows_per_tree.max(1));
        // draw every tree's rows and features first (one seeded stream, as before), then grow
        // the trees in parallel: the same samples whatever the thread count
        let plans: Vec<(Vec<usize>, Vec<usize>)> = (0..cfg.n_trees)
            .map(|_| {
                let rows: Vec<usize> = (0..m).map(|_| rng.random_range(0..n)).collect();
                let mut feats: Vec<usize> = (0..p).collect();
                // partial Fisher–Yates for a random subset of k features
                for i in 0..k {
                    let j = rng.random_range(i..p);
                    feats.swap(i, j);
                }
                feats.truncate(k);
                feats.sort();
                (rows, feats)
            })
            .collect();
        let limits = TreeLimits {
            max_depth: cfg.max_depth,
            min_weight_leaf: cfg.min_leaf,
            min_weight_split: 2.0 * cfg.min_leaf,
        };
        let grow = |(rows, feats): (Vec<usize>, Vec<usize>)| -> Result<Tree, ModelError> {
            let sample: Vec<Vec<f64>> = rows
                .iter()
                .map(|&i| feats.iter().map(|&j| x[i][j]).collect())
                .collect();
            let y: Vec<bool> = rows.iter().map(|&i| target[i] == 1).collect();
            let nodes = grow_tree(&sample, &y, &feats, &limits);
            let mut t = Tree { nodes };
            let mut counts = vec![(0.0f64, 0.0f64); t.nodes.len()];
            for &i in &rows {
                let l = t.leaf_of(&x[i]);
                counts[l].0 += 1.0;
                counts[l].1 += f64::from(target[i]);
            }
            for (node, (cnt, bad)) in t.nodes.iter_mut().zip(counts) {
                node.value = (bad + 2.0 * prior) / (cnt + 2.0);
            }
            Ok(t)
        };
        forest.trees = plans
            .into_par_iter()
            .map(grow)
            .collect::<Result<Vec<Tree>, ModelError>>()?;
        Ok(forest)
    }

    /// PD for values in the order of `features`.
    pub fn predict_row(&self, values: &[FeatureValue]) -> f64 {
        let x: Vec<f64> = (0..self.features.len())
            .map(|j| self.encode(j, values.get(j).unwrap_or(&FeatureValue::Missing)))
            .collect();
        self.predict_encoded(&x)
    }

    fn predict_encoded(&self, x: &[f64]) -> f64 {
        if self.trees.is_empty() {
            return 0.5;
        }
        let s: f64 = self
            .trees
            .iter()
            .map(|t| t.nodes.get(t.leaf_of(x)).map(|n| n.value).unwrap_or(0.5))
            .sum();
        s / self.trees.len() as f64
    }

    pub fn predict_dataset(&self, ds: &Dataset) -> Result<Vec<f64>, ModelError> {
        Ok(self
            .matrix(ds)?
            .par_iter()
            .map(|x| self.predict_encoded(x))
            .collect())
    }

    pub fn to_json(&self) -> Result<String, ModelError> {
        serde_json::to_string(self)
            .map_err(|e| ModelError::Fit(format!("serialising the challenger: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Dimension, FeatureColumn, FeatureMeta};

    fn limits(min_leaf: f32) -> TreeLimits {
        TreeLimits {
            max_depth: 4,
            min_weight_leaf: min_leaf,
            min_weight_split: 2.0 * min_leaf,
        }
    }

    #[test]
    fn a_clean_cut_is_found_between_the_two_values_and_its_leaves_stop() {
        // x = 0..100, bad from 60 on: one cut at 59.5, two pure leaves.
        let sample: Vec<Vec<f64>> = (0..100).map(|i| vec![f64::from(i)]).collect();
        let bad: Vec<bool> = (0..100).map(|i| i >= 60).collect();
        let nodes = grow_tree(&sample, &bad, &[3], &limits(5.0));
        assert_eq!(nodes.len(), 3, "{nodes:?}");
        assert!(!nodes[0].leaf);
        assert_eq!(nodes[0].feature, 3, "the forest's index of the column");
        assert_eq!(nodes[0].threshold, 59.5);
        assert!(nodes[nodes[0].left].leaf && nodes[nodes[0].right].leaf);
        let tree = Tree { nodes };
        assert_eq!(tree.leaf_of(&[0.0, 0.0, 0.0, 59.0]), 1);
        assert_eq!(
            tree.leaf_of(&[0.0, 0.0, 0.0, 59.5]),
            1,
            "at the cut: left, as grown"
        );
        assert_eq!(tree.leaf_of(&[0.0, 0.0, 0.0, 60.0]), 2);
    }

    #[test]
    fn leaves_with_the_same_majority_but_different_bad_rates_are_kept_apart() {
        // 10 % bad below 100, 40 % bad from 100 on: "good" is the majority on both sides, so a
        // tree pruned by majority class (linfa-trees) collapses to one leaf. A PD forest must not.
        let sample: Vec<Vec<f64>> = (0..200).map(|i| vec![f64::from(i)]).collect();
        let bad: Vec<bool> = (0..200)
            .map(|i| if i < 100 { i % 10 == 0 } else { i % 10 < 4 })
            .collect();
        let nodes = grow_tree(&sample, &bad, &[0], &limits(20.0));
        assert!(!nodes[0].leaf, "{nodes:?}");
        let mut forest_rows = vec![0usize; nodes.len()];
        let tree = Tree { nodes };
        for row in &sample {
            forest_rows[tree.leaf_of(row)] += 1;
        }
        assert!(forest_rows.iter().filter(|&&n| n > 0).count() >= 2);
    }

    #[test]
    fn too_few_rows_or_no_gain_leave_a_single_leaf() {
        let sample: Vec<Vec<f64>> = (0..30).map(|i| vec![f64::from(i)]).collect();
        let bad: Vec<bool> = (0..30).map(|i| i >= 15).collect();
        // 30 rows < min_weight_split 40
        assert_eq!(grow_tree(&sample, &bad, &[0], &limits(20.0)).len(), 1);
        // every row bad: nothing to gain
        let all_bad = vec![true; 30];
        assert_eq!(grow_tree(&sample, &all_bad, &[0], &limits(5.0)).len(), 1);
        // one value only: no cut between distinct values
        let same: Vec<Vec<f64>> = vec![vec![1.0]; 30];
        assert_eq!(grow_tree(&same, &bad, &[0], &limits(5.0)).len(), 1);
        assert!(grow_tree(&[], &[], &[0], &limits(5.0)).is_empty());
    }

    #[test]
    fn the_same_seed_grows_the_same_forest() {
        // Many tied class counts (the case linfa-trees broke through a HashMap's order).
        let n = 400;
        let cols = ["a", "b", "c"];
        let columns = cols
            .iter()
            .enumerate()
            .map(|(j, name)| FeatureColumn {
                meta: FeatureMeta {
                    name: name.to_string(),
                    dimension: Dimension::Behavior,
                    description: String::new(),
                },
                values: ColumnValues::Numeric(
                    (0..n).map(|i| Some(((i * (j + 3)) % 17) as f64)).collect(),
                ),
            })
            .collect();
        let ds = Dataset {
            ids: (0..n).map(|i| i.to_string()).collect(),
            columns,
            target: Some((0..n).map(|i| u8::from(i % 2 == 0)).collect()),
        };
        let names: Vec<String> = cols.iter().map(|c| c.to_string()).collect();
        let binnings: Vec<FeatureBinning> = Vec::new();
        let cfg = ChallengerConfig {
            n_trees: 8,
            min_leaf: 5.0,
            ..Default::default()
        };
        let a = Forest::fit(&ds, &names, &binnings, &cfg).unwrap();
        let b = Forest::fit(&ds, &names, &binnings, &cfg).unwrap();
        assert_eq!(a.to_json().unwrap(), b.to_json().unwrap());
        assert!(a.trees.iter().any(|t| t.nodes.len() > 1));
    }
}
