//! The scorecard artifact (`scorecard.json`) and scoring.
//!
//! **Scaling** (points to double the odds): score = offset + factor·ln(odds_good), with
//! factor = PDO/ln 2 and offset = base_score − factor·ln(base_odds). Defaults: 650 points at
//! good:bad odds 19:1 (PD 5%), PDO 50 — a PD of 2.6% reaches 700 (excellent), 20% gives ~550,
//! 50% ~438, so typical PDs spread over the 350–950 scale.
//!
//! The linear predictor is z = intercept + Σ coef_j·WoE_j = ln(odds_bad) (coefficients are
//! negative since WoE = ln(good share/bad share)). **Points per bin**:
//! points_jb = −factor·coef_j·WoE_jb + (offset − factor·intercept)/n_features, so the sum of the
//! user's bin points equals offset − factor·z exactly. Points are stored unrounded; the **total**
//! is the unrounded sum rounded to the nearest integer (half away from zero) and then clamped to
//! 350–950. **PD** = 1/(1 + e^(−z)) from the same z (not clamped).
//!
//! **Dimension sub-scores**: for each dimension with at least one feature, its summed points are
//! mapped linearly from [min attainable, max attainable] (sum over its features of the lowest /
//! highest bin points) onto 350–950, rounded; a dimension whose points cannot vary scores 650.
//! Sub-scores are monotone in the total: raising any bin's points raises both.
//!
//! **Reason codes** (FICO method): per feature, points lost = highest bin points of that
//! feature − the user's bin points; the top 4 features with points lost > 0 are returned,
//! descending, ties broken by feature order. The code is the feature's stable code stored in
//! the artifact (`R01`, `R02`, … by feature position at training time).
//!
//! **Input handling in `score_row`** (never panics): values are taken in the order of
//! [`Scorecard::features`]; a missing trailing value is treated as missing and extra values are
//! ignored; non-finite numbers are missing; a text value for a numeric feature is parsed as a
//! number (missing if it does not parse); a number for a categorical feature is looked up by its
//! display form; unseen categories get the neutral `unseen` bin (WoE 0).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::{Band, Dataset, Dimension, FeatureMeta, FeatureValue, SCORE_MAX, SCORE_MIN};
use crate::eval::metrics::Summary;

use super::binning::{BinKind, BinRule, FeatureBinning};
use super::ModelError;

pub const SCHEMA_VERSION: u32 = 1;
pub const SCORECARD_FILE: &str = "scorecard.json";
pub const N_REASONS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub base_score: f64,
    /// Good:bad odds at the base score.
    pub base_odds: f64,
    /// Points to double the odds.
    pub pdo: f64,
    pub factor: f64,
    pub offset: f64,
}

impl Scaling {
    pub fn new(base_score: f64, base_odds: f64, pdo: f64) -> Result<Scaling, ModelError> {
        if !(base_score.is_finite()
            && base_odds.is_finite()
            && base_odds > 0.0
            && pdo.is_finite()
            && pdo > 0.0)
        {
            return Err(ModelError::Config(format!(
                "scaling needs finite base score, base odds > 0 and PDO > 0 (got {base_score}, {base_odds}, {pdo})"
            )));
        }
        let factor = pdo / std::f64::consts::LN_2;
        Ok(Scaling {
            base_score,
            base_odds,
            pdo,
            factor,
            offset: base_score - factor * base_odds.ln(),
        })
    }
    /// Unclamped, unrounded score of a log good:bad odds.
    pub fn score_of_log_odds(&self, ln_odds_good: f64) -> f64 {
        self.offset + self.factor * ln_odds_good
    }
}

impl Default for Scaling {
    fn default() -> Self {
        let factor = 50.0 / std::f64::consts::LN_2;
        Scaling {
            base_score: 650.0,
            base_odds: 19.0,
            pdo: 50.0,
            factor,
            offset: 650.0 - factor * 19f64.ln(),
        }
    }
}

/// Round half away from zero, then clamp to 350–950. NaN maps to the minimum.
pub fn clamp_score(raw: f64) -> i32 {
    if raw.is_nan() {
        return SCORE_MIN;
    }
    raw.round().clamp(SCORE_MIN as f64, SCORE_MAX as f64) as i32
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScorecardFeature {
    pub meta: FeatureMeta,
    /// Stable reason code of this feature.
    pub code: String,
    pub coefficient: f64,
    pub binning: FeatureBinning,
    /// Points per bin, parallel to `binning.bins`.
    pub points: Vec<f64>,
}

impl ScorecardFeature {
    fn max_points(&self) -> f64 {
        self.points
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
    fn min_points(&self) -> f64 {
        self.points.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandRow {
    pub band: Band,
    pub min: i32,
    pub max: i32,
}

pub fn band_table() -> Vec<BandRow> {
    Band::ALL
        .iter()
        .map(|&b| BandRow {
            band: b,
            min: b.range().0,
            max: b.range().1,
        })
        .collect()
}

/// Histogram of scores (shares over fixed bins, see `eval::metrics::bin_shares`) for PSI later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreDistribution {
    pub edges: Vec<f64>,
    pub shares: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetrics {
    pub train: Option<Summary>,
    pub test: Option<Summary>,
    pub train_score_distribution: ScoreDistribution,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChallengerSummary {
    pub kind: String,
    pub n_trees: usize,
    pub max_depth: usize,
    pub train: Option<Summary>,
    pub test: Option<Summary>,
}

/// What happened to each candidate feature during selection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    pub name: String,
    pub iv: f64,
    /// "selected", "low_iv", "correlated_with:<name>", "wrong_sign"
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub n_train: usize,
    pub n_test: usize,
    pub alpha: f64,
    /// (alpha, validation AUC) for the grid tried.
    pub alpha_grid: Vec<(f64, f64)>,
    pub candidates: Vec<CandidateReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scorecard {
    pub schema_version: u32,
    pub model_version: String,
    /// RFC 3339.
    pub created: String,
    /// Hash of the feature pipeline (`pipeline.toml` beside this file); set by the caller.
    pub pipeline_hash: Option<String>,
    /// sha256 of the training rows (hex).
    pub training_fingerprint: String,
    pub scaling: Scaling,
    pub intercept: f64,
    pub features: Vec<ScorecardFeature>,
    pub bands: Vec<BandRow>,
    pub metrics: ModelMetrics,
    pub training: TrainingInfo,
    pub challenger: Option<ChallengerSummary>,
    /// Derived from `features`; never stored.
    #[serde(skip)]
    pub(crate) point_ranges: PointRanges,
}

/// Each feature's lowest and highest points, and their sums per dimension (the ends of each
/// sub-score's scale): constants of the model that `score_with` used to fold on every call (a
/// third of its work). Built on first use and never serialized; a clone starts empty, so a copy
/// whose points are then changed cannot score with its original's constants.
#[derive(Default)]
pub(crate) struct PointRanges(std::sync::OnceLock<PointRangeTable>);

struct PointRangeTable {
    /// (lowest, highest) points of each feature, in feature order.
    features: Vec<(f64, f64)>,
    /// Per dimension: (sum of the lowest, sum of the highest), and whether any feature has it.
    dims: [(f64, f64); 5],
    present: [bool; 5],
}

impl Clone for PointRanges {
    fn clone(&self) -> Self {
        PointRanges::default()
    }
}

/// Derived from the fields compared beside it.
impl PartialEq for PointRanges {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for PointRanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PointRanges")
    }
}

impl PointRanges {
    fn of<'a>(&'a self, features: &[ScorecardFeature]) -> &'a PointRangeTable {
        self.0.get_or_init(|| {
            let mut table = PointRangeTable {
                features: Vec::with_capacity(features.len()),
                dims: [(0.0, 0.0); 5],
                present: [false; 5],
            };
            for f in features {
                let (lo, hi) = (f.min_points(), f.max_points());
                let d = dim_index(f.meta.dimension);
                table.features.push((lo, hi));
                table.dims[d].0 += lo;
                table.dims[d].1 += hi;
                table.present[d] = true;
            }
            table
        })
    }
}

/// Whether reasons carry their sentence. A partner reads it; a batch writes only the codes, and
/// formatting four sentences was a fifth of scoring a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonText {
    Write,
    Skip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub feature: String,
    pub dimension: Dimension,
    pub text: String,
    pub value: FeatureValue,
    pub points_lost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreResult {
    pub score: i32,
    pub band: Band,
    pub pd: f64,
    pub dimension_scores: Vec<(Dimension, i32)>,
    pub reasons: Vec<Reason>,
}

fn dim_index(d: Dimension) -> usize {
    match d {
        Dimension::Transaction => 0,
        Dimension::Behavior => 1,
        Dimension::Relationship => 2,
        Dimension::Identity => 3,
        Dimension::Capacity => 4,
    }
}

/// Points of every bin of a feature given the model parameters (see the module docs).
pub fn bin_points(
    coefficient: f64,
    woes: impl Iterator<Item = f64>,
    scaling: &Scaling,
    intercept: f64,
    n_features: usize,
) -> Vec<f64> {
    let share = (scaling.offset - scaling.factor * intercept) / n_features.max(1) as f64;
    woes.map(|w| -scaling.factor * coefficient * w + share)
        .collect()
}

impl Scorecard {
    /// The features in the order `score_row` expects.
    pub fn features(&self) -> Vec<FeatureMeta> {
        self.features.iter().map(|f| f.meta.clone()).collect()
    }

    /// Score one applicant (values in the order of [`Scorecard::features`]). Never panics.
    pub fn score_row(&self, values: &[FeatureValue]) -> ScoreResult {
        self.score_with(|j| values.get(j), ReasonText::Write)
    }

    /// [`Scorecard::score_row`] reading feature `j` through `value_of` (`None` = missing), so a
    /// caller holding a wider row (the pipeline's) scores it in place instead of copying it.
    pub fn score_with<'a>(
        &self,
        value_of: impl Fn(usize) -> Option<&'a FeatureValue>,
        text: ReasonText,
    ) -> ScoreResult {
        static MISSING: FeatureValue = FeatureValue::Missing;
        let ranges = self.point_ranges.of(&self.features);
        let mut z = self.intercept;
        let mut raw = 0.0;
        let mut dim_pts = [0.0f64; 5];
        // top reasons: (points lost, feature index, bin)
        let mut top: [(f64, usize, usize); N_REASONS] = [(0.0, usize::MAX, 0); N_REASONS];
        for ((j, f), &(_, hi)) in self.features.iter().enumerate().zip(&ranges.features) {
            let v = value_of(j).unwrap_or(&MISSING);
            let b = f.binning.bin_index(v).min(f.points.len().saturating_sub(1));
            let (woe, p) = match (f.binning.bins.get(b), f.points.get(b)) {
                (Some(bin), Some(&p)) => (bin.woe, p),
                _ => (0.0, 0.0), // unreachable for a validated artifact
            };
            z += f.coefficient * woe;
            raw += p;
            dim_pts[dim_index(f.meta.dimension)] += p;
            let lost = hi - p;
            if lost > 1e-9 {
                // insertion into the sorted top list; losses within 1e-9 count as ties, so the earlier feature stays first
                if let Some(pos) = top
                    .iter()
                    .position(|t| t.1 == usize::MAX || lost > t.0 + 1e-9)
                {
                    top[pos..].rotate_right(1);
                    top[pos] = (lost, j, b);
                }
            }
        }
        let score = clamp_score(raw);
        let pd = 1.0 / (1.0 + (-z).exp());
        let dimension_scores = Dimension::ALL
            .iter()
            .filter(|&&d| ranges.present[dim_index(d)])
            .map(|&d| {
                let k = dim_index(d);
                let (dim_min, dim_max) = ranges.dims[k];
                let span = dim_max - dim_min;
                let s = if span > 1e-12 {
                    SCORE_MIN as f64
                        + (SCORE_MAX - SCORE_MIN) as f64 * (dim_pts[k] - dim_min) / span
                } else {
                    (SCORE_MIN + SCORE_MAX) as f64 / 2.0
                };
                (d, clamp_score(s))
            })
            .collect();
        let reasons = top
            .iter()
            .filter(|t| t.1 != usize::MAX)
            .map(|&(lost, j, b)| {
                let f = &self.features[j];
                let v = value_of(j).unwrap_or(&MISSING);
                let desc = if f.meta.description.is_empty() {
                    f.meta.name.as_str()
                } else {
                    f.meta.description.as_str()
                };
                let kind = f
                    .binning
                    .bins
                    .get(b)
                    .map(|x| x.kind)
                    .unwrap_or(BinKind::Missing);
                let text = match (text, kind) {
                    (ReasonText::Skip, _) => String::new(),
                    (ReasonText::Write, BinKind::Missing) => format!("{desc}: value is missing"),
                    (ReasonText::Write, BinKind::Unseen) => {
                        format!("{desc}: value {v} was not seen in training")
                    }
                    (ReasonText::Write, BinKind::Regular) => match f.binning.rule {
                        BinRule::Numeric { .. } => {
                            format!("{desc}: value {v} is in a higher-risk range")
                        }
                        BinRule::Categorical { .. } => {
                            format!("{desc}: value {v} is in a higher-risk group")
                        }
                    },
                };
                let value = if kind == BinKind::Missing {
                    FeatureValue::Missing
                } else {
                    v.clone()
                };
                Reason {
                    code: f.code.clone(),
                    feature: f.meta.name.clone(),
                    dimension: f.meta.dimension,
                    text,
                    value,
                    points_lost: lost,
                }
            })
            .collect();
        ScoreResult {
            score,
            band: Band::of(score),
            pd,
            dimension_scores,
            reasons,
        }
    }

    /// Score every row of a dataset: columns are matched by name, then each row goes through
    /// [`Scorecard::score_row`].
    pub fn score_dataset(&self, ds: &Dataset) -> Result<Vec<ScoreResult>, ModelError> {
        let n = ds.n_rows();
        let mut cols = Vec::with_capacity(self.features.len());
        for f in &self.features {
            let c = ds
                .column(&f.meta.name)
                .ok_or_else(|| ModelError::MissingColumn(f.meta.name.clone()))?;
            if c.values.len() != n {
                return Err(ModelError::Length {
                    column: c.meta.name.clone(),
                    got: c.values.len(),
                    expected: n,
                });
            }
            cols.push(&c.values);
        }
        let mut row = Vec::with_capacity(cols.len());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            row.clear();
            row.extend(cols.iter().map(|c| c.value(i)));
            out.push(self.score_row(&row));
        }
        Ok(out)
    }

    /// Structural and numeric validation (run by `load`, and before `save`).
    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(format!(
                "schema_version {} is not supported (expected {SCHEMA_VERSION})",
                self.schema_version
            ));
        }
        if chrono::DateTime::parse_from_rfc3339(&self.created).is_err() {
            return Err(format!(
                "created '{}' is not an RFC 3339 timestamp",
                self.created
            ));
        }
        let s = &self.scaling;
        let expect = Scaling::new(s.base_score, s.base_odds, s.pdo).map_err(|e| e.to_string())?;
        if (expect.factor - s.factor).abs() > 1e-9 * expect.factor.abs().max(1.0)
            || (expect.offset - s.offset).abs() > 1e-9 * expect.offset.abs().max(1.0)
        {
            return Err("scaling factor/offset do not match base score, base odds and PDO".into());
        }
        if !self.intercept.is_finite() {
            return Err("intercept is not finite".into());
        }
        if self.features.is_empty() {
            return Err("the scorecard has no features".into());
        }
        let mut names = std::collections::HashSet::new();
        let mut codes = std::collections::HashSet::new();
        for f in &self.features {
            let ctx = |e: String| format!("feature '{}': {e}", f.meta.name);
            if !names.insert(f.meta.name.as_str()) {
                return Err(ctx("duplicate feature name".into()));
            }
            if f.code.is_empty() || !codes.insert(f.code.as_str()) {
                return Err(ctx(format!("empty or duplicate reason code '{}'", f.code)));
            }
            if !f.coefficient.is_finite() {
                return Err(ctx("coefficient is not finite".into()));
            }
            f.binning.validate().map_err(ctx)?;
            if f.points.len() != f.binning.bins.len() {
                return Err(ctx(format!(
                    "{} points for {} bins",
                    f.points.len(),
                    f.binning.bins.len()
                )));
            }
            if f.points.iter().any(|p| !p.is_finite()) {
                return Err(ctx("non-finite points".into()));
            }
        }
        if self.bands != band_table() {
            return Err("band table differs from the 350–950 bands".into());
        }
        Ok(())
    }

    /// Load `scorecard.json` from a model directory and validate it.
    pub fn load(dir: &Path) -> Result<Scorecard, ModelError> {
        let path = dir.join(SCORECARD_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let invalid = |reason: String| ModelError::InvalidArtifact {
            path: path.clone(),
            reason,
        };
        let sc: Scorecard = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("not a valid scorecard JSON document: {e}")))?;
        sc.validate().map_err(invalid)?;
        Ok(sc)
    }

    /// Write `scorecard.json` into `dir` (created if needed) via a temporary file and a rename.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let path = dir.join(SCORECARD_FILE);
        self.validate()
            .map_err(|reason| ModelError::InvalidArtifact {
                path: path.clone(),
                reason,
            })?;
        write_atomic(dir, SCORECARD_FILE, &self.to_json()?)
    }

    pub fn to_json(&self) -> Result<String, ModelError> {
        serde_json::to_string_pretty(self)
            .map_err(|e| ModelError::Fit(format!("serialising the scorecard: {e}")))
    }

    /// Replace the in-memory model by its JSON round trip until that is a fixed point, so that a
    /// saved and re-loaded artifact scores bit-for-bit like the model returned by training
    /// (serde_json's default float parsing is not always correctly rounded).
    pub fn canonicalize(self) -> Result<Scorecard, ModelError> {
        let mut cur = self;
        for _ in 0..8 {
            let s = cur.to_json()?;
            let next: Scorecard = serde_json::from_str(&s)
                .map_err(|e| ModelError::Fit(format!("re-reading the scorecard: {e}")))?;
            if next.to_json()? == s {
                return Ok(next);
            }
            cur = next;
        }
        Ok(cur)
    }
}

/// Write `dir/name` through `dir/.name.tmp` + rename.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) -> Result<(), ModelError> {
    let io = |path: PathBuf| move |source| ModelError::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, contents).map_err(io(tmp.clone()))?;
    std::fs::rename(&tmp, &path).map_err(io(path.clone()))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::binning::{Bin, BinningConfig, CategoryBin, Trend};

    fn bin(label: &str, kind: BinKind, woe: f64) -> Bin {
        Bin {
            label: label.into(),
            kind,
            count: 10,
            goods: 8,
            bads: 2,
            event_rate: 0.2,
            woe,
            iv: 0.1,
        }
    }

    /// A hand-made two-feature scorecard: f1 numeric (3 bins + missing), f2 categorical.
    pub(crate) fn tiny() -> Scorecard {
        let scaling = Scaling::default();
        let intercept = -1.5;
        let b1 = FeatureBinning {
            rule: BinRule::Numeric {
                splits: vec![10.0, 20.0],
            },
            bins: vec![
                bin("[-inf, 10)", BinKind::Regular, 0.8),
                bin("[10, 20)", BinKind::Regular, 0.1),
                bin("[20, inf)", BinKind::Regular, -0.9),
                bin("missing", BinKind::Missing, -0.3),
            ],
            missing_bin: 3,
            unseen_bin: None,
            trend: Trend::Ascending,
            iv: 0.3,
        };
        let b2 = FeatureBinning {
            rule: BinRule::Categorical {
                categories: vec![
                    CategoryBin {
                        value: "a".into(),
                        bin: 0,
                    },
                    CategoryBin {
                        value: "b".into(),
                        bin: 1,
                    },
                ],
            },
            bins: vec![
                bin("a", BinKind::Regular, 0.5),
                bin("b", BinKind::Regular, -0.5),
                bin("missing", BinKind::Missing, 0.0),
                bin("unseen", BinKind::Unseen, 0.0),
            ],
            missing_bin: 2,
            unseen_bin: Some(3),
            trend: Trend::Ascending,
            iv: 0.2,
        };
        let feats = [
            ("f1", Dimension::Transaction, -1.0, b1),
            ("f2", Dimension::Identity, -0.8, b2),
        ];
        let features = feats
            .into_iter()
            .enumerate()
            .map(|(k, (name, dim, coef, b))| ScorecardFeature {
                meta: FeatureMeta {
                    name: name.into(),
                    dimension: dim,
                    description: format!("{name} desc"),
                },
                code: format!("R{:02}", k + 1),
                coefficient: coef,
                points: bin_points(coef, b.bins.iter().map(|x| x.woe), &scaling, intercept, 2),
                binning: b,
            })
            .collect();
        let _ = BinningConfig::default();
        Scorecard {
            schema_version: SCHEMA_VERSION,
            model_version: "test".into(),
            created: "2024-01-01T00:00:00+00:00".into(),
            pipeline_hash: None,
            training_fingerprint: "00".into(),
            scaling,
            intercept,
            features,
            bands: band_table(),
            metrics: ModelMetrics {
                train: None,
                test: None,
                train_score_distribution: ScoreDistribution {
                    edges: vec![],
                    shares: vec![1.0],
                },
            },
            training: TrainingInfo {
                n_train: 0,
                n_test: 0,
                alpha: 1.0,
                alpha_grid: vec![],
                candidates: vec![],
            },
            challenger: None,
            point_ranges: Default::default(),
        }
    }

    #[test]
    fn scaling_base_pdo_and_clamping() {
        let s = Scaling::default();
        assert!((s.score_of_log_odds(19f64.ln()) - 650.0).abs() < 1e-9);
        assert!((s.score_of_log_odds(38f64.ln()) - 700.0).abs() < 1e-9);
        assert!((s.score_of_log_odds(9.5f64.ln()) - 600.0).abs() < 1e-9);
        let s2 = Scaling::new(600.0, 50.0, 20.0).unwrap();
        assert!((s2.score_of_log_odds(100f64.ln()) - 620.0).abs() < 1e-9);
        assert_eq!(clamp_score(10_000.0), 950);
        assert_eq!(clamp_score(-5.0), 350);
        assert_eq!(clamp_score(f64::NAN), 350);
        assert_eq!(clamp_score(600.5), 601);
        assert_eq!(clamp_score(600.49), 600);
        assert!(Scaling::new(600.0, 0.0, 20.0).is_err());
        assert!(Scaling::new(600.0, 10.0, -1.0).is_err());
    }

    #[test]
    fn score_is_sum_of_points_and_pd_matches() {
        let sc = tiny();
        assert!(sc.validate().is_ok());
        let r = sc.score_row(&[FeatureValue::Num(15.0), FeatureValue::Cat("a".into())]);
        let z: f64 = -1.5 + (-1.0 * 0.1) + (-0.8 * 0.5);
        let raw = sc.scaling.offset - sc.scaling.factor * z;
        assert_eq!(r.score, clamp_score(raw));
        assert!((r.pd - 1.0 / (1.0 + (-z).exp())).abs() < 1e-12);
        assert_eq!(r.band, Band::of(r.score));
        // higher risk → lower score
        let worse = sc.score_row(&[FeatureValue::Num(25.0), FeatureValue::Cat("b".into())]);
        assert!(worse.score < r.score && worse.pd > r.pd);
        // the best row has no reasons; dimension scores at the top
        let best = sc.score_row(&[FeatureValue::Num(1.0), FeatureValue::Cat("a".into())]);
        assert!(best.reasons.is_empty());
        assert_eq!(
            best.dimension_scores,
            vec![(Dimension::Transaction, 950), (Dimension::Identity, 950)]
        );
        assert_eq!(
            worse.dimension_scores,
            vec![(Dimension::Transaction, 350), (Dimension::Identity, 350)]
        );
    }

    #[test]
    fn skipping_the_sentences_changes_nothing_else() {
        let sc = tiny();
        for row in [
            vec![FeatureValue::Num(30.0), FeatureValue::Cat("b".into())],
            vec![FeatureValue::Missing, FeatureValue::Cat("zzz".into())],
            vec![FeatureValue::Num(1.0), FeatureValue::Cat("a".into())],
        ] {
            let full = sc.score_row(&row);
            let lean = sc.score_with(|j| row.get(j), ReasonText::Skip);
            assert!(lean.reasons.iter().all(|r| r.text.is_empty()));
            let mut without_text = full.clone();
            without_text.reasons.iter_mut().for_each(|r| r.text.clear());
            assert_eq!(lean, without_text, "{row:?}");
        }
    }

    #[test]
    fn reasons_ranked_by_points_lost_with_ties_by_feature_order() {
        let sc = tiny();
        let f = sc.scaling.factor;
        // f1 in [20, inf): lost = f·1.0·(0.8 − (−0.9)) = 1.7f; f2 'b': lost = f·0.8·1.0 = 0.8f
        let r = sc.score_row(&[FeatureValue::Num(30.0), FeatureValue::Cat("b".into())]);
        assert_eq!(r.reasons.len(), 2);
        assert_eq!(r.reasons[0].code, "R01");
        assert!((r.reasons[0].points_lost - 1.7 * f).abs() < 1e-9);
        assert_eq!(r.reasons[1].code, "R02");
        assert!((r.reasons[1].points_lost - 0.8 * f).abs() < 1e-9);
        assert_eq!(
            r.reasons[0].text,
            "f1 desc: value 30 is in a higher-risk range"
        );
        assert_eq!(r.reasons[0].value, FeatureValue::Num(30.0));
        // missing & unseen texts
        let r = sc.score_row(&[FeatureValue::Missing, FeatureValue::Cat("zzz".into())]);
        assert!(r
            .reasons
            .iter()
            .any(|x| x.text == "f1 desc: value is missing"));
        assert!(r
            .reasons
            .iter()
            .any(|x| x.text == "f2 desc: value zzz was not seen in training"));
        // a tie: f1 lost = 1.0·(0.8 − 0.1)·f = 0.7f; make f2 lose 0.7f too → f1 first
        let mut sc2 = tiny();
        sc2.features[1].coefficient = -0.7;
        let woes: Vec<f64> = sc2.features[1].binning.bins.iter().map(|b| b.woe).collect();
        sc2.features[1].points = bin_points(-0.7, woes.into_iter(), &sc2.scaling, sc2.intercept, 2);
        let r = sc2.score_row(&[FeatureValue::Num(15.0), FeatureValue::Cat("b".into())]);
        assert_eq!(r.reasons.len(), 2);
        assert!((r.reasons[0].points_lost - r.reasons[1].points_lost).abs() < 1e-9);
        assert_eq!(r.reasons[0].feature, "f1");
    }

    #[test]
    fn odd_inputs_never_panic() {
        let sc = tiny();
        for vals in [
            vec![],
            vec![FeatureValue::Num(f64::NAN)],
            vec![
                FeatureValue::Num(f64::INFINITY),
                FeatureValue::Num(3.0),
                FeatureValue::Missing,
            ],
            vec![FeatureValue::Cat("12".into()), FeatureValue::Cat("".into())],
        ] {
            let r = sc.score_row(&vals);
            assert!((350..=950).contains(&r.score));
            assert!(r.pd.is_finite());
        }
        // short input equals explicit missing
        assert_eq!(
            sc.score_row(&[]),
            sc.score_row(&[FeatureValue::Missing, FeatureValue::Missing])
        );
        // a text number for a numeric feature is parsed
        assert_eq!(
            sc.score_row(&[FeatureValue::Cat("12".into())]).score,
            sc.score_row(&[FeatureValue::Num(12.0)]).score
        );
    }

    #[test]
    fn round_trip_and_corrupt_artifacts() {
        let sc = tiny();
        let dir = tempfile::tempdir().unwrap();
        sc.save(dir.path()).unwrap();
        let back = Scorecard::load(dir.path()).unwrap();
        let rows = [
            vec![FeatureValue::Num(15.0), FeatureValue::Cat("a".into())],
            vec![FeatureValue::Missing, FeatureValue::Cat("q".into())],
        ];
        for r in &rows {
            assert_eq!(sc.score_row(r), back.score_row(r));
        }
        assert!(!dir.path().join(".scorecard.json.tmp").exists());
        // truncated file
        let path = dir.path().join(SCORECARD_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = Scorecard::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("invalid model artifact") && err.contains("not a valid scorecard JSON"),
            "{err}"
        );
        // wrong schema version
        let mut bad = tiny();
        bad.schema_version = 99;
        std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
        let err = Scorecard::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema_version 99"), "{err}");
        // unsorted bin edges
        let mut bad = tiny();
        bad.features[0].binning.rule = BinRule::Numeric {
            splits: vec![20.0, 10.0],
        };
        std::fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
        let err = Scorecard::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("strictly increasing"), "{err}");
        // save refuses an invalid model
        assert!(bad.save(dir.path()).is_err());
        // a missing directory is an I/O error naming the path
        let err = Scorecard::load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }
}
