//! Optimal binning of one feature against a binary target (1 = bad), maximising information value
//! under constraints.
//!
//! * Numeric: fine pre-bins first — every distinct value when there are at most `max_prebins` of
//!   them (so codes such as PAY status −2/−1/0 stay distinct), otherwise equal-frequency quantile
//!   pre-bins whose boundaries fall between distinct values. Pre-bins are then merged by an exact
//!   dynamic programme over contiguous groupings that maximises the total IV subject to: at most
//!   `max_bins` bins, every bin holding at least `min_bin_share` of the rows and at least
//!   `min_bads` bads and `min_goods` goods, and the event rate following the trend
//!   (ascending / descending chosen automatically by IV, or peak / valley / free when configured).
//!   If no grouping satisfies the constraints the feature gets a single bin (IV 0 → not selected).
//!   Cut points are midpoints between the neighbouring distinct training values; a value `x`
//!   falls in bin `k` = number of cut points `<= x` (binary search).
//! * Categorical: categories with less than `rare_category_share` of the non-missing rows are
//!   pooled into one "rare" group; the groups are ordered by event rate and merged by the same
//!   programme (ascending trend along that order).
//! * Missing values (None, NaN, ±inf) always have a bin of their own.
//! * **Unseen categories** at scoring time fall into a dedicated `unseen` bin with WoE 0, i.e. the
//!   population odds: no evidence either way. A missing bin that was empty in training also has WoE 0.
//! * WoE = ln(good share / bad share) with additive smoothing `smoothing` (default 0.5) on the
//!   counts: good share = (goods + s)/G, bad share = (bads + s)/B, so empty classes give finite
//!   values. Higher WoE = safer. Bin IV = (good share − bad share)·WoE ≥ 0; feature IV = Σ bin IV.

use serde::{Deserialize, Serialize};

use crate::domain::{ColumnValues, FeatureValue};

/// Shape constraint on the event rate across ordered bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// Best of ascending and descending (by IV).
    Auto,
    /// Best of ascending, descending, peak and valley (by IV).
    AutoAny,
    Ascending,
    Descending,
    /// Rising then falling event rate.
    Peak,
    /// Falling then rising event rate.
    Valley,
    /// No constraint.
    Free,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinningConfig {
    pub max_prebins: usize,
    pub max_bins: usize,
    pub min_bin_share: f64,
    pub min_bads: u64,
    pub min_goods: u64,
    pub trend: Trend,
    pub rare_category_share: f64,
    pub smoothing: f64,
}

impl Default for BinningConfig {
    fn default() -> Self {
        BinningConfig {
            max_prebins: 20,
            max_bins: 8,
            min_bin_share: 0.05,
            min_bads: 5,
            min_goods: 5,
            trend: Trend::Auto,
            rare_category_share: 0.01,
            smoothing: 0.5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinKind {
    Regular,
    Missing,
    Unseen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub label: String,
    pub kind: BinKind,
    pub count: u64,
    pub goods: u64,
    pub bads: u64,
    pub event_rate: f64,
    pub woe: f64,
    pub iv: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryBin {
    pub value: String,
    pub bin: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BinRule {
    /// Regular bins 0..=splits.len(); value x → number of splits <= x.
    Numeric { splits: Vec<f64> },
    /// Categories sorted by value (binary search), each with its bin index.
    Categorical { categories: Vec<CategoryBin> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureBinning {
    pub rule: BinRule,
    /// Regular bins in order, then the missing bin, then (categorical only) the unseen bin.
    pub bins: Vec<Bin>,
    pub missing_bin: usize,
    pub unseen_bin: Option<usize>,
    /// The trend actually used (never `Auto`/`AutoAny`).
    pub trend: Trend,
    pub iv: f64,
}

/// Smoothed WoE and IV of a bin given class totals.
pub fn woe_iv(
    goods: u64,
    bads: u64,
    total_goods: u64,
    total_bads: u64,
    smoothing: f64,
) -> (f64, f64) {
    if goods + bads == 0 || total_goods == 0 || total_bads == 0 {
        return (0.0, 0.0);
    }
    let pg = (goods as f64 + smoothing) / total_goods as f64;
    let pb = (bads as f64 + smoothing) / total_bads as f64;
    let woe = (pg / pb).ln();
    (woe, (pg - pb) * woe)
}

fn event_rate(g: u64, b: u64) -> f64 {
    if g + b == 0 {
        0.0
    } else {
        b as f64 / (g + b) as f64
    }
}

/// Exact DP: best contiguous grouping of `pre` (goods, bads per pre-bin) under the constraints.
/// Returns group start indices (first is 0) and the total IV, or None if infeasible.
fn optimal_groups(
    pre: &[(u64, u64)],
    totals: (u64, u64),
    n_total: u64,
    cfg: &BinningConfig,
    trend: Trend,
) -> Option<(Vec<usize>, f64)> {
    let m = pre.len();
    if m == 0 {
        return None;
    }
    let kmax = cfg.max_bins.max(1).min(m);
    // prefix sums
    let mut cg = vec![0u64; m + 1];
    let mut cb = vec![0u64; m + 1];
    for (i, &(g, b)) in pre.iter().enumerate() {
        cg[i + 1] = cg[i] + g;
        cb[i + 1] = cb[i] + b;
    }
    let min_count = (cfg.min_bin_share * n_total as f64).ceil() as u64;
    let grp = |i: usize, j: usize| (cg[j] - cg[i], cb[j] - cb[i]);
    let feasible = |i: usize, j: usize| {
        let (g, b) = grp(i, j);
        g + b >= min_count && g >= cfg.min_goods && b >= cfg.min_bads
    };
    let iv = |i: usize, j: usize| {
        let (g, b) = grp(i, j);
        woe_iv(g, b, totals.0, totals.1, cfg.smoothing).1
    };
    let er = |i: usize, j: usize| {
        let (g, b) = grp(i, j);
        event_rate(g, b)
    };
    // transition: previous event rate, current, phase → new phase
    let step = |prev: f64, cur: f64, phase: usize| -> Option<usize> {
        match trend {
            Trend::Ascending => (cur > prev).then_some(0),
            Trend::Descending => (cur < prev).then_some(0),
            Trend::Peak => {
                if phase == 0 && cur > prev {
                    Some(0)
                } else if cur < prev {
                    Some(1)
                } else {
                    None
                }
            }
            Trend::Valley => {
                if phase == 0 && cur < prev {
                    Some(0)
                } else if cur > prev {
                    Some(1)
                } else {
                    None
                }
            }
            _ => Some(0),
        }
    };
    const NEG: f64 = f64::NEG_INFINITY;
    // dp[k][i][j][p]: best IV covering [0, j) in k+1 groups, last group [i, j), phase p
    let idx = |k: usize, i: usize, j: usize, p: usize| ((k * m + i) * (m + 1) + j) * 2 + p;
    let size = kmax * m * (m + 1) * 2;
    let mut dp = vec![NEG; size];
    let mut back = vec![usize::MAX; size]; // previous group's start h and phase packed as h*2+p
    for j in 1..=m {
        if feasible(0, j) {
            dp[idx(0, 0, j, 0)] = iv(0, j);
        }
    }
    for k in 1..kmax {
        for j in 2..=m {
            for i in 1..j {
                if !feasible(i, j) {
                    continue;
                }
                let cur_er = er(i, j);
                let cur_iv = iv(i, j);
                for h in 0..i {
                    let prev_er = er(h, i);
                    for p in 0..2 {
                        let v = dp[idx(k - 1, h, i, p)];
                        if v == NEG {
                            continue;
                        }
                        if let Some(np) = step(prev_er, cur_er, p) {
                            let cand = v + cur_iv;
                            let t = idx(k, i, j, np);
                            if cand > dp[t] + 1e-12 {
                                dp[t] = cand;
                                back[t] = h * 2 + p;
                            }
                        }
                    }
                }
            }
        }
    }
    let mut best: Option<(f64, usize, usize, usize)> = None;
    for k in 0..kmax {
        for i in 0..m {
            for p in 0..2 {
                let v = dp[idx(k, i, m, p)];
                if v > NEG && best.is_none_or(|b| v > b.0 + 1e-12) {
                    best = Some((v, k, i, p));
                }
            }
        }
    }
    let (total, mut k, mut i, mut p) = best?;
    let mut j = m;
    let mut starts = vec![i];
    while k > 0 {
        let b = back[idx(k, i, j, p)];
        if b == usize::MAX {
            return None;
        }
        j = i;
        i = b / 2;
        p = b % 2;
        k -= 1;
        starts.push(i);
    }
    starts.reverse();
    Some((starts, total))
}

/// Try the configured trend(s); returns the grouping, its IV and the trend used.
fn best_grouping(
    pre: &[(u64, u64)],
    totals: (u64, u64),
    n_total: u64,
    cfg: &BinningConfig,
) -> (Vec<usize>, Trend) {
    let candidates: &[Trend] = match cfg.trend {
        Trend::Auto => &[Trend::Ascending, Trend::Descending],
        Trend::AutoAny => &[
            Trend::Ascending,
            Trend::Descending,
            Trend::Peak,
            Trend::Valley,
        ],
        Trend::Ascending => &[Trend::Ascending],
        Trend::Descending => &[Trend::Descending],
        Trend::Peak => &[Trend::Peak],
        Trend::Valley => &[Trend::Valley],
        Trend::Free => &[Trend::Free],
    };
    let mut best: Option<(Vec<usize>, f64, Trend)> = None;
    for &t in candidates {
        if let Some((g, v)) = optimal_groups(pre, totals, n_total, cfg, t) {
            if best.as_ref().is_none_or(|b| v > b.1 + 1e-12) {
                best = Some((g, v, t));
            }
        }
    }
    match best {
        Some((g, _, t)) => (g, t),
        None => (vec![0], cfg.trend_fallback()),
    }
}

impl BinningConfig {
    fn trend_fallback(&self) -> Trend {
        match self.trend {
            Trend::Auto | Trend::AutoAny => Trend::Ascending,
            t => t,
        }
    }
}

fn make_bin(label: String, kind: BinKind, g: u64, b: u64, totals: (u64, u64), s: f64) -> Bin {
    let (woe, iv) = woe_iv(g, b, totals.0, totals.1, s);
    Bin {
        label,
        kind,
        count: g + b,
        goods: g,
        bads: b,
        event_rate: event_rate(g, b),
        woe,
        iv,
    }
}

fn fmt_edge(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{}", (x * 1e6).round() / 1e6)
    }
}

impl FeatureBinning {
    /// Fit on one column. `target` must have the column's length (1 = bad); rows beyond either length are ignored.
    pub fn fit(values: &ColumnValues, target: &[u8], cfg: &BinningConfig) -> FeatureBinning {
        match values {
            ColumnValues::Numeric(v) => Self::fit_numeric(v, target, cfg),
            ColumnValues::Categorical(v) => Self::fit_categorical(v, target, cfg),
        }
    }

    pub fn fit_numeric(
        values: &[Option<f64>],
        target: &[u8],
        cfg: &BinningConfig,
    ) -> FeatureBinning {
        let n = values.len().min(target.len());
        let mut pts: Vec<(f64, u8)> = Vec::with_capacity(n);
        let (mut mg, mut mb) = (0u64, 0u64);
        for (v, &y) in values.iter().zip(target) {
            match v {
                Some(x) if x.is_finite() => pts.push((*x, y)),
                _ => {
                    if y == 1 {
                        mb += 1
                    } else {
                        mg += 1
                    }
                }
            }
        }
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total_bads = target[..n].iter().filter(|&&y| y == 1).count() as u64;
        let totals = (n as u64 - total_bads, total_bads);
        // distinct values with counts
        let mut distinct: Vec<(f64, u64, u64)> = Vec::new();
        for &(x, y) in &pts {
            match distinct.last_mut() {
                Some(d) if d.0 == x => {
                    if y == 1 {
                        d.2 += 1
                    } else {
                        d.1 += 1
                    }
                }
                _ => distinct.push((x, u64::from(y != 1), u64::from(y == 1))),
            }
        }
        // pre-bins: (first distinct index, last distinct index, goods, bads)
        let mut pre: Vec<(usize, usize, u64, u64)> = Vec::new();
        let p = cfg.max_prebins.max(1);
        if distinct.len() <= p {
            for (k, d) in distinct.iter().enumerate() {
                pre.push((k, k, d.1, d.2));
            }
        } else {
            let nn = pts.len() as f64;
            let mut cum = 0u64;
            let mut q = 1usize;
            let mut cur: Option<(usize, usize, u64, u64)> = None;
            for (k, d) in distinct.iter().enumerate() {
                let c = cur.get_or_insert((k, k, 0, 0));
                c.1 = k;
                c.2 += d.1;
                c.3 += d.2;
                cum += d.1 + d.2;
                if cum as f64 >= q as f64 * nn / p as f64 {
                    pre.extend(cur.take());
                    while (q as f64) * nn / (p as f64) <= cum as f64 {
                        q += 1;
                    }
                }
            }
            pre.extend(cur.take());
        }
        let pre_gb: Vec<(u64, u64)> = pre.iter().map(|x| (x.2, x.3)).collect();
        let (starts, trend) = if pre.is_empty() {
            (vec![], cfg.trend_fallback())
        } else {
            best_grouping(&pre_gb, totals, n as u64, cfg)
        };
        let mut splits = Vec::new();
        let mut bins = Vec::new();
        for (gi, &s) in starts.iter().enumerate() {
            let e = starts.get(gi + 1).copied().unwrap_or(pre.len());
            let (g, b) = pre_gb[s..e]
                .iter()
                .fold((0, 0), |acc, x| (acc.0 + x.0, acc.1 + x.1));
            if gi > 0 {
                let left = distinct[pre[s - 1].1].0;
                let right = distinct[pre[s].0].0;
                splits.push(left + (right - left) / 2.0);
            }
            bins.push((g, b));
        }
        let mut out = Vec::new();
        for (k, &(g, b)) in bins.iter().enumerate() {
            let lo = if k == 0 {
                "-inf".to_string()
            } else {
                fmt_edge(splits[k - 1])
            };
            let hi = if k == splits.len() {
                "inf".to_string()
            } else {
                fmt_edge(splits[k])
            };
            out.push(make_bin(
                format!("[{lo}, {hi})"),
                BinKind::Regular,
                g,
                b,
                totals,
                cfg.smoothing,
            ));
        }
        if out.is_empty() {
            // no finite value at all: one empty regular bin keeps the layout uniform
            out.push(make_bin(
                "[-inf, inf)".into(),
                BinKind::Regular,
                0,
                0,
                totals,
                cfg.smoothing,
            ));
        }
        let missing_bin = out.len();
        out.push(make_bin(
            "missing".into(),
            BinKind::Missing,
            mg,
            mb,
            totals,
            cfg.smoothing,
        ));
        let iv = out.iter().map(|b| b.iv).sum();
        FeatureBinning {
            rule: BinRule::Numeric { splits },
            bins: out,
            missing_bin,
            unseen_bin: None,
            trend,
            iv,
        }
    }

    pub fn fit_categorical(
        values: &[Option<String>],
        target: &[u8],
        cfg: &BinningConfig,
    ) -> FeatureBinning {
        use std::collections::BTreeMap;
        let n = values.len().min(target.len());
        let mut counts: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let (mut mg, mut mb) = (0u64, 0u64);
        for (v, &y) in values.iter().zip(target) {
            let slot = match v {
                Some(s) => counts.entry(s.as_str()).or_insert((0, 0)),
                None => {
                    if y == 1 {
                        mb += 1
                    } else {
                        mg += 1
                    }
                    continue;
                }
            };
            if y == 1 {
                slot.1 += 1
            } else {
                slot.0 += 1
            }
        }
        let total_bads = target[..n].iter().filter(|&&y| y == 1).count() as u64;
        let totals = (n as u64 - total_bads, total_bads);
        let non_missing: u64 = counts.values().map(|c| c.0 + c.1).sum();
        let rare_min = cfg.rare_category_share * non_missing as f64;
        // groups: (categories, goods, bads); the rare pool is one group
        let mut groups: Vec<(Vec<&str>, u64, u64)> = Vec::new();
        let mut rare: (Vec<&str>, u64, u64) = (Vec::new(), 0, 0);
        for (&c, &(g, b)) in &counts {
            if ((g + b) as f64) < rare_min {
                rare.0.push(c);
                rare.1 += g;
                rare.2 += b;
            } else {
                groups.push((vec![c], g, b));
            }
        }
        if !rare.0.is_empty() {
            groups.push(rare);
        }
        let s = cfg.smoothing;
        let ser = |g: u64, b: u64| (b as f64 + s) / ((g + b) as f64 + 2.0 * s);
        groups.sort_by(|a, b| {
            ser(a.1, a.2)
                .total_cmp(&ser(b.1, b.2))
                .then_with(|| a.0.cmp(&b.0))
        });
        let pre_gb: Vec<(u64, u64)> = groups.iter().map(|g| (g.1, g.2)).collect();
        let starts = if groups.is_empty() {
            vec![]
        } else {
            let mut c = cfg.clone();
            c.trend = Trend::Ascending;
            best_grouping(&pre_gb, totals, n as u64, &c).0
        };
        let mut bins = Vec::new();
        let mut categories = Vec::new();
        for (gi, &st) in starts.iter().enumerate() {
            let e = starts.get(gi + 1).copied().unwrap_or(groups.len());
            let mut names: Vec<&str> = Vec::new();
            let (mut g, mut b) = (0, 0);
            for grp in &groups[st..e] {
                names.extend(grp.0.iter().copied());
                g += grp.1;
                b += grp.2;
            }
            names.sort();
            for c in &names {
                categories.push(CategoryBin {
                    value: (*c).to_string(),
                    bin: gi,
                });
            }
            let mut label = names.iter().take(6).copied().collect::<Vec<_>>().join(", ");
            if names.len() > 6 {
                label.push_str(&format!(", … (+{})", names.len() - 6));
            }
            bins.push(make_bin(label, BinKind::Regular, g, b, totals, s));
        }
        if bins.is_empty() {
            bins.push(make_bin("(none)".into(), BinKind::Regular, 0, 0, totals, s));
        }
        categories.sort_by(|a, b| a.value.cmp(&b.value));
        let missing_bin = bins.len();
        bins.push(make_bin(
            "missing".into(),
            BinKind::Missing,
            mg,
            mb,
            totals,
            s,
        ));
        let unseen_bin = bins.len();
        bins.push(make_bin("unseen".into(), BinKind::Unseen, 0, 0, totals, s));
        let iv = bins.iter().map(|b| b.iv).sum();
        FeatureBinning {
            rule: BinRule::Categorical { categories },
            bins,
            missing_bin,
            unseen_bin: Some(unseen_bin),
            trend: Trend::Ascending,
            iv,
        }
    }

    /// Bin of a value; never panics. Type mismatches are converted: a `Cat` for a numeric feature
    /// is parsed as a number (missing if it does not parse), a `Num` for a categorical feature is
    /// looked up by its display form (e.g. `2`). Non-finite numbers are missing.
    pub fn bin_index(&self, v: &FeatureValue) -> usize {
        match (&self.rule, v) {
            (_, FeatureValue::Missing) => self.missing_bin,
            (BinRule::Numeric { splits }, FeatureValue::Num(x)) => self.numeric_bin(splits, *x),
            (BinRule::Numeric { splits }, FeatureValue::Cat(s)) => match s.trim().parse::<f64>() {
                Ok(x) => self.numeric_bin(splits, x),
                Err(_) => self.missing_bin,
            },
            (BinRule::Categorical { categories }, FeatureValue::Cat(s)) => {
                self.cat_bin(categories, s)
            }
            (BinRule::Categorical { categories }, FeatureValue::Num(x)) => {
                if x.is_finite() {
                    self.cat_bin(categories, &FeatureValue::Num(*x).to_string())
                } else {
                    self.missing_bin
                }
            }
        }
    }

    fn numeric_bin(&self, splits: &[f64], x: f64) -> usize {
        if x.is_finite() {
            splits.partition_point(|&s| s <= x)
        } else {
            self.missing_bin
        }
    }

    fn cat_bin(&self, categories: &[CategoryBin], s: &str) -> usize {
        match categories.binary_search_by(|c| c.value.as_str().cmp(s)) {
            Ok(k) => categories[k].bin,
            Err(_) => self.unseen_bin.unwrap_or(self.missing_bin),
        }
    }

    pub fn n_regular(&self) -> usize {
        self.bins
            .iter()
            .filter(|b| b.kind == BinKind::Regular)
            .count()
    }

    /// Structural checks used when loading an artifact.
    pub fn validate(&self) -> Result<(), String> {
        let nreg = self.n_regular();
        if nreg == 0 {
            return Err("no regular bin".into());
        }
        if self.bins[..nreg].iter().any(|b| b.kind != BinKind::Regular) {
            return Err("regular bins must come first".into());
        }
        if self.bins.get(self.missing_bin).map(|b| b.kind) != Some(BinKind::Missing) {
            return Err("missing_bin does not point at the missing bin".into());
        }
        for b in &self.bins {
            if !(b.woe.is_finite() && b.iv.is_finite() && b.event_rate.is_finite()) {
                return Err(format!("bin '{}' has a non-finite number", b.label));
            }
        }
        if !self.iv.is_finite() {
            return Err("non-finite IV".into());
        }
        match &self.rule {
            BinRule::Numeric { splits } => {
                if splits.len() + 1 != nreg {
                    return Err(format!("{} splits for {} regular bins", splits.len(), nreg));
                }
                if splits.iter().any(|s| !s.is_finite()) || splits.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err("bin edges are not finite and strictly increasing".into());
                }
                if self.unseen_bin.is_some() {
                    return Err("numeric feature with an unseen bin".into());
                }
            }
            BinRule::Categorical { categories } => {
                if categories.windows(2).any(|w| w[0].value >= w[1].value) {
                    return Err("categories are not sorted and unique".into());
                }
                if categories.iter().any(|c| c.bin >= nreg) {
                    return Err("category mapped to a non-regular bin".into());
                }
                match self.unseen_bin {
                    Some(u) if self.bins.get(u).map(|b| b.kind) == Some(BinKind::Unseen) => {}
                    _ => return Err("categorical feature without a valid unseen bin".into()),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regular_rates(fb: &FeatureBinning) -> Vec<f64> {
        fb.bins
            .iter()
            .filter(|b| b.kind == BinKind::Regular)
            .map(|b| b.event_rate)
            .collect()
    }

    /// x in 0..1000, bad probability rising with x (deterministic pattern), 10% missing mostly bad.
    fn synthetic() -> (Vec<Option<f64>>, Vec<u8>) {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for i in 0..2000u64 {
            let x = (i * 7919 % 1000) as f64;
            // bad if a pseudo-random number below a rising threshold
            let r = (i * 104729 % 997) as f64 / 997.0;
            let y = u8::from(r < 0.05 + 0.5 * x / 1000.0);
            if i % 10 == 0 {
                xs.push(None);
                ys.push(u8::from(i % 20 == 0));
            } else {
                xs.push(Some(x));
                ys.push(y);
            }
        }
        (xs, ys)
    }

    #[test]
    fn numeric_binning_is_monotonic_respects_min_share_and_has_missing_bin() {
        let (xs, ys) = synthetic();
        let cfg = BinningConfig::default();
        let fb = FeatureBinning::fit_numeric(&xs, &ys, &cfg);
        let rates = regular_rates(&fb);
        assert!(rates.len() >= 3, "expected several bins, got {rates:?}");
        assert!(rates.len() <= cfg.max_bins);
        assert!(
            rates.windows(2).all(|w| w[0] < w[1]),
            "not ascending: {rates:?}"
        );
        assert_eq!(fb.trend, Trend::Ascending);
        let n = xs.len() as f64;
        for b in fb.bins.iter().filter(|b| b.kind == BinKind::Regular) {
            assert!(
                b.count as f64 >= 0.05 * n,
                "bin {} too small: {}",
                b.label,
                b.count
            );
            assert!(b.bads >= cfg.min_bads && b.goods >= cfg.min_goods);
        }
        let miss = &fb.bins[fb.missing_bin];
        assert_eq!(miss.kind, BinKind::Missing);
        assert_eq!(miss.count, 200);
        assert_eq!(fb.bin_index(&FeatureValue::Missing), fb.missing_bin);
        assert_eq!(fb.bin_index(&FeatureValue::Num(f64::NAN)), fb.missing_bin);
        assert_eq!(fb.bin_index(&FeatureValue::Num(-1e9)), 0);
        assert_eq!(fb.bin_index(&FeatureValue::Num(1e9)), fb.n_regular() - 1);
        assert_eq!(
            fb.bin_index(&FeatureValue::Cat("1e9".into())),
            fb.n_regular() - 1
        );
        assert_eq!(
            fb.bin_index(&FeatureValue::Cat("abc".into())),
            fb.missing_bin
        );
        assert!(fb.validate().is_ok());
        // counts add up
        assert_eq!(fb.bins.iter().map(|b| b.count).sum::<u64>(), 2000);
        // descending signal is detected too
        let ys2: Vec<u8> = xs
            .iter()
            .zip(&ys)
            .map(|(x, &y)| if x.is_some() { 1 - y } else { y })
            .collect();
        let fb2 = FeatureBinning::fit_numeric(&xs, &ys2, &cfg);
        assert_eq!(fb2.trend, Trend::Descending);
        let r2 = regular_rates(&fb2);
        assert!(r2.windows(2).all(|w| w[0] > w[1]), "not descending: {r2:?}");
    }

    #[test]
    fn few_distinct_values_keep_their_own_prebins() {
        // values -2,-1,0,1,2 with rising bad rate; each has 20% share
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        for (k, v) in [-2.0, -1.0, 0.0, 1.0, 2.0].iter().enumerate() {
            for i in 0..200 {
                xs.push(Some(*v));
                ys.push(u8::from(i < 20 + 30 * k));
            }
        }
        let fb = FeatureBinning::fit_numeric(&xs, &ys, &BinningConfig::default());
        assert_eq!(
            fb.rule,
            BinRule::Numeric {
                splits: vec![-1.5, -0.5, 0.5, 1.5]
            }
        );
        assert_eq!(fb.bin_index(&FeatureValue::Num(-1.0)), 1);
        assert_eq!(fb.bin_index(&FeatureValue::Num(0.0)), 2);
    }

    #[test]
    fn max_bins_and_min_share_bind() {
        let (xs, ys) = synthetic();
        let cfg = BinningConfig {
            max_bins: 3,
            min_bin_share: 0.2,
            ..Default::default()
        };
        let fb = FeatureBinning::fit_numeric(&xs, &ys, &cfg);
        assert!(fb.n_regular() <= 3);
        for b in fb.bins.iter().filter(|b| b.kind == BinKind::Regular) {
            assert!(b.count >= 400);
        }
    }

    #[test]
    fn infeasible_constraints_give_a_single_bin() {
        let xs = vec![Some(1.0), Some(2.0), Some(3.0)];
        let ys = vec![0, 1, 0];
        let fb = FeatureBinning::fit_numeric(&xs, &ys, &BinningConfig::default());
        assert_eq!(fb.n_regular(), 1);
        assert!(fb.validate().is_ok());
        // empty input and all-missing input do not panic
        let fb = FeatureBinning::fit_numeric(&[], &[], &BinningConfig::default());
        assert!(fb.validate().is_ok());
        let fb = FeatureBinning::fit_numeric(&[None, None], &[0, 1], &BinningConfig::default());
        assert!(fb.validate().is_ok());
        assert_eq!(fb.bins[fb.missing_bin].count, 2);
    }

    #[test]
    fn woe_iv_hand_checked() {
        // totals G = 80, B = 20; bin A: 60 goods 5 bads; bin B: 20 goods 15 bads; s = 0.5
        let (wa, ia) = woe_iv(60, 5, 80, 20, 0.5);
        let pga: f64 = 60.5 / 80.0;
        let pba: f64 = 5.5 / 20.0;
        assert!((wa - (pga / pba).ln()).abs() < 1e-12);
        assert!((wa - 1.0116009116784799).abs() < 1e-12); // ln(0.75625/0.275)
        assert!((ia - (pga - pba) * wa).abs() < 1e-12);
        let (wb, ib) = woe_iv(20, 15, 80, 20, 0.5);
        assert!((wb - (20.5f64 / 80.0 / (15.5 / 20.0)).ln()).abs() < 1e-12);
        assert!(wb < 0.0 && ib > 0.0);
        // empty classes stay finite; empty bin is neutral
        let (w0, i0) = woe_iv(10, 0, 80, 20, 0.5);
        assert!(w0.is_finite() && i0.is_finite() && w0 > 0.0);
        assert_eq!(woe_iv(0, 0, 80, 20, 0.5), (0.0, 0.0));
        // IV of the fitted binning equals the sum of its bins on a tiny table
        let xs: Vec<Option<f64>> = (0..100)
            .map(|i| Some(if i < 65 { 0.0 } else { 1.0 }))
            .collect();
        let ys: Vec<u8> = (0..100)
            .map(|i| u8::from((60..65).contains(&i) || i >= 85))
            .collect();
        let cfg = BinningConfig {
            min_bads: 1,
            min_goods: 1,
            ..Default::default()
        };
        let fb = FeatureBinning::fit_numeric(&xs, &ys, &cfg);
        assert_eq!(fb.n_regular(), 2);
        assert!((fb.bins[0].woe - wa).abs() < 1e-12);
        assert!((fb.bins[1].woe - wb).abs() < 1e-12);
        assert!((fb.iv - (ia + ib)).abs() < 1e-12);
    }

    #[test]
    fn categorical_grouping_rare_pool_and_unseen() {
        let mut xs = Vec::new();
        let mut ys = Vec::new();
        // a: 10% bad, b: 12% bad, c: 50% bad, d: rare
        for (cat, n, bads) in [("a", 400, 40), ("b", 400, 48), ("c", 195, 98), ("d", 5, 5)] {
            for i in 0..n {
                xs.push(Some(cat.to_string()));
                ys.push(u8::from(i < bads));
            }
        }
        xs.push(None);
        ys.push(1);
        let fb = FeatureBinning::fit_categorical(&xs, &ys, &BinningConfig::default());
        assert!(fb.validate().is_ok());
        let ba = fb.bin_index(&FeatureValue::Cat("a".into()));
        let bc = fb.bin_index(&FeatureValue::Cat("c".into()));
        assert!(fb.bins[ba].event_rate < fb.bins[bc].event_rate);
        let unseen = fb.bin_index(&FeatureValue::Cat("zzz".into()));
        assert_eq!(Some(unseen), fb.unseen_bin);
        assert_eq!(fb.bins[unseen].woe, 0.0);
        assert_eq!(fb.bin_index(&FeatureValue::Missing), fb.missing_bin);
        assert_eq!(fb.bins[fb.missing_bin].count, 1);
        // the rare category d is pooled, and mapped to a regular bin
        let bd = fb.bin_index(&FeatureValue::Cat("d".into()));
        assert!(fb.bins[bd].kind == BinKind::Regular);
        let rates = regular_rates(&fb);
        assert!(rates.windows(2).all(|w| w[0] < w[1]), "{rates:?}");
    }
}
