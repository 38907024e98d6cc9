//! Training: bin every candidate, select features, fit the linfa logistic regression on the WoE
//! matrix, scale it into a [`Scorecard`]. Deterministic: no randomness except the challenger's
//! seeded bootstrap.
//!
//! Selection: (1) IV ≥ `iv_min` (default 0: measured on the fixed split, the usual 0.02 cut
//! cost German ~0.01 AUC and changed nothing on Taiwan; L2 and the sign check do the pruning) and
//! a non-constant WoE column; (2) candidates in descending IV order, a candidate is dropped if
//! its WoE column has |Pearson corr| > `max_corr` with an already kept one; (3) fit; with
//! WoE = ln(good/bad share) every coefficient on ln(odds of bad) must be negative — while some
//! coefficient is ≥ 0 the offender with the lowest IV is dropped and the model refitted.
//!
//! Regularisation: for each `alpha` in the grid (L2 penalty ½·alpha·‖w‖² on the summed log-loss,
//! linfa's convention), fit on the training rows with index % `validation_every` != 0 and
//! measure AUC on the others; the best validation AUC wins (ties → the earlier, i.e. larger,
//! alpha), and the final model is refitted on all training rows. Binning uses all training rows.

use std::collections::BTreeMap;
use std::time::Instant;

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::domain::{ColumnValues, Dataset};
use crate::eval::metrics::{self, auc, summarize};
use crate::features::PipelineSpec;

use super::binning::{BinningConfig, FeatureBinning};
use super::challenger::{ChallengerConfig, Forest};
use super::scorecard::{
    band_table, bin_points, CandidateReport, ChallengerSummary, ModelMetrics, Scaling,
    ScoreDistribution, Scorecard, ScorecardFeature, TrainingInfo, SCHEMA_VERSION,
};
use super::ModelError;

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub binning: BinningConfig,
    /// Per-feature binning by feature name (the pipeline's `binning` hints, see
    /// [`TrainConfig::with_pipeline_hints`]); every other feature uses `binning`.
    pub feature_binning: BTreeMap<String, BinningConfig>,
    pub iv_min: f64,
    pub max_corr: f64,
    /// L2 grid, tried in order (put larger values first: ties keep the earlier one).
    pub alphas: Vec<f64>,
    /// Every `validation_every`-th training row (index % n == 0) is the validation split for alpha.
    pub validation_every: usize,
    /// The alpha search fits on at most this many rows (an evenly spaced subsample of the fit
    /// split; alpha is scaled by the subsample's share so the per-row penalty is unchanged).
    pub alpha_search_rows: usize,
    pub max_iterations: u64,
    /// Training tables with at least this many rows fit with a penalized Newton (IRLS) solver on the same objective
    /// as linfa's (summed log-loss + alpha/2·‖w‖², intercept free), warm-started between fits:
    /// linfa's L-BFGS ran to its iteration cap with an absolute 1e-6 gradient tolerance and did
    /// not finish on 1M rows. Smaller tables keep linfa exactly as before, so the committed models
    /// and the Taiwan/German figures reproduce bit for bit.
    pub large_fit_rows: usize,
    pub base_score: f64,
    pub base_odds: f64,
    pub pdo: f64,
    pub model_version: String,
    /// Fixed RFC 3339 creation time for reproducible artifacts; `None` = now.
    pub created: Option<String>,
    pub pipeline_hash: Option<String>,
    pub challenger: Option<ChallengerConfig>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            binning: BinningConfig::default(),
            feature_binning: BTreeMap::new(),
            iv_min: 0.0,
            max_corr: 0.8,
            alphas: vec![1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0, 0.3, 0.1],
            validation_every: 5,
            alpha_search_rows: 100_000,
            max_iterations: 500,
            large_fit_rows: 100_000,
            base_score: 650.0,
            base_odds: 19.0,
            pdo: 50.0,
            model_version: format!("sesame-scorecard-{}", env!("CARGO_PKG_VERSION")),
            created: None,
            pipeline_hash: None,
            challenger: Some(ChallengerConfig::default()),
        }
    }
}

impl TrainConfig {
    /// Applies a pipeline's per-feature binning hints on top of `binning` (features without
    /// hints keep `binning`).
    pub fn with_pipeline_hints(mut self, spec: &PipelineSpec) -> TrainConfig {
        for f in &spec.features {
            if let Some(share) = f.binning.min_bin_share {
                let b = BinningConfig {
                    min_bin_share: share,
                    ..self.binning.clone()
                };
                self.feature_binning.insert(f.meta.name.clone(), b);
            }
        }
        self
    }

    /// The binning configuration of one feature.
    pub fn binning_for(&self, feature: &str) -> &BinningConfig {
        self.feature_binning.get(feature).unwrap_or(&self.binning)
    }
}

pub struct TrainedModel {
    pub scorecard: Scorecard,
    pub challenger: Option<Forest>,
    /// PD of every training row, as the saved scorecard computes it.
    pub train_pd: Vec<f64>,
    pub test_pd: Option<Vec<f64>>,
    /// Wall time of each training stage in seconds, in order.
    pub timings: Vec<(&'static str, f64)>,
}

/// Check a dataset's shape and target; returns the target.
pub fn check_dataset(ds: &Dataset, need_both_classes: bool) -> Result<&[u8], ModelError> {
    let target = ds.target.as_deref().ok_or(ModelError::NoTarget)?;
    let n = ds.n_rows();
    if n == 0 {
        return Err(ModelError::Empty);
    }
    if target.len() != n {
        return Err(ModelError::Length {
            column: "target".into(),
            got: target.len(),
            expected: n,
        });
    }
    for c in &ds.columns {
        if c.values.len() != n {
            return Err(ModelError::Length {
                column: c.meta.name.clone(),
                got: c.values.len(),
                expected: n,
            });
        }
    }
    if need_both_classes {
        let bads = target.iter().filter(|&&y| y == 1).count();
        if bads == 0 {
            return Err(ModelError::OneClass("good"));
        }
        if bads == n {
            return Err(ModelError::OneClass("bad"));
        }
    }
    Ok(target)
}

/// sha256 over column names, values (type tag + bytes) and the target, column by column.
pub fn fingerprint(ds: &Dataset) -> String {
    let mut h = Sha256::new();
    h.update((ds.n_rows() as u64).to_le_bytes());
    for c in &ds.columns {
        h.update(c.meta.name.as_bytes());
        h.update([0u8]);
        match &c.values {
            ColumnValues::Numeric(v) => {
                for x in v {
                    match x {
                        Some(x) => {
                            h.update([1u8]);
                            h.update(x.to_bits().to_le_bytes());
                        }
                        None => h.update([0u8]),
                    }
                }
            }
            ColumnValues::Categorical(v) => {
                for x in v {
                    match x {
                        Some(s) => {
                            h.update([2u8]);
                            h.update((s.len() as u64).to_le_bytes());
                            h.update(s.as_bytes());
                        }
                        None => h.update([0u8]),
                    }
                }
            }
        }
    }
    if let Some(t) = &ds.target {
        h.update(b"target");
        h.update(t);
    }
    hex::encode(h.finalize())
}

fn woe_column(b: &FeatureBinning, values: &ColumnValues) -> Vec<f64> {
    (0..values.len())
        .map(|i| b.bins[b.bin_index(&values.value(i))].woe)
        .collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// A fitted logistic regression on ln(odds of bad): intercept and one coefficient per column.
#[derive(Debug, Clone)]
struct LrFit {
    b0: f64,
    coefs: Vec<f64>,
}

impl LrFit {
    /// The same fit without column `j` (a warm start after a feature is dropped).
    fn without(&self, j: usize) -> LrFit {
        let mut coefs = self.coefs.clone();
        coefs.remove(j);
        LrFit { b0: self.b0, coefs }
    }
}

/// Fit a logistic regression on selected WoE columns for the given rows, optionally starting
/// from `init` (same columns; used by the large-table solver only). `newton` picks the
/// large-table solver (see `TrainConfig::large_fit_rows`).
#[allow(clippy::too_many_arguments)]
fn fit_logistic(
    woe: &[Vec<f64>],
    cols: &[usize],
    rows: &[usize],
    target: &[u8],
    alpha: f64,
    cfg: &TrainConfig,
    init: Option<&LrFit>,
    newton: bool,
) -> Result<LrFit, ModelError> {
    if newton {
        return fit_newton(woe, cols, rows, target, alpha, cfg, init);
    }
    // small fits: exactly the original computation
    let x = Array2::from_shape_fn((rows.len(), cols.len()), |(i, j)| woe[cols[j]][rows[i]]);
    let y: Array1<usize> = rows.iter().map(|&i| usize::from(target[i] == 1)).collect();
    let ds = linfa::Dataset::new(x, y);
    let params = LogisticRegression::default()
        .alpha(alpha)
        .max_iterations(cfg.max_iterations)
        .gradient_tolerance(1e-6);
    let t0 = Instant::now();
    let fitted = params
        .fit(&ds)
        .map_err(|e| ModelError::Fit(format!("logistic regression (alpha {alpha}): {e}")))?;
    tracing::debug!(
        rows = rows.len(),
        cols = cols.len(),
        alpha,
        secs = t0.elapsed().as_secs_f64(),
        "logistic fit"
    );
    // linfa's "positive" class is the more frequent one: orient to ln(odds of bad)
    let sign = if fitted.labels().pos.class == 1 {
        1.0
    } else {
        -1.0
    };
    let coefs: Vec<f64> = fitted.params().iter().map(|w| sign * w).collect();
    let b0 = sign * fitted.intercept();
    if !b0.is_finite() || coefs.iter().any(|c| !c.is_finite()) {
        return Err(ModelError::Fit(format!(
            "non-finite coefficients (alpha {alpha})"
        )));
    }
    Ok(LrFit { b0, coefs })
}

/// Rows per chunk of the Newton passes: partial sums are added in chunk order, so the result
/// does not depend on the thread count.
const NEWTON_CHUNK: usize = 1 << 15;

/// ln(1 + e^z) without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Penalized objective (summed log-loss + alpha/2·‖w‖²) at `beta` = (w…, b0).
fn newton_loss(
    woe: &[Vec<f64>],
    cols: &[usize],
    rows: &[usize],
    target: &[u8],
    alpha: f64,
    beta: &[f64],
) -> f64 {
    let p = cols.len();
    let parts: Vec<f64> = rows
        .par_chunks(NEWTON_CHUNK)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&i| {
                    let z = beta[p] + (0..p).map(|j| beta[j] * woe[cols[j]][i]).sum::<f64>();
                    softplus(z) - f64::from(target[i]) * z
                })
                .sum::<f64>()
        })
        .collect();
    parts.iter().sum::<f64>() + 0.5 * alpha * beta[..p].iter().map(|w| w * w).sum::<f64>()
}

/// Solve the symmetric positive definite system `a x = b` (row-major d×d) by Cholesky.
fn cholesky_solve(a: &[f64], b: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s = a[i * d + j] - (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * d + i] = s.sqrt();
            } else {
                l[i * d + j] = s / l[j * d + j];
            }
        }
    }
    let mut y = vec![0.0; d];
    for i in 0..d {
        y[i] = (b[i] - (0..i).map(|k| l[i * d + k] * y[k]).sum::<f64>()) / l[i * d + i];
    }
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        x[i] = (y[i] - (i + 1..d).map(|k| l[k * d + i] * x[k]).sum::<f64>()) / l[i * d + i];
    }
    Some(x)
}

/// Large-table logistic regression: damped Newton on linfa's objective, oriented to ln(odds of
/// bad). Each iteration is one pass for the gradient and Hessian (parallel over fixed chunks)
/// and usually one pass for the step's objective; it converges in a handful of iterations.
fn fit_newton(
    woe: &[Vec<f64>],
    cols: &[usize],
    rows: &[usize],
    target: &[u8],
    alpha: f64,
    cfg: &TrainConfig,
    init: Option<&LrFit>,
) -> Result<LrFit, ModelError> {
    let t0 = Instant::now();
    let p = cols.len();
    let d = p + 1;
    let mut beta: Vec<f64> = match init.filter(|f| f.coefs.len() == p) {
        Some(f) => f.coefs.iter().copied().chain([f.b0]).collect(),
        None => {
            let bad = rows.iter().filter(|&&i| target[i] == 1).count() as f64;
            let good = rows.len() as f64 - bad;
            let mut b = vec![0.0; d];
            b[p] = ((bad + 0.5) / (good + 0.5)).ln();
            b
        }
    };
    let mut loss = newton_loss(woe, cols, rows, target, alpha, &beta);
    let mut iterations = 0;
    for _ in 0..cfg.max_iterations.min(100) {
        iterations += 1;
        // gradient and Hessian (upper triangle) of the summed log-loss
        let parts: Vec<(Vec<f64>, Vec<f64>)> = rows
            .par_chunks(NEWTON_CHUNK)
            .map(|chunk| {
                let mut g = vec![0.0; d];
                let mut h = vec![0.0; d * d];
                let mut x = vec![0.0; d];
                x[p] = 1.0;
                for &i in chunk {
                    for j in 0..p {
                        x[j] = woe[cols[j]][i];
                    }
                    let z: f64 = (0..d).map(|j| beta[j] * x[j]).sum();
                    let pr = 1.0 / (1.0 + (-z).exp());
                    let r = pr - f64::from(target[i]);
                    let w = pr * (1.0 - pr);
                    for j in 0..d {
                        g[j] += r * x[j];
                        let wx = w * x[j];
                        for k in j..d {
                            h[j * d + k] += wx * x[k];
                        }
                    }
                }
                (g, h)
            })
            .collect();
        let mut g = vec![0.0; d];
        let mut h = vec![0.0; d * d];
        for (pg, ph) in &parts {
            for (a, b) in g.iter_mut().zip(pg) {
                *a += b;
            }
            for (a, b) in h.iter_mut().zip(ph) {
                *a += b;
            }
        }
        for j in 0..d {
            for k in 0..j {
                h[j * d + k] = h[k * d + j];
            }
        }
        for j in 0..p {
            g[j] += alpha * beta[j];
            h[j * d + j] += alpha;
        }
        // a tiny ridge keeps the system definite when a column is constant on these rows
        for j in 0..d {
            h[j * d + j] += 1e-9 * (1.0 + h[j * d + j]);
        }
        let step = cholesky_solve(&h, &g, d).ok_or_else(|| {
            ModelError::Fit(format!(
                "logistic regression (alpha {alpha}): singular Hessian"
            ))
        })?;
        // Newton decrement: half of it estimates how far the objective is above its minimum
        let decrement: f64 = g.iter().zip(&step).map(|(a, b)| a * b).sum();
        if !decrement.is_finite() {
            break;
        }
        if decrement < 1e-10 {
            break;
        }
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..40 {
            let cand: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b - t * s).collect();
            let l = newton_loss(woe, cols, rows, target, alpha, &cand);
            if l.is_finite() && l <= loss - 1e-4 * t * decrement {
                beta = cand;
                loss = l;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        if !accepted {
            break;
        }
    }
    tracing::debug!(
        rows = rows.len(),
        cols = p,
        alpha,
        iterations,
        warm = init.is_some(),
        secs = t0.elapsed().as_secs_f64(),
        "newton logistic fit"
    );
    let b0 = beta[p];
    let coefs = beta[..p].to_vec();
    if !b0.is_finite() || coefs.iter().any(|c| !c.is_finite()) {
        return Err(ModelError::Fit(format!(
            "non-finite coefficients (alpha {alpha})"
        )));
    }
    Ok(LrFit { b0, coefs })
}

fn linear(woe: &[Vec<f64>], cols: &[usize], b0: f64, coefs: &[f64], i: usize) -> f64 {
    b0 + cols
        .iter()
        .zip(coefs)
        .map(|(&c, w)| w * woe[c][i])
        .sum::<f64>()
}

/// Pick alpha on the internal validation split; returns (alpha, grid results, the fit at the
/// chosen alpha). `warm[a]` is the previous round's fit at `alphas[a]` (same columns), used as a
/// start and replaced by this round's; without it the previous alpha's fit is the start.
fn choose_alpha(
    woe: &[Vec<f64>],
    cols: &[usize],
    target: &[u8],
    cfg: &TrainConfig,
    warm: &mut [Option<LrFit>],
    newton: bool,
) -> Result<(f64, Vec<(f64, f64)>, Option<LrFit>), ModelError> {
    let default_alpha = cfg.alphas.first().copied().unwrap_or(1.0);
    let every = cfg.validation_every.max(2);
    let n = target.len();
    let fit_rows: Vec<usize> = (0..n).filter(|i| i % every != 0).collect();
    let val_rows: Vec<usize> = (0..n).filter(|i| i % every == 0).collect();
    let classes = |rows: &[usize]| {
        let b = rows.iter().filter(|&&i| target[i] == 1).count();
        b > 0 && b < rows.len()
    };
    if cfg.alphas.len() < 2 || !classes(&fit_rows) || !classes(&val_rows) {
        return Ok((default_alpha, vec![], None));
    }
    // large tables: search on an evenly spaced subsample, with the penalty scaled to its size
    let cap = cfg.alpha_search_rows.max(1000);
    let (search_rows, scale) = if fit_rows.len() > cap {
        let stride = fit_rows.len().div_ceil(cap);
        let sub: Vec<usize> = fit_rows.iter().copied().step_by(stride).collect();
        let scale = sub.len() as f64 / fit_rows.len() as f64;
        if classes(&sub) {
            (sub, scale)
        } else {
            (fit_rows, 1.0)
        }
    } else {
        (fit_rows, 1.0)
    };
    let yv: Vec<u8> = val_rows.iter().map(|&i| target[i]).collect();
    let mut grid = Vec::new();
    let mut best: Option<(f64, f64, LrFit)> = None;
    let mut prev: Option<LrFit> = None;
    for (k, &a) in cfg.alphas.iter().enumerate() {
        let init = warm.get(k).and_then(|w| w.as_ref()).or(prev.as_ref());
        let fit = fit_logistic(
            woe,
            cols,
            &search_rows,
            target,
            a * scale,
            cfg,
            init,
            newton,
        )?;
        let z: Vec<f64> = val_rows
            .iter()
            .map(|&i| linear(woe, cols, fit.b0, &fit.coefs, i))
            .collect();
        let v = auc(&z, &yv).unwrap_or(0.5);
        grid.push((a, v));
        if best.as_ref().is_none_or(|b| v > b.1 + 1e-9) {
            best = Some((a, v, fit.clone()));
        }
        if let Some(w) = warm.get_mut(k) {
            *w = Some(fit.clone());
        }
        prev = Some(fit);
    }
    Ok(match best {
        Some((a, _, f)) => (a, grid, Some(f)),
        None => (default_alpha, grid, None),
    })
}

/// Train a scorecard (and optionally the challenger) on `train`; `test` only feeds the metrics.
pub fn train_dataset(
    train: &Dataset,
    test: Option<&Dataset>,
    cfg: &TrainConfig,
) -> Result<TrainedModel, ModelError> {
    let target = check_dataset(train, true)?;
    if cfg.alphas.iter().any(|a| !a.is_finite() || *a < 0.0) {
        return Err(ModelError::Config("alphas must be finite and >= 0".into()));
    }
    let scaling = Scaling::new(cfg.base_score, cfg.base_odds, cfg.pdo)?;
    let test_target = match test {
        Some(t) => {
            let tt = check_dataset(t, false)?;
            for c in &train.columns {
                if t.column(&c.meta.name).is_none() {
                    return Err(ModelError::MissingColumn(c.meta.name.clone()));
                }
            }
            Some(tt)
        }
        None => None,
    };

    let mut timings: Vec<(&'static str, f64)> = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |timings: &mut Vec<(&'static str, f64)>, stage: &'static str| {
        timings.push((stage, clock.elapsed().as_secs_f64()));
        clock = Instant::now();
    };

    // 1. bin every candidate (independent per feature: in parallel, same result)
    let binnings: Vec<FeatureBinning> = train
        .columns
        .par_iter()
        .map(|c| FeatureBinning::fit(&c.values, target, cfg.binning_for(&c.meta.name)))
        .collect();
    lap(&mut timings, "binning");
    let mut status: Vec<String> = vec![String::new(); binnings.len()];
    let mut order: Vec<usize> = (0..binnings.len()).collect();
    order.sort_by(|&a, &b| binnings[b].iv.total_cmp(&binnings[a].iv).then(a.cmp(&b)));

    // 2. IV and correlation filters
    let woe: Vec<Vec<f64>> = binnings
        .par_iter()
        .zip(&train.columns)
        .map(|(b, c)| {
            if b.iv >= cfg.iv_min {
                woe_column(b, &c.values)
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut selected: Vec<usize> = Vec::new();
    for &k in &order {
        if binnings[k].iv < cfg.iv_min {
            status[k] = "low_iv".into();
            continue;
        }
        if woe[k].windows(2).all(|w| w[0] == w[1]) {
            status[k] = "constant_woe".into();
            continue;
        }
        if let Some(&other) = selected
            .par_iter()
            .find_first(|&&s| pearson(&woe[k], &woe[s]).abs() > cfg.max_corr)
        {
            status[k] = format!("correlated_with:{}", train.columns[other].meta.name);
            continue;
        }
        selected.push(k);
    }
    lap(&mut timings, "WoE and correlation filter");
    let detail = || {
        order
            .iter()
            .map(|&k| format!("{} IV {:.4}", train.columns[k].meta.name, binnings[k].iv))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if selected.is_empty() {
        return Err(ModelError::NoFeatures {
            iv_min: cfg.iv_min,
            detail: detail(),
        });
    }

    // 3. fit with sign check; every refit starts from the previous round's solution
    let all_rows: Vec<usize> = (0..target.len()).collect();
    let newton = target.len() >= cfg.large_fit_rows;
    let mut warm: Vec<Option<LrFit>> = vec![None; cfg.alphas.len()];
    let mut last_final: Option<LrFit> = None;
    let (alpha, grid, b0, coefs) = loop {
        let (alpha, grid, at_alpha) =
            choose_alpha(&woe, &selected, target, cfg, &mut warm, newton)?;
        let init = last_final.as_ref().or(at_alpha.as_ref());
        let fit = fit_logistic(&woe, &selected, &all_rows, target, alpha, cfg, init, newton)?;
        // offenders: coefficient >= 0; drop the lowest-IV one (selected is in descending IV order)
        match (0..selected.len()).rev().find(|&j| fit.coefs[j] >= 0.0) {
            None => break (alpha, grid, fit.b0, fit.coefs),
            Some(j) => {
                status[selected[j]] = "wrong_sign".into();
                selected.remove(j);
                if selected.is_empty() {
                    return Err(ModelError::NoFeatures {
                        iv_min: cfg.iv_min,
                        detail: detail(),
                    });
                }
                for w in warm.iter_mut() {
                    *w = w.as_ref().map(|f| f.without(j));
                }
                last_final = Some(fit.without(j));
            }
        }
    };
    lap(
        &mut timings,
        "logistic regression (alpha search, sign check)",
    );
    for &k in &selected {
        status[k] = "selected".into();
    }

    // 4. scorecard
    let nf = selected.len();
    let features: Vec<ScorecardFeature> = selected
        .iter()
        .zip(&coefs)
        .enumerate()
        .map(|(pos, (&k, &c))| {
            let b = binnings[k].clone();
            ScorecardFeature {
                meta: train.columns[k].meta.clone(),
                code: format!("R{:02}", pos + 1),
                coefficient: c,
                points: bin_points(c, b.bins.iter().map(|x| x.woe), &scaling, b0, nf),
                binning: b,
            }
        })
        .collect();
    let created = match &cfg.created {
        Some(c) => c.clone(),
        None => chrono::Utc::now().to_rfc3339(),
    };
    let sc = Scorecard {
        schema_version: SCHEMA_VERSION,
        model_version: cfg.model_version.clone(),
        created,
        pipeline_hash: cfg.pipeline_hash.clone(),
        training_fingerprint: fingerprint(train),
        scaling,
        intercept: b0,
        features,
        bands: band_table(),
        metrics: ModelMetrics {
            train: None,
            test: None,
            train_score_distribution: ScoreDistribution {
                edges: vec![],
                shares: vec![],
            },
        },
        training: TrainingInfo {
            n_train: train.n_rows(),
            n_test: test.map(|t| t.n_rows()).unwrap_or(0),
            alpha,
            alpha_grid: grid,
            candidates: order
                .iter()
                .map(|&k| CandidateReport {
                    name: train.columns[k].meta.name.clone(),
                    iv: binnings[k].iv,
                    status: status[k].clone(),
                })
                .collect(),
        },
        challenger: None,
        point_ranges: Default::default(),
    };
    sc.validate().map_err(ModelError::Fit)?;
    let mut sc = sc.canonicalize()?;

    // 5. metrics from the canonical (= saved) model
    let train_res = sc.score_dataset(train)?;
    let train_pd: Vec<f64> = train_res.iter().map(|r| r.pd).collect();
    let train_scores: Vec<f64> = train_res.iter().map(|r| r.score as f64).collect();
    let edges = metrics::score_psi_edges();
    sc.metrics.train_score_distribution = ScoreDistribution {
        shares: metrics::bin_shares(&train_scores, &edges),
        edges,
    };
    sc.metrics.train = summarize(&train_pd, target);
    let test_pd = match (test, test_target) {
        (Some(t), Some(tt)) => {
            let pd: Vec<f64> = sc.score_dataset(t)?.iter().map(|r| r.pd).collect();
            sc.metrics.test = summarize(&pd, tt);
            Some(pd)
        }
        _ => None,
    };

    lap(&mut timings, "scorecard and its train/test metrics");

    // 6. challenger on the same features
    let challenger = match &cfg.challenger {
        Some(ccfg) => {
            let names: Vec<String> = sc.features.iter().map(|f| f.meta.name.clone()).collect();
            let bins: Vec<FeatureBinning> = sc.features.iter().map(|f| f.binning.clone()).collect();
            let forest = Forest::fit(train, &names, &bins, ccfg)?;
            let tr = forest.predict_dataset(train)?;
            let te = match (test, test_target) {
                (Some(t), Some(tt)) => summarize(&forest.predict_dataset(t)?, tt),
                _ => None,
            };
            sc.challenger = Some(ChallengerSummary {
                kind: "random_forest(cart)".into(),
                n_trees: ccfg.n_trees,
                max_depth: ccfg.max_depth,
                train: summarize(&tr, target),
                test: te,
            });
            Some(forest)
        }
        None => None,
    };
    if cfg.challenger.is_some() {
        lap(&mut timings, "challenger (fit and train/test metrics)");
    }
    // metrics are now in place: make the whole artifact a JSON fixed point (scoring fields
    // already are, so predictions do not change)
    let sc = sc.canonicalize()?;
    Ok(TrainedModel {
        scorecard: sc,
        challenger,
        train_pd,
        test_pd,
        timings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ColumnValues, Dimension, FeatureColumn, FeatureMeta};

    /// 4,000 rows: a graded score and a rare flag (40 rows, 1%, 30 of them bad).
    fn rare_flag_data() -> Dataset {
        let n = 4000;
        let mut y = Vec::with_capacity(n);
        let mut score = Vec::with_capacity(n);
        let mut flag = Vec::with_capacity(n);
        for i in 0..n {
            let flagged = i % 100 == 7;
            // bad rate 4% .. 16% along the score, 75% among the flagged
            let bad = if flagged {
                i % 400 != 7
            } else {
                (i * 7919) % 1000 < 40 + 120 * i / n
            };
            y.push(u8::from(bad));
            score.push(Some(i as f64));
            flag.push(Some(if flagged { 1.0 } else { 0.0 }));
        }
        let col = |name: &str, values: Vec<Option<f64>>| FeatureColumn {
            meta: FeatureMeta {
                name: name.into(),
                dimension: Dimension::Relationship,
                description: name.into(),
            },
            values: ColumnValues::Numeric(values),
        };
        Dataset {
            ids: (0..n).map(|i| i.to_string()).collect(),
            columns: vec![col("score", score), col("ring_flag", flag)],
            target: Some(y),
        }
    }

    #[test]
    fn pipeline_binning_hint_lets_a_rare_flag_have_its_own_bin() {
        let ds = rare_flag_data();
        let base = TrainConfig {
            challenger: None,
            ..Default::default()
        };
        // Default 5% floor: the 1% flag cannot have a bin of its own (one bin, IV 0).
        let plain = train_dataset(&ds, None, &base).unwrap().scorecard;
        assert!(plain.features.iter().all(|f| f.meta.name != "ring_flag"));

        let spec = PipelineSpec::from_toml(
            r#"
[pipeline]
name = "t"
version = "1"
[tables.relations]
edges = { from = "src", to = "dst" }
[[feature]]
name = "ring_flag"
dimension = "relationship"
description = "flag"
type = "int"
kind = "aggregate"
table = "relations"
agg = "count"
binning = { min_bin_share = 0.005 }
"#,
        )
        .unwrap();
        let cfg = base.clone().with_pipeline_hints(&spec);
        assert_eq!(cfg.binning_for("ring_flag").min_bin_share, 0.005);
        assert_eq!(
            cfg.binning_for("score"),
            &cfg.binning,
            "others keep the defaults"
        );
        let hinted = train_dataset(&ds, None, &cfg).unwrap().scorecard;
        let f = hinted
            .features
            .iter()
            .find(|f| f.meta.name == "ring_flag")
            .expect("the flag is selected");
        let regular: Vec<_> = f
            .binning
            .bins
            .iter()
            .filter(|b| b.kind == crate::model::binning::BinKind::Regular)
            .collect();
        assert_eq!(regular.len(), 2);
        assert_eq!(regular[1].count, 40);
        assert!(f.points[1] < f.points[0], "flagged rows lose points");
        // The other feature is binned exactly as without the hint.
        let score = |sc: &Scorecard| {
            sc.features
                .iter()
                .find(|f| f.meta.name == "score")
                .unwrap()
                .binning
                .clone()
        };
        assert_eq!(score(&hinted), score(&plain));
    }
}
