//! Evaluation report of a scorecard on a labelled sample: discrimination and calibration
//! metrics, score PSI against the training distribution, band / cut-off tables, IV and CSI per
//! feature; rendered as JSON and as a self-contained HTML page with inline SVG plots.
//!
//! Conventions as in [`super::metrics`]: metrics rank by the probability of default (higher =
//! riskier); scores are on the 350–950 scale (higher = safer).

use std::fmt::Write as _;

use serde::Serialize;

use crate::domain::{Band, Dataset};
use crate::model::Scorecard;

use super::metrics;

/// One model scored on one sample.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEval {
    pub model_version: String,
    pub n: usize,
    pub n_bad: usize,
    pub bad_rate: f64,
    pub auc: f64,
    pub ks: f64,
    pub gini: f64,
    pub log_loss: f64,
    pub brier: f64,
    /// PSI of this sample's scores against the model's training score distribution.
    pub psi: f64,
    pub bands: Vec<BandStat>,
    pub cutoffs: Vec<CutoffRow>,
    pub features: Vec<FeatureStat>,
    /// Per-row outputs, kept for the plots (not written to JSON).
    #[serde(skip)]
    pub scores: Vec<i32>,
    #[serde(skip)]
    pub pd: Vec<f64>,
    #[serde(skip)]
    pub labels: Vec<u8>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BandStat {
    pub band: Band,
    pub min: i32,
    pub max: i32,
    pub count: usize,
    pub n_bad: usize,
    /// `None` for an empty band.
    pub bad_rate: Option<f64>,
    pub mean_pd: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CutoffRow {
    /// Approve iff score >= cutoff.
    pub cutoff: i32,
    pub approved: usize,
    pub approval_rate: f64,
    /// Bad rate among the approved; `None` when nobody is approved.
    pub bad_rate_approved: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeatureStat {
    pub name: String,
    /// IV on the training sample, as recorded in the artifact.
    pub iv: f64,
    /// Characteristic stability index: bin shares here vs the training bin counts.
    pub csi: f64,
}

/// Cut-off step of the cut-off table, in score points.
pub const CUTOFF_STEP: i32 = 10;

/// Score `ds` (which must carry a target) with `sc` and compute every number of the report.
pub fn evaluate_model(sc: &Scorecard, ds: &Dataset) -> anyhow::Result<ModelEval> {
    let labels = ds
        .target
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the evaluation data has no target"))?;
    let results = sc.score_dataset(ds)?;
    let pd: Vec<f64> = results.iter().map(|r| r.pd).collect();
    let scores: Vec<i32> = results.iter().map(|r| r.score).collect();
    let s = metrics::summarize(&pd, &labels).ok_or_else(|| {
        anyhow::anyhow!(
            "metrics are undefined on this sample ({} rows, {} bad): it needs both goods and bads",
            labels.len(),
            labels.iter().filter(|&&l| l == 1).count()
        )
    })?;
    let dist = &sc.metrics.train_score_distribution;
    let score_f: Vec<f64> = scores.iter().map(|&x| x as f64).collect();
    let psi = metrics::psi_from_shares(&dist.shares, &metrics::bin_shares(&score_f, &dist.edges))
        .ok_or_else(|| {
        anyhow::anyhow!("the model's training score distribution is malformed")
    })?;

    let bands = Band::ALL
        .iter()
        .map(|&b| {
            let (min, max) = b.range();
            let rows: Vec<usize> = (0..scores.len())
                .filter(|&i| Band::of(scores[i]) == b)
                .collect();
            let count = rows.len();
            let n_bad = rows.iter().filter(|&&i| labels[i] == 1).count();
            let (bad_rate, mean_pd) = if count == 0 {
                (None, None)
            } else {
                (
                    Some(n_bad as f64 / count as f64),
                    Some(rows.iter().map(|&i| pd[i]).sum::<f64>() / count as f64),
                )
            };
            BandStat {
                band: b,
                min,
                max,
                count,
                n_bad,
                bad_rate,
                mean_pd,
            }
        })
        .collect();

    let n = scores.len();
    let cutoffs = (350..=950)
        .step_by(CUTOFF_STEP as usize)
        .map(|c| {
            let approved: Vec<usize> = (0..n).filter(|&i| scores[i] >= c).collect();
            let bads = approved.iter().filter(|&&i| labels[i] == 1).count();
            CutoffRow {
                cutoff: c,
                approved: approved.len(),
                approval_rate: approved.len() as f64 / n as f64,
                bad_rate_approved: if approved.is_empty() {
                    None
                } else {
                    Some(bads as f64 / approved.len() as f64)
                },
            }
        })
        .collect();

    let mut features = Vec::with_capacity(sc.features.len());
    for f in &sc.features {
        let col = ds.column(&f.meta.name).ok_or_else(|| {
            anyhow::anyhow!("the data lacks the model's feature '{}'", f.meta.name)
        })?;
        let bins = &f.binning.bins;
        let total: u64 = bins.iter().map(|b| b.count).sum();
        let expected: Vec<f64> = bins
            .iter()
            .map(|b| {
                if total == 0 {
                    0.0
                } else {
                    b.count as f64 / total as f64
                }
            })
            .collect();
        let mut counts = vec![0usize; bins.len()];
        for i in 0..n {
            let b = f.binning.bin_index(&col.values.value(i));
            if let Some(c) = counts.get_mut(b) {
                *c += 1;
            }
        }
        let actual: Vec<f64> = counts.iter().map(|&c| c as f64 / n as f64).collect();
        features.push(FeatureStat {
            name: f.meta.name.clone(),
            iv: f.binning.iv,
            csi: metrics::psi_from_shares(&expected, &actual).unwrap_or(0.0),
        });
    }

    Ok(ModelEval {
        model_version: sc.model_version.clone(),
        n: s.n,
        n_bad: s.n_bad,
        bad_rate: s.n_bad as f64 / s.n as f64,
        auc: s.auc,
        ks: s.ks,
        gini: s.gini,
        log_loss: s.log_loss,
        brier: s.brier,
        psi,
        bands,
        cutoffs,
        features,
        scores,
        pd,
        labels,
    })
}

/// The whole report: the evaluated model's numbers at the top level, the challenger's under
/// `compare`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model_dir: String,
    pub data: String,
    pub split: String,
    #[serde(flatten)]
    pub model: ModelEval,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare_model_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<ModelEval>,
}

/// A metric threshold of `--fail-below`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub metric: &'static str,
    pub min: f64,
}

/// Metrics `--fail-below` accepts (higher is better for all of them).
pub const THRESHOLD_METRICS: [&str; 3] = ["auc", "ks", "gini"];

/// Parse `auc=0.70,ks=0.3`.
pub fn parse_thresholds(s: &str) -> anyhow::Result<Vec<Threshold>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--fail-below: '{part}' is not METRIC=VALUE (e.g. auc=0.70,ks=0.3)")
        })?;
        let k = k.trim().to_ascii_lowercase();
        let metric = THRESHOLD_METRICS
            .iter()
            .copied()
            .find(|m| *m == k)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--fail-below: unknown metric '{k}' (known: {})",
                    THRESHOLD_METRICS.join(", ")
                )
            })?;
        let min: f64 = v
            .trim()
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| anyhow::anyhow!("--fail-below: '{v}' is not a number"))?;
        out.push(Threshold { metric, min });
    }
    if out.is_empty() {
        anyhow::bail!("--fail-below: no thresholds given (e.g. auc=0.70,ks=0.3)");
    }
    Ok(out)
}

/// The thresholds `m` misses, as readable lines.
pub fn missed(m: &ModelEval, thresholds: &[Threshold]) -> Vec<String> {
    thresholds
        .iter()
        .filter_map(|t| {
            let got = match t.metric {
                "auc" => m.auc,
                "ks" => m.ks,
                _ => m.gini,
            };
            (got < t.min).then(|| format!("{} {:.4} < {}", t.metric, got, t.min))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTML

/// One line on a chart.
struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    markers: bool,
    points: Vec<(f64, f64)>,
}

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart in inline SVG: axes with ticks and labels, a title and a legend.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    series: &[Series],
) -> String {
    let (w, h) = (560.0, 380.0);
    let (l, r, t, b) = (64.0, 170.0, 34.0, 52.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xs = |x: f64| l + (x - x0) / (x1 - x0) * pw;
    let ys = |y: f64| t + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        esc(title)
    );
    // grid and ticks
    for k in 0..=5 {
        let fx = x0 + (x1 - x0) * k as f64 / 5.0;
        let fy = y0 + (y1 - y0) * k as f64 / 5.0;
        let (px, py) = (xs(fx), ys(fy));
        let _ = write!(
            s,
            r##"<line x1="{px:.1}" y1="{t}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            t + ph,
            t + ph + 15.0,
            tick(fx)
        );
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            l + pw,
            l - 5.0,
            py + 4.0,
            tick(fy)
        );
    }
    // axes
    let _ = write!(
        s,
        r##"<g class="axes"><line x1="{l}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000"/><line x1="{l}" y1="{t}" x2="{l}" y2="{:.1}" stroke="#000"/></g>"##,
        t + ph,
        l + pw,
        t + ph,
        t + ph
    );
    let _ = write!(
        s,
        r#"<text class="x-label" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
        l + pw / 2.0,
        h - 12.0,
        esc(x_label)
    );
    let _ = write!(
        s,
        r#"<text class="y-label" transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle" font-size="12">{}</text>"#,
        t + ph / 2.0,
        esc(y_label)
    );
    // series
    for se in series {
        let pts: Vec<String> = se
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", xs(x), ys(y)))
            .collect();
        let dash = if se.dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"><title>{}</title></polyline>"#,
            se.color,
            pts.join(" "),
            esc(&se.name)
        );
        if se.markers {
            for p in &pts {
                if let Some((x, y)) = p.split_once(',') {
                    let _ = write!(
                        s,
                        r#"<circle cx="{x}" cy="{y}" r="3" fill="{}"/>"#,
                        se.color
                    );
                }
            }
        }
    }
    // legend
    let _ = write!(s, r#"<g class="legend">"#);
    for (k, se) in series.iter().enumerate() {
        let y = t + 10.0 + 18.0 * k as f64;
        let x = l + pw + 12.0;
        let dash = if se.dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            x + 22.0,
            se.color,
            x + 27.0,
            y + 4.0,
            esc(&se.name)
        );
    }
    s.push_str("</g></svg>");
    s
}

fn tick(v: f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// ROC points (FPR, TPR), thresholds sweeping PD from the riskiest down; ties form one point.
pub fn roc_points(pd: &[f64], labels: &[u8]) -> Vec<(f64, f64)> {
    let n_pos = labels.iter().filter(|&&l| l == 1).count().max(1) as f64;
    let n_neg = labels.iter().filter(|&&l| l == 0).count().max(1) as f64;
    let mut idx: Vec<usize> = (0..pd.len()).collect();
    idx.sort_by(|&a, &b| pd[b].total_cmp(&pd[a]));
    let mut out = vec![(0.0, 0.0)];
    let (mut tp, mut fp, mut i) = (0usize, 0usize, 0usize);
    while i < idx.len() {
        let p = pd[idx[i]];
        while i < idx.len() && pd[idx[i]] == p {
            if labels[idx[i]] == 1 {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        out.push((fp as f64 / n_neg, tp as f64 / n_pos));
    }
    thin(out, 400)
}

/// Keep at most about `max` points (first and last always kept).
fn thin(v: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if v.len() <= max {
        return v;
    }
    let step = v.len().div_ceil(max);
    let last = v[v.len() - 1];
    let mut out: Vec<(f64, f64)> = v.into_iter().step_by(step).collect();
    if out.last() != Some(&last) {
        out.push(last);
    }
    out
}

/// Cumulative share of bads and of goods with score <= s, for s = 350..=950.
fn cumulative_by_score(scores: &[i32], labels: &[u8]) -> (Vec<(f64, f64)>, Vec<(f64, f64)>) {
    let n_bad = labels.iter().filter(|&&l| l == 1).count().max(1) as f64;
    let n_good = labels.iter().filter(|&&l| l == 0).count().max(1) as f64;
    let mut bad = [0usize; 601];
    let mut good = [0usize; 601];
    for (&s, &l) in scores.iter().zip(labels) {
        let k = (s.clamp(350, 950) - 350) as usize;
        if l == 1 {
            bad[k] += 1
        } else {
            good[k] += 1
        }
    }
    let (mut cb, mut cg) = (0usize, 0usize);
    let mut vb = Vec::new();
    let mut vg = Vec::new();
    for k in 0..=600 {
        cb += bad[k];
        cg += good[k];
        let x = 350.0 + k as f64;
        vb.push((x, cb as f64 / n_bad));
        vg.push((x, cg as f64 / n_good));
    }
    (vb, vg)
}

/// Share of goods and of bads per 25-point score bin (x = bin centre).
fn score_histogram(scores: &[i32], labels: &[u8]) -> (Vec<(f64, f64)>, Vec<(f64, f64)>) {
    const W: i32 = 25;
    let nb = (600 / W) as usize;
    let n_bad = labels.iter().filter(|&&l| l == 1).count().max(1) as f64;
    let n_good = labels.iter().filter(|&&l| l == 0).count().max(1) as f64;
    let mut bad = vec![0usize; nb];
    let mut good = vec![0usize; nb];
    for (&s, &l) in scores.iter().zip(labels) {
        let k = (((s.clamp(350, 950) - 350) / W) as usize).min(nb - 1);
        if l == 1 {
            bad[k] += 1
        } else {
            good[k] += 1
        }
    }
    let x = |k: usize| 350.0 + W as f64 * (k as f64 + 0.5);
    (
        (0..nb).map(|k| (x(k), good[k] as f64 / n_good)).collect(),
        (0..nb).map(|k| (x(k), bad[k] as f64 / n_bad)).collect(),
    )
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "–".into())
}

fn summary_table(models: &[(&str, &ModelEval)]) -> String {
    let mut s = String::from("<table><tr><th>model</th><th>version</th><th>n</th><th>bad rate</th><th>AUC</th><th>KS</th><th>Gini</th><th>log loss</th><th>Brier</th><th>PSI</th></tr>");
    for (name, m) in models {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            esc(name), esc(&m.model_version), m.n, m.bad_rate, m.auc, m.ks, m.gini, m.log_loss, m.brier, m.psi
        );
    }
    s.push_str("</table>");
    s
}

fn band_table(name: &str, m: &ModelEval) -> String {
    let mut s = format!("<h3>{}: bands</h3><table><tr><th>band</th><th>scores</th><th>count</th><th>bad rate</th><th>mean predicted PD</th></tr>", esc(name));
    for b in &m.bands {
        let _ = write!(
            s,
            "<tr><td>{:?}</td><td>{}–{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            b.band,
            b.min,
            b.max,
            b.count,
            fmt_opt(b.bad_rate),
            fmt_opt(b.mean_pd)
        );
    }
    s.push_str("</table>");
    s
}

fn cutoff_table(name: &str, m: &ModelEval) -> String {
    let mut s = format!("<h3>{}: cut-offs (approve iff score ≥ cut-off)</h3><table><tr><th>cut-off</th><th>approved</th><th>approval rate</th><th>bad rate among approved</th></tr>", esc(name));
    for c in m
        .cutoffs
        .iter()
        .filter(|c| c.cutoff >= 450 && c.cutoff <= 850)
    {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{}</td></tr>",
            c.cutoff,
            c.approved,
            c.approval_rate,
            fmt_opt(c.bad_rate_approved)
        );
    }
    s.push_str("</table>");
    s
}

fn feature_table(name: &str, m: &ModelEval) -> String {
    let mut s = format!("<h3>{}: features (IV from training, CSI here vs training)</h3><table><tr><th>feature</th><th>IV</th><th>CSI</th></tr>", esc(name));
    for f in &m.features {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            esc(&f.name),
            f.iv,
            f.csi
        );
    }
    s.push_str("</table>");
    s
}

/// The self-contained HTML page (no scripts, no external resources).
pub fn render_html(r: &Report) -> String {
    let mut models: Vec<(&str, &ModelEval)> = vec![("champion", &r.model)];
    if let Some(c) = &r.compare {
        models.push(("challenger", c));
    }
    let label = |name: &str, m: &ModelEval| format!("{name} {}", m.model_version);

    let mut roc = Vec::new();
    let mut ks = Vec::new();
    let mut dist = Vec::new();
    let mut cal = Vec::new();
    for (k, (name, m)) in models.iter().enumerate() {
        let c0 = COLORS[(2 * k) % COLORS.len()];
        let c1 = COLORS[(2 * k + 1) % COLORS.len()];
        let dashed = k > 0;
        roc.push(Series {
            name: format!("{} (AUC {:.3})", label(name, m), m.auc),
            color: c0,
            dashed,
            markers: false,
            points: roc_points(&m.pd, &m.labels),
        });
        let (cb, cg) = cumulative_by_score(&m.scores, &m.labels);
        ks.push(Series {
            name: format!("{name}: bads"),
            color: c1,
            dashed,
            markers: false,
            points: cb,
        });
        ks.push(Series {
            name: format!("{name}: goods"),
            color: c0,
            dashed,
            markers: false,
            points: cg,
        });
        let (hg, hb) = score_histogram(&m.scores, &m.labels);
        dist.push(Series {
            name: format!("{name}: goods"),
            color: c0,
            dashed,
            markers: true,
            points: hg,
        });
        dist.push(Series {
            name: format!("{name}: bads"),
            color: c1,
            dashed,
            markers: true,
            points: hb,
        });
        cal.push(Series {
            name: label(name, m),
            color: c0,
            dashed,
            markers: true,
            points: m
                .bands
                .iter()
                .filter_map(|b| Some((b.mean_pd?, b.bad_rate?)))
                .collect(),
        });
    }
    roc.push(Series {
        name: "random".into(),
        color: "#999",
        dashed: true,
        markers: false,
        points: vec![(0.0, 0.0), (1.0, 1.0)],
    });
    let max_pd = models
        .iter()
        .flat_map(|(_, m)| m.bands.iter().flat_map(|b| [b.mean_pd, b.bad_rate]))
        .flatten()
        .fold(0.0f64, f64::max);
    let cal_max = ((max_pd * 10.0).ceil() / 10.0).clamp(0.1, 1.0);
    cal.push(Series {
        name: "perfect calibration".into(),
        color: "#999",
        dashed: true,
        markers: false,
        points: vec![(0.0, 0.0), (cal_max, cal_max)],
    });
    let dist_max = dist
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let dist_max = ((dist_max * 20.0).ceil() / 20.0).max(0.05);

    let mut h = String::new();
    h.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sesame evaluation</title><style>body{font-family:sans-serif;margin:24px;max-width:1200px}table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}.charts{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>");
    let _ = write!(
        h,
        "<h1>Model evaluation</h1><p>model <code>{}</code> on <code>{}</code>, split <b>{}</b>{}</p>",
        esc(&r.model_dir),
        esc(&r.data),
        esc(&r.split),
        r.compare_model_dir
            .as_deref()
            .map(|c| format!(", challenger <code>{}</code>", esc(c)))
            .unwrap_or_default()
    );
    h.push_str(&summary_table(&models));
    h.push_str("<div class=\"charts\">");
    h.push_str(&line_chart(
        "ROC curve",
        "False positive rate (goods flagged)",
        "True positive rate (bads caught)",
        (0.0, 1.0),
        (0.0, 1.0),
        &roc,
    ));
    h.push_str(&line_chart(
        "KS: cumulative distributions by score",
        "Score",
        "Cumulative share with score ≤ x",
        (350.0, 950.0),
        (0.0, 1.0),
        &ks,
    ));
    h.push_str(&line_chart(
        "Score distribution by outcome",
        "Score (25-point bins)",
        "Share of the class",
        (350.0, 950.0),
        (0.0, dist_max),
        &dist,
    ));
    h.push_str(&line_chart(
        "Calibration by band",
        "Mean predicted PD",
        "Observed bad rate",
        (0.0, cal_max),
        (0.0, cal_max),
        &cal,
    ));
    h.push_str("</div>");
    for (name, m) in &models {
        h.push_str(&band_table(name, m));
    }
    for (name, m) in &models {
        h.push_str(&cutoff_table(name, m));
    }
    for (name, m) in &models {
        h.push_str(&feature_table(name, m));
    }
    h.push_str("</body></html>\n");
    h
}
