//! Prometheus metrics, hand-rolled: fixed label sets kept in atomics (no locks on the call path),
//! rendered in the text exposition format by a tiny HTTP/1.1 responder on its own port.
//! No personal data: labels are method, gRPC code, decision and model version only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;

use crate::scoring::Decision;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Score,
    /// Counted once per stream item.
    ScoreStream,
    GetModelInfo,
    Ping,
    ReloadModels,
    ReloadRules,
    Status,
}

const METHODS: [Method; 7] = [
    Method::Score,
    Method::ScoreStream,
    Method::GetModelInfo,
    Method::Ping,
    Method::ReloadModels,
    Method::ReloadRules,
    Method::Status,
];

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Score => "Score",
            Method::ScoreStream => "ScoreStream",
            Method::GetModelInfo => "GetModelInfo",
            Method::Ping => "Ping",
            Method::ReloadModels => "ReloadModels",
            Method::ReloadRules => "ReloadRules",
            Method::Status => "Status",
        }
    }
    fn idx(self) -> usize {
        self as usize
    }
}

const N_CODES: usize = 17;
/// Latency bucket upper bounds, seconds.
const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Score bucket upper bounds.
const SCORE_BOUNDS: [i32; 12] = [400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 950];
const DECISIONS: [Decision; 3] = [Decision::Approve, Decision::Review, Decision::Reject];

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

struct Histogram<const N: usize> {
    /// Non-cumulative counts; index N = above the last bound.
    buckets: Vec<AtomicU64>,
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new() -> Self {
        Histogram {
            buckets: (0..=N).map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
    fn observe(&self, idx: usize, micro: u64) {
        if let Some(b) = self.buckets.get(idx) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_micro.fetch_add(micro, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
    fn render(
        &self,
        out: &mut String,
        name: &str,
        labels: &str,
        bounds: &[String],
        sum_scale: f64,
    ) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0u64;
        for (i, b) in bounds.iter().enumerate() {
            cum += self.buckets.get(i).map(|x| x.load(Relaxed)).unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.buckets.get(N).map(|x| x.load(Relaxed)).unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let sum = self.sum_micro.load(Relaxed) as f64 * sum_scale;
        let lb = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{lb} {sum}");
        let _ = writeln!(out, "{name}_count{lb} {}", self.count.load(Relaxed));
    }
}

pub struct Metrics {
    calls: [[AtomicU64; N_CODES]; 7],
    latency: Vec<Histogram<14>>,
    decisions: [AtomicU64; 3],
    scores: Histogram<12>,
    engine_ready: AtomicBool,
    velocity_up: AtomicBool,
    audit_writable: AtomicBool,
    /// The audit log's progress (set once it is open): the index's lag behind the journal.
    audit_progress: std::sync::OnceLock<Arc<crate::audit::AuditProgress>>,
    model_version: Mutex<String>,
    reloads_failed: AtomicU64,
    /// The engine whose rule counters are exported (set once it has loaded).
    engine: Mutex<Option<std::sync::Arc<crate::scoring::ScoringEngine>>>,
    /// Scores given per model version, over the PSI bins training recorded its distribution on
    /// (`eval::metrics::score_psi_edges`), for the live PSI gauge. The read lock on the call path
    /// is uncontended except for the moment a new version is first seen.
    live_scores: RwLock<HashMap<String, Arc<LiveScores>>>,
}

/// Counts per PSI bin of one model version's scores.
struct LiveScores {
    edges: Vec<f64>,
    counts: Vec<AtomicU64>,
}

impl LiveScores {
    fn new() -> LiveScores {
        let edges = crate::eval::metrics::score_psi_edges();
        let counts = (0..=edges.len()).map(|_| AtomicU64::new(0)).collect();
        LiveScores { edges, counts }
    }
    fn observe(&self, score: i32) {
        // Same binning as `eval::metrics::bin_shares`, so live and offline PSI agree.
        let i = self.edges.partition_point(|&e| e <= score as f64);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
    }
    fn shares(&self) -> (u64, Vec<f64>) {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let n: u64 = counts.iter().sum();
        let shares = counts
            .iter()
            .map(|&c| if n == 0 { 0.0 } else { c as f64 / n as f64 })
            .collect();
        (n, shares)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            calls: std::array::from_fn(|_| zeros()),
            latency: (0..METHODS.len()).map(|_| Histogram::new()).collect(),
            decisions: zeros(),
            scores: Histogram::new(),
            engine_ready: AtomicBool::new(false),
            velocity_up: AtomicBool::new(true),
            audit_writable: AtomicBool::new(true),
            audit_progress: std::sync::OnceLock::new(),
            model_version: Mutex::new(String::new()),
            reloads_failed: AtomicU64::new(0),
            engine: Mutex::new(None),
            live_scores: RwLock::new(HashMap::new()),
        }
    }
}

fn code_name(c: usize) -> String {
    match Code::from_i32(c as i32) {
        Code::Ok => "OK".to_string(),
        other => format!("{other:?}"),
    }
}

impl Metrics {
    /// One finished call (or stream item).
    pub fn observe(&self, method: Method, code: Code, elapsed: Duration) {
        let c = (code as usize).min(N_CODES - 1);
        self.calls[method.idx()][c].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let idx = LATENCY_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        if let Some(h) = self.latency.get(method.idx()) {
            h.observe(idx, elapsed.as_micros().min(u64::MAX as u128) as u64);
        }
    }

    /// One successful score by model `model_version`.
    pub fn observe_outcome(&self, model_version: &str, score: i32, decision: Decision) {
        self.observe_live_score(model_version, score);
        let d = DECISIONS.iter().position(|x| *x == decision).unwrap_or(0);
        self.decisions[d].fetch_add(1, Relaxed);
        let idx = SCORE_BOUNDS
            .iter()
            .position(|b| score <= *b)
            .unwrap_or(SCORE_BOUNDS.len());
        self.scores.observe(idx, score.max(0) as u64);
    }

    fn observe_live_score(&self, model_version: &str, score: i32) {
        let known = self
            .live_scores
            .read()
            .ok()
            .and_then(|m| m.get(model_version).cloned());
        let live = match known {
            Some(l) => l,
            None => match self.live_scores.write() {
                Ok(mut m) => m
                    .entry(model_version.to_string())
                    .or_insert_with(|| Arc::new(LiveScores::new()))
                    .clone(),
                Err(_) => return,
            },
        };
        live.observe(score);
    }

    /// Live PSI per model version: the scores given since start against the distribution the
    /// model recorded at training, over the same bins and formula as `sesame evaluate`.
    fn render_psi(&self, out: &mut String) {
        let engine = self.engine.lock().ok().and_then(|e| e.clone());
        let training: HashMap<String, crate::model::scorecard::ScoreDistribution> = engine
            .map(|e| e.training_score_distributions().into_iter().collect())
            .unwrap_or_default();
        let live: Vec<(String, Arc<LiveScores>)> = self
            .live_scores
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let clean = |s: &str| {
            s.chars()
                .filter(|c| !matches!(c, '"' | '\\' | '\n'))
                .collect::<String>()
        };
        out.push_str("# HELP sesame_scores_observed Scores given since start, by model version (the sample the live PSI is computed on).\n");
        out.push_str("# TYPE sesame_scores_observed gauge\n");
        let mut psi_lines = Vec::new();
        for (version, scores) in &live {
            let (n, shares) = scores.shares();
            let v = clean(version);
            let _ = writeln!(out, "sesame_scores_observed{{model_version=\"{v}\"}} {n}");
            let Some(dist) = training.get(version) else {
                continue;
            };
            if n == 0 || dist.edges != scores.edges {
                continue;
            }
            if let Some(psi) = crate::eval::metrics::psi_from_shares(&dist.shares, &shares) {
                psi_lines.push(format!("sesame_score_psi{{model_version=\"{v}\"}} {psi}"));
            }
        }
        out.push_str("# HELP sesame_score_psi Population stability index of the scores given since start against the model's training score distribution (< 0.1 stable, 0.1-0.25 watch, > 0.25 shifted; noisy under a few hundred scores).\n");
        out.push_str("# TYPE sesame_score_psi gauge\n");
        for l in psi_lines {
            out.push_str(&l);
            out.push('\n');
        }
    }

    /// Exports the rule and velocity-store counters of `engine` (read at each scrape).
    pub fn watch_rules(&self, engine: std::sync::Arc<crate::scoring::ScoringEngine>) {
        if let Ok(mut e) = self.engine.lock() {
            *e = Some(engine);
        }
    }

    pub fn set_engine(&self, ready: bool, model_version: &str) {
        self.engine_ready.store(ready, Relaxed);
        if let Ok(mut v) = self.model_version.lock() {
            *v = model_version.to_string();
        }
    }

    /// Whether the velocity store answered the health probe's last PING.
    pub fn set_velocity_up(&self, up: bool) {
        self.velocity_up.store(up, Relaxed);
    }

    /// Exports the index lag of this audit log (`sesame_audit_index_lag_records`).
    pub fn watch_audit(&self, progress: Arc<crate::audit::AuditProgress>) {
        let _ = self.audit_progress.set(progress);
    }

    /// Whether the audit log took the last write (a commit or the health probe's rewrite).
    pub fn set_audit_writable(&self, ok: bool) {
        self.audit_writable.store(ok, Relaxed);
    }

    pub fn reload_failed(&self) {
        self.reloads_failed.fetch_add(1, Relaxed);
    }

    /// Per-rule hits and evaluation errors, and shadow policies' decisions, of the rule set in
    /// force (counters restart when a new rule set is loaded).
    fn render_rules(&self, out: &mut String) {
        let engine = self.engine.lock().ok().and_then(|e| e.clone());
        let Some(engine) = engine else { return };
        let rules = engine.rules();
        let clean = |s: &str| {
            s.chars()
                .filter(|c| !matches!(c, '"' | '\\' | '\n'))
                .collect::<String>()
        };
        out.push_str(
            "# HELP sesame_rule_hits_total Requests on which a rule hit, by policy and rule.\n",
        );
        out.push_str("# TYPE sesame_rule_hits_total counter\n");
        let counters = rules.counters();
        for (policy, rule, hits, _) in &counters {
            let _ = writeln!(
                out,
                "sesame_rule_hits_total{{policy=\"{}\",rule=\"{}\"}} {hits}",
                clean(policy),
                clean(rule)
            );
        }
        out.push_str("# HELP sesame_rule_errors_total Requests on which a rule could not be evaluated (counted as no hit).\n");
        out.push_str("# TYPE sesame_rule_errors_total counter\n");
        for (policy, rule, _, errors) in &counters {
            let _ = writeln!(
                out,
                "sesame_rule_errors_total{{policy=\"{}\",rule=\"{}\"}} {errors}",
                clean(policy),
                clean(rule)
            );
        }
        out.push_str("# HELP sesame_shadow_decisions_total Decisions shadow policies would have given (never returned).\n");
        out.push_str("# TYPE sesame_shadow_decisions_total counter\n");
        for (policy, counts) in rules.shadow_counters() {
            for (d, n) in ["approve", "review", "reject"].iter().zip(counts) {
                let _ = writeln!(
                    out,
                    "sesame_shadow_decisions_total{{policy=\"{}\",decision=\"{d}\"}} {n}",
                    clean(&policy)
                );
            }
        }
        let _ = writeln!(out, "# HELP sesame_rules_info The rule set in force (value always 1).\n# TYPE sesame_rules_info gauge\nsesame_rules_info{{version=\"{}\"}} 1", clean(&rules.version));
    }

    /// Score calls refused because the velocity store did not answer (`in_process` never fails).
    fn render_velocity(&self, out: &mut String) {
        let engine = self.engine.lock().ok().and_then(|e| e.clone());
        let Some(engine) = engine else { return };
        out.push_str("# HELP sesame_velocity_store_errors_total Score calls refused (UNAVAILABLE) because the velocity store did not answer.\n");
        out.push_str("# TYPE sesame_velocity_store_errors_total counter\n");
        let _ = writeln!(
            out,
            "sesame_velocity_store_errors_total{{store=\"{}\"}} {}",
            engine.velocity_store_kind(),
            engine.velocity_store_errors()
        );
        out.push_str("# HELP sesame_velocity_store_up 1 while the velocity store answers the health probe (0: Score calls are refused and health is NOT_SERVING).\n");
        out.push_str("# TYPE sesame_velocity_store_up gauge\n");
        let _ = writeln!(
            out,
            "sesame_velocity_store_up{{store=\"{}\"}} {}",
            engine.velocity_store_kind(),
            u8::from(self.velocity_up.load(Relaxed))
        );
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP sesame_grpc_requests_total Finished gRPC calls (ScoreStream: per item) by method and status code.\n");
        out.push_str("# TYPE sesame_grpc_requests_total counter\n");
        for m in METHODS {
            for c in 0..N_CODES {
                let n = self.calls[m.idx()][c].load(Relaxed);
                if n > 0 || c == 0 {
                    let _ = writeln!(
                        out,
                        "sesame_grpc_requests_total{{method=\"{}\",code=\"{}\"}} {n}",
                        m.as_str(),
                        code_name(c)
                    );
                }
            }
        }
        out.push_str("# HELP sesame_grpc_request_duration_seconds Handling time of gRPC calls.\n");
        out.push_str("# TYPE sesame_grpc_request_duration_seconds histogram\n");
        let lat_bounds: Vec<String> = LATENCY_BOUNDS.iter().map(|b| b.to_string()).collect();
        for m in METHODS {
            if let Some(h) = self.latency.get(m.idx()) {
                h.render(
                    &mut out,
                    "sesame_grpc_request_duration_seconds",
                    &format!("method=\"{}\"", m.as_str()),
                    &lat_bounds,
                    1e-6,
                );
            }
        }
        out.push_str("# HELP sesame_decisions_total Decisions given.\n");
        out.push_str("# TYPE sesame_decisions_total counter\n");
        for (i, d) in DECISIONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "sesame_decisions_total{{decision=\"{}\"}} {}",
                d.as_str(),
                self.decisions[i].load(Relaxed)
            );
        }
        out.push_str("# HELP sesame_score Scores given (350-950).\n");
        out.push_str("# TYPE sesame_score histogram\n");
        let score_bounds: Vec<String> = SCORE_BOUNDS.iter().map(|b| b.to_string()).collect();
        self.scores
            .render(&mut out, "sesame_score", "", &score_bounds, 1.0);
        out.push_str("# HELP sesame_audit_writable 1 while the audit log takes writes (0: Score calls are refused and health is NOT_SERVING).\n# TYPE sesame_audit_writable gauge\n");
        let _ = writeln!(
            out,
            "sesame_audit_writable {}",
            u8::from(self.audit_writable.load(Relaxed))
        );
        if let Some(p) = self.audit_progress.get() {
            out.push_str("# HELP sesame_audit_index_lag_records Records in the audit journal not yet in its SQLite index (the index runs on idle CPU and catches up; `sesame audit` reads both).\n# TYPE sesame_audit_index_lag_records gauge\n");
            let _ = writeln!(out, "sesame_audit_index_lag_records {}", p.index_lag());
        }
        out.push_str("# HELP sesame_engine_ready 1 once the scoring engine is loaded.\n");
        out.push_str("# TYPE sesame_engine_ready gauge\n");
        let _ = writeln!(
            out,
            "sesame_engine_ready {}",
            u8::from(self.engine_ready.load(Relaxed))
        );
        out.push_str("# HELP sesame_model_info The champion model serving (value always 1).\n");
        out.push_str("# TYPE sesame_model_info gauge\n");
        let version = self
            .model_version
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let version: String = version
            .chars()
            .filter(|c| !matches!(c, '"' | '\\' | '\n'))
            .collect();
        let _ = writeln!(out, "sesame_model_info{{version=\"{version}\"}} 1");
        self.render_rules(&mut out);
        self.render_velocity(&mut out);
        self.render_psi(&mut out);
        out.push_str(
            "# HELP sesame_reloads_failed_total Reloads (admin or watcher) that were refused.\n",
        );
        out.push_str("# TYPE sesame_reloads_failed_total counter\n");
        let _ = writeln!(
            out,
            "sesame_reloads_failed_total {}",
            self.reloads_failed.load(Relaxed)
        );
        out
    }
}

/// Serves `GET /metrics` until `stop` turns true.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &metrics)).await;
        });
    }
}

async fn answer(mut stream: tokio::net::TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.observe(Method::Ping, Code::Ok, Duration::from_micros(300));
        m.observe(
            Method::Score,
            Code::InvalidArgument,
            Duration::from_millis(3),
        );
        m.observe_outcome("v1", 640, Decision::Approve);
        m.set_engine(true, "v1");
        let t = m.render();
        assert!(
            t.contains("sesame_grpc_requests_total{method=\"Ping\",code=\"OK\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("sesame_grpc_requests_total{method=\"Score\",code=\"InvalidArgument\"} 1")
        );
        assert!(t.contains(
            "sesame_grpc_request_duration_seconds_bucket{method=\"Ping\",le=\"0.0005\"} 1"
        ));
        assert!(t.contains(
            "sesame_grpc_request_duration_seconds_bucket{method=\"Score\",le=\"0.0025\"} 0"
        ));
        assert!(t.contains(
            "sesame_grpc_request_duration_seconds_bucket{method=\"Score\",le=\"0.005\"} 1"
        ));
        assert!(t.contains("sesame_score_bucket{le=\"600\"} 0"));
        assert!(t.contains("sesame_score_bucket{le=\"650\"} 1"));
        assert!(t.contains("sesame_decisions_total{decision=\"approve\"} 1"));
        assert!(t.contains("sesame_model_info{version=\"v1\"} 1"));
        assert!(t.contains("sesame_engine_ready 1"));
        assert!(t.contains("sesame_scores_observed{model_version=\"v1\"} 1"));
    }
}
