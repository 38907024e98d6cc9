//! Challenger: a random forest of linfa-trees decision trees on the scorecard's features.
//!
//! Encoding: numeric features enter raw (missing → −1e300, so a tree can split it off);
//! categorical features enter as the WoE of their scorecard bin. Each tree is fitted by linfa on
//! a seeded bootstrap sample and a random subset of the features, then exported into a plain
//! node table (left branch when x < threshold, as in linfa); a leaf's value is the smoothed bad
//! rate of the in-bag rows that reach it. PD = mean leaf value over the trees. Deterministic for a
//! given seed up to linfa-trees' own tie-breaking between equally good splits, which goes through a
//! HashMap and can differ between runs (the scorecard itself is bit-reproducible). Saved as
//! `challenger.json`.

use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality, TreeNode};
use ndarray::{Array1, Array2};
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
            k = if v < n.threshold { n.left } else { n.right };
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

fn export(node: &TreeNode<f64, usize>, map: &[usize], nodes: &mut Vec<Node>) -> usize {
    let me = nodes.len();
    nodes.push(Node {
        feature: 0,
        threshold: 0.0,
        left: 0,
        right: 0,
        leaf: true,
        value: 0.0,
    });
    let ch = node.children();
    if let (false, Some(Some(l)), Some(Some(r))) =
        (node.is_leaf(), ch.first().copied(), ch.get(1).copied())
    {
        let (f, thr, _) = node.split();
        let li = export(l, map, nodes);
        let ri = export(r, map, nodes);
        nodes[me] = Node {
            feature: map.get(f).copied().unwrap_or(0),
            threshold: thr,
            left: li,
            right: ri,
            leaf: false,
            value: 0.0,
        };
    }
    me
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
        let grow = |(rows, feats): (Vec<usize>, Vec<usize>)| -> Result<Tree, ModelError> {
            let xm = Array2::from_shape_fn((rows.len(), k), |(i, j)| x[rows[i]][feats[j]]);
            let y: Array1<usize> = rows.iter().map(|&i| usize::from(target[i] == 1)).collect();
            let tree = DecisionTree::params()
                .split_quality(SplitQuality::Gini)
                .max_depth(Some(cfg.max_depth))
                .min_weight_leaf(cfg.min_leaf)
                .min_weight_split(2.0 * cfg.min_leaf)
                .fit(&linfa::Dataset::new(xm, y))
                .map_err(|e| ModelError::Fit(format!("decision tree: {e}")))?;
            let mut nodes = Vec::new();
            export(tree.root_node(), &feats, &mut nodes);
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
