//! Seeded synthetic population. See `datasets/README.md` for the generating process.
//!
//! Two phases:
//! 1. traits for every user (latent creditworthiness and income, identity facts, fraud rings,
//!    true PD and label) and the relation graph — a few hundred bytes per user;
//! 2. event tables (transactions, behaviors, judgments), generated per chunk of users in
//!    user-id order and appended to batched Parquet writers, so memory stays bounded.
//!
//! Every random draw comes from a ChaCha8 stream keyed by (seed, purpose) and indexed by the
//! user's index, so output does not depend on chunking or the number of threads.

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution, Gamma, StandardNormal};

use super::schema::{
    self, EDUCATION_LEVELS, EVENTS, MERCHANT_CATEGORIES, RELATION_KINDS, TX_KINDS,
};
use super::util::{
    col_bool, col_date, col_date_opt, col_f64, col_i32, col_i32_opt, col_str, col_str_opt, col_ts,
    date_of, day_number, ymd_day, StagedDir, TableWriter, MS_PER_DAY,
};
use super::DatasetError;

pub const DEFAULT_CHUNK_USERS: usize = 25_000;
/// Length of the observed history before as-of, in days.
pub const HISTORY_DAYS: i32 = 730;
/// Upper bound on --users (user indices are u32 and ids must stay unique).
pub const MAX_USERS: u64 = 100_000_000;

#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub users: u64,
    pub seed: u64,
    pub out: PathBuf,
    pub as_of: NaiveDate,
    pub chunk_users: usize,
    pub progress: bool,
}

impl GenerateConfig {
    pub fn new(users: u64, seed: u64, out: impl Into<PathBuf>) -> Self {
        GenerateConfig {
            users,
            seed,
            out: out.into(),
            as_of: super::demo_as_of(),
            chunk_users: DEFAULT_CHUNK_USERS,
            progress: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GenerateSummary {
    pub out: PathBuf,
    pub users: u64,
    pub transactions: u64,
    pub behaviors: u64,
    pub relations: u64,
    pub judgments: u64,
    pub fraud_rings: usize,
    pub ring_members: usize,
    pub defaults: u64,
    pub default_rate: f64,
    /// AUC of true_pd against defaulted; NaN when only one class occurs (tiny populations).
    pub oracle_auc: f64,
    pub seconds: f64,
}

impl fmt::Display for GenerateSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "generated {} users -> {}: transactions={} behaviors={} relations={} judgments={} fraud_rings={} ({} accounts) \
             defaults={} default_rate={:.2}% oracle_auc={} in {:.1}s",
            self.users,
            self.out.display(),
            self.transactions,
            self.behaviors,
            self.relations,
            self.judgments,
            self.fraud_rings,
            self.ring_members,
            self.defaults,
            100.0 * self.default_rate,
            if self.oracle_auc.is_finite() { format!("{:.4}", self.oracle_auc) } else { "n/a".to_string() },
            self.seconds
        )
    }
}

// ---- randomness ------------------------------------------------------------------

const P_TRAITS: u64 = 1;
const P_EVENTS: u64 = 2;
const P_GRAPH: u64 = 3;
const P_RINGS: u64 = 4;
const P_LABELS: u64 = 5;
const P_IDS: u64 = 6;
const P_DEVICES: u64 = 7;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The random stream of one (seed, purpose, index): independent across purposes and indices.
fn rng_for(seed: u64, purpose: u64, index: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(purpose)));
    r.set_stream(index);
    r
}

const MASK48: u64 = (1 << 48) - 1;

/// A keyed bijection of the 48-bit integers: distinct indices give distinct opaque ids.
fn permute48(seed: u64, purpose: u64, index: u64) -> u64 {
    let k = splitmix64(seed ^ splitmix64(purpose.wrapping_add(0x51)));
    let mut x = index & MASK48;
    for r in 0..4u32 {
        x ^= (k >> (r * 8)) & MASK48;
        x = x.wrapping_mul(0x9E37_79B9_7F4B) & MASK48; // odd multiplier: invertible mod 2^48
        x ^= x >> 21;
        x = x.wrapping_mul(0xD6E8_FEB8_6659) & MASK48; // odd as well
        x ^= x >> 19;
    }
    x
}

fn hex_id(prefix: char, key: u64) -> String {
    format!("{prefix}{:012x}", key & MASK48)
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Knuth's Poisson sampler; fine for the small rates used here.
fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> usize {
    if lambda <= 0.0 || !lambda.is_finite() {
        return 0;
    }
    let lambda = lambda.min(500.0);
    if lambda > 60.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as usize;
    }
    let l = (-lambda).exp();
    let mut k = 0usize;
    let mut p = 1.0;
    loop {
        p *= rng.random::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

fn exp_mean(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() * mean
}

fn pick_weighted(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

// ---- phase 1: traits ---------------------------------------------------------------

const NO_RING: u32 = u32::MAX;

const CITIES: [&[&str]; 4] = [
    &["Beijing", "Shanghai", "Guangzhou", "Shenzhen"],
    &[
        "Hangzhou",
        "Chengdu",
        "Wuhan",
        "Nanjing",
        "Xian",
        "Suzhou",
        "Tianjin",
        "Chongqing",
    ],
    &[
        "Wuxi", "Foshan", "Hefei", "Kunming", "Nanning", "Xuzhou", "Taiyuan", "Lanzhou",
    ],
    &[
        "Zhuzhou", "Yichang", "Baoding", "Ganzhou", "Luzhou", "Zunyi", "Shangrao", "Tongren",
    ],
];
const N_CITIES: usize = 28;

fn city_name(c: u16) -> &'static str {
    let mut c = c as usize % N_CITIES;
    for tier in CITIES {
        if c < tier.len() {
            return tier[c];
        }
        c -= tier.len();
    }
    CITIES[0][0]
}

fn city_of_tier(rng: &mut ChaCha8Rng, tier: i32) -> u16 {
    let offset: usize = CITIES[..(tier as usize - 1)].iter().map(|t| t.len()).sum();
    (offset + rng.random_range(0..CITIES[tier as usize - 1].len())) as u16
}

#[derive(Debug, Clone)]
struct User {
    key: u64,
    signup: i32,
    age: i32,
    tier: i32,
    edu: u8,
    real_name: bool,
    edu_verified: bool,
    ss_months: i32,
    hf_months: i32,
    phone_tenure: i32,
    income_band: Option<i32>,
    /// Latent creditworthiness (≈ standard normal; higher = safer).
    credit: f64,
    /// Monthly income in CNY (latent; the declared band is a noisy view of it).
    income: f64,
    formal_job: bool,
    home_city: u16,
    ring: u32,
    true_pd: f64,
    defaulted: bool,
}

impl User {
    /// 0..1, higher = riskier: the knob most behaviours are driven by.
    fn risk(&self) -> f64 {
        sigmoid(-1.5 * self.credit)
    }
}

fn user_traits(seed: u64, i: u64, as_of: i32) -> User {
    let mut rng = rng_for(seed, P_TRAITS, i);
    let r = &mut rng;
    let age = 18 + (47.0 * Beta::new(2.0, 3.0).map(|b| b.sample(r)).unwrap_or(0.4)) as i32;
    let tier = 1 + pick_weighted(r, &[0.12, 0.23, 0.30, 0.35]) as i32;
    let edu_score = 0.35 * (2.5 - tier as f64) - 0.012 * (age as f64 - 35.0) + normal(r);
    let edu = match edu_score {
        x if x < -1.0 => 0u8,
        x if x < -0.2 => 1,
        x if x < 0.55 => 2,
        x if x < 1.35 => 3,
        _ => 4,
    };
    let inc_latent = 0.3 * (edu as f64 - 1.8) + 0.25 * (2.5 - tier as f64)
        - 0.0012 * (age as f64 - 42.0).powi(2)
        + 0.25
        + 0.6 * normal(r);
    let income = (6500.0 * (0.55 * inc_latent).exp()).max(1200.0);
    let credit = 0.55 * inc_latent
        + 0.018 * (age as f64 - 37.0)
        + 0.08 * (edu as f64 - 1.8)
        + 0.82 * normal(r);
    let risk = sigmoid(-1.5 * credit);

    let recent = r.random_bool(0.22 + 0.2 * risk);
    let signup = if recent {
        as_of - r.random_range(20..HISTORY_DAYS)
    } else {
        as_of - r.random_range(HISTORY_DAYS..3000)
    };

    let real_name = r.random_bool(sigmoid(2.3 + 0.9 * credit));
    let edu_verified = r.random_bool(sigmoid(-0.6 + 0.35 * edu as f64 + 0.5 * credit));
    let working_months = ((age - 18) * 12).max(1);
    let formal_job = r.random_bool(sigmoid(
        0.2 + 1.1 * inc_latent + 0.5 * credit - 0.25 * (tier as f64 - 2.5),
    ));
    let ss_months = if formal_job {
        let g = Gamma::new(2.0, 14.0 + 28.0 * sigmoid(credit))
            .map(|g| g.sample(r))
            .unwrap_or(24.0);
        (g.round() as i32).clamp(1, working_months)
    } else if r.random_bool(0.15) {
        (exp_mean(r, 10.0).round() as i32).clamp(1, working_months)
    } else {
        0
    };
    let hf_months = if formal_job
        && r.random_bool(sigmoid(-0.4 + 0.9 * inc_latent + 0.6 * (2.5 - tier as f64)))
    {
        ((ss_months as f64) * r.random_range(0.5..1.0)).round() as i32
    } else {
        0
    };
    let phone_tenure = ((exp_mean(r, 24.0 + 60.0 * sigmoid(1.2 * credit))).round() as i32 + 1)
        .min(((age - 15) * 12).max(1));
    let declared = (income.ln() + 0.18 * normal(r)).exp();
    let band = 1 + [3000.0, 5000.0, 8000.0, 12000.0, 20000.0]
        .iter()
        .filter(|&&t| declared >= t)
        .count() as i32;
    let income_band = if r.random_bool(0.10 + 0.10 * risk) {
        None
    } else {
        Some(band)
    };
    let home_city = city_of_tier(r, tier);

    User {
        key: permute48(seed, P_IDS, i),
        signup,
        age,
        tier,
        edu,
        real_name,
        edu_verified,
        ss_months,
        hf_months,
        phone_tenure,
        income_band,
        credit,
        income,
        formal_job,
        home_city,
        ring: NO_RING,
        true_pd: 0.0,
        defaulted: false,
    }
}

#[derive(Debug, Clone)]
struct Ring {
    members: Vec<u32>,
    /// Devices shared by the ring (device numbers, see `device_key`).
    devices: Vec<u64>,
    burst_start: i32,
    /// Whether this ring busts out in the label window (a shared, unobserved shock).
    busts: bool,
}

/// Fraud rings: ~0.06% of N rings of 5–15 accounts created in a burst of days.
fn make_rings(seed: u64, users: &mut [User], as_of: i32) -> Vec<Ring> {
    let n = users.len();
    let n_rings = (n as f64 * 0.0006).round() as usize;
    let mut rng = rng_for(seed, P_RINGS, 0);
    let mut rings = Vec::with_capacity(n_rings);
    for r in 0..n_rings {
        let size = rng.random_range(5..=15usize).min(n / 10);
        let burst_start = as_of - rng.random_range(45..540);
        let n_dev = rng.random_range(1..=3u64);
        let devices = (0..n_dev).map(|j| (r as u64 * 4 + j) << 6).collect();
        let mut members = Vec::with_capacity(size);
        let mut tries = 0;
        while members.len() < size && tries < size * 50 {
            tries += 1;
            let m = rng.random_range(0..n) as u32;
            let u = &mut users[m as usize];
            if u.ring != NO_RING {
                continue;
            }
            u.ring = r as u32;
            // Synthetic or bought identities: fresh accounts, fresh phones, no contribution history.
            u.signup = burst_start + rng.random_range(0..=6);
            u.phone_tenure = rng.random_range(1..=6);
            u.real_name = true;
            u.edu_verified = false;
            if rng.random_bool(0.8) {
                u.ss_months = 0;
                u.hf_months = 0;
                u.formal_job = false;
            }
            members.push(m);
        }
        rings.push(Ring {
            members,
            devices,
            burst_start,
            busts: rng.random_bool(RING_BUST_RATE),
        });
    }
    rings
}

/// Device number → opaque device id. User devices are `index << 6 | k` with k ≥ 1,
/// ring devices have k = 0, so the bijection keeps them all distinct.
fn device_key(seed: u64, n: u64) -> u64 {
    permute48(seed, P_DEVICES, n)
}

/// Noise of the realised default logit that nothing at as-of reveals.
const UNOBSERVED_SD: f64 = 0.75;
/// Share of fraud rings that bust out in the label window (a future, shared shock).
const RING_BUST_RATE: f64 = 0.75;

/// E[sigmoid(x + sd·Z)], Z ~ N(0, 1), by the probit approximation (error < 0.02 in probability).
fn expected_sigmoid(x: f64, sd: f64) -> f64 {
    sigmoid(x / (1.0 + std::f64::consts::PI * sd * sd / 8.0).sqrt())
}

/// The label is drawn from the realised logit: latent creditworthiness, ring membership, the
/// ring's bust-out shock and unobserved noise. `true_pd` is the probability of default given what
/// exists at as-of (creditworthiness and ring membership), with the future shock and the noise
/// integrated out — so the oracle is a ceiling a model can approach, not one it cannot see past.
fn assign_labels(seed: u64, users: &mut [User], rings: &[Ring]) {
    for (i, u) in users.iter_mut().enumerate() {
        let mut rng = rng_for(seed, P_LABELS, i as u64);
        let unobserved = normal(&mut rng);
        let base = -3.35 - 1.35 * u.credit;
        let (realised, pd) = if u.ring != NO_RING {
            let shock = if rings[u.ring as usize].busts {
                4.5
            } else {
                1.5
            };
            let pd = RING_BUST_RATE * expected_sigmoid(base + 4.5, UNOBSERVED_SD)
                + (1.0 - RING_BUST_RATE) * expected_sigmoid(base + 1.5, UNOBSERVED_SD);
            (base + shock, pd)
        } else {
            (base, expected_sigmoid(base, UNOBSERVED_SD))
        };
        u.true_pd = pd;
        u.defaulted = rng.random_bool(sigmoid(realised + UNOBSERVED_SD * unobserved));
    }
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    a: u32,
    b: u32,
    kind: u8,
    since: i32,
}

/// Relation graph with homophily: partners are drawn close in a noisy creditworthiness rank,
/// plus random links; rings are fully connected by `shared_device` edges.
fn make_edges(seed: u64, users: &[User], rings: &[Ring], pos: &[u32], as_of: i32) -> Vec<Edge> {
    let n = users.len();
    let mut edges: Vec<Edge> = Vec::with_capacity(n * 3 / 2 + 16);
    let since = |rng: &mut ChaCha8Rng, a: usize, b: usize| {
        let lo = users[a].signup.max(users[b].signup).min(as_of - 1);
        rng.random_range(lo..as_of)
    };
    let mut rng = rng_for(seed, P_GRAPH, u64::MAX);
    for ring in rings {
        for (x, &a) in ring.members.iter().enumerate() {
            for &b in &ring.members[x + 1..] {
                let s = (ring.burst_start + 7).min(as_of - 1);
                let s = rng.random_range(s..as_of);
                edges.push(Edge {
                    a,
                    b,
                    kind: 3,
                    since: s,
                });
            }
        }
    }
    if n < 2 {
        return edges;
    }
    // Noisy rank by creditworthiness: neighbours in this order are similar.
    let mut by_h: Vec<(f64, u32)> = users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut r = rng_for(seed, P_GRAPH, i as u64);
            (u.credit + 0.35 * normal(&mut r), i as u32)
        })
        .collect();
    by_h.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
    let mut rank = vec![0u32; n];
    for (r, &(_, i)) in by_h.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    let spread = (n as f64 * 0.01).max(3.0);
    for i in 0..n {
        let mut r = rng_for(seed, P_GRAPH, (1u64 << 40) + i as u64);
        let deg = poisson(&mut r, 1.2);
        for _ in 0..deg {
            let kind = pick_weighted(&mut r, &[0.55, 0.30, 0.15, 0.0]) as u8;
            let j = if r.random_bool(0.75) {
                let s = if kind == 2 { spread * 0.3 } else { spread };
                let target = rank[i] as f64 + (s * normal(&mut r)).round();
                let target = target.clamp(0.0, (n - 1) as f64) as usize;
                by_h[target].1 as usize
            } else {
                r.random_range(0..n)
            };
            if j == i {
                continue;
            }
            let s = since(&mut r, i, j);
            edges.push(Edge {
                a: i as u32,
                b: j as u32,
                kind,
                since: s,
            });
        }
    }
    // Orient by user_id (src < dst) and keep each undirected pair once (the first generated wins:
    // the sort is stable and ring edges come first).
    for e in edges.iter_mut() {
        if pos[e.a as usize] > pos[e.b as usize] {
            std::mem::swap(&mut e.a, &mut e.b);
        }
    }
    edges.sort_by_key(|e| (pos[e.a as usize], pos[e.b as usize]));
    edges.dedup_by_key(|e| (e.a, e.b));
    edges
}

// ---- phase 2: events ---------------------------------------------------------------

#[derive(Default)]
struct TxRow {
    ts: i64,
    kind: u8,
    amount: f64,
    mc: Option<u8>,
    due: Option<i32>,
    paid: Option<i32>,
}

#[derive(Default)]
struct EventBuf {
    tx_user: Vec<u32>,
    tx_ts: Vec<i64>,
    tx_kind: Vec<u8>,
    tx_amount: Vec<f64>,
    tx_mc: Vec<Option<u8>>,
    tx_due: Vec<Option<i32>>,
    tx_paid: Vec<Option<i32>>,
    bh_user: Vec<u32>,
    bh_ts: Vec<i64>,
    bh_event: Vec<u8>,
    bh_device: Vec<u64>,
    bh_city: Vec<u16>,
    jd_user: Vec<u32>,
    jd_k: Vec<u8>,
    jd_filed: Vec<i32>,
    jd_amount: Vec<f64>,
    jd_settled: Vec<bool>,
}

impl EventBuf {
    fn append(&mut self, o: EventBuf) {
        self.tx_user.extend(o.tx_user);
        self.tx_ts.extend(o.tx_ts);
        self.tx_kind.extend(o.tx_kind);
        self.tx_amount.extend(o.tx_amount);
        self.tx_mc.extend(o.tx_mc);
        self.tx_due.extend(o.tx_due);
        self.tx_paid.extend(o.tx_paid);
        self.bh_user.extend(o.bh_user);
        self.bh_ts.extend(o.bh_ts);
        self.bh_event.extend(o.bh_event);
        self.bh_device.extend(o.bh_device);
        self.bh_city.extend(o.bh_city);
        self.jd_user.extend(o.jd_user);
        self.jd_k.extend(o.jd_k);
        self.jd_filed.extend(o.jd_filed);
        self.jd_amount.extend(o.jd_amount);
        self.jd_settled.extend(o.jd_settled);
    }
}

const K_PURCHASE: u8 = 0;
const K_REFUND: u8 = 1;
const K_UTILITY: u8 = 2;
const K_DISBURSE: u8 = 3;
const K_REPAY: u8 = 4;
const K_TIN: u8 = 5;
const K_TOUT: u8 = 6;
const K_SALARY: u8 = 7;

fn round2(x: f64) -> f64 {
    ((x * 100.0).round() / 100.0).max(0.01)
}

fn ts_at(day: i32, ms_of_day: i64) -> i64 {
    day as i64 * MS_PER_DAY + ms_of_day.clamp(0, MS_PER_DAY - 1)
}

fn random_time(rng: &mut ChaCha8Rng, from_hour: i64, to_hour: i64) -> i64 {
    rng.random_range(from_hour * 3_600_000..to_hour * 3_600_000)
}

/// Day the instalment/bill due on `due` is paid, or None if unpaid by as-of.
fn payment_day(
    rng: &mut ChaCha8Rng,
    due: i32,
    p_late: f64,
    late_mean: f64,
    as_of: i32,
) -> Option<i32> {
    let paid = if rng.random_bool(p_late.clamp(0.0, 1.0)) {
        if rng.random_bool(0.08) {
            return None; // never paid
        }
        due + 1 + exp_mean(rng, late_mean) as i32
    } else {
        due - rng.random_range(0..=5)
    };
    (paid < as_of).then_some(paid)
}

fn gen_user_events(seed: u64, i: u32, u: &User, rings: &[Ring], as_of: i32, buf: &mut EventBuf) {
    let mut rng = rng_for(seed, P_EVENTS, i as u64);
    let r = &mut rng;
    let risk = u.risk();
    let ws = u.signup.max(as_of - HISTORY_DAYS);
    let span = (as_of - ws).max(1);
    let months = span as f64 / 30.44;
    let activity = Gamma::new(2.5, 0.4).map(|g| g.sample(r)).unwrap_or(1.0);
    let day_in_window = |r: &mut ChaCha8Rng| r.random_range(ws..as_of);
    let (as_of_year, as_of_m0) = {
        let d = date_of(as_of);
        (d.year(), d.month0() as i32)
    };
    let month_index_of = |day: i32| {
        let d = date_of(day);
        (d.year() - as_of_year) * 12 + d.month0() as i32 - as_of_m0
    };
    let first_month = month_index_of(ws);

    // Lateness propensity: the strongest observable carrier of creditworthiness.
    let p_late = sigmoid(-2.2 - 2.3 * u.credit + 0.15 * normal(r));
    let late_mean = 3.0 + 30.0 * risk * risk;

    let mut tx: Vec<TxRow> = Vec::with_capacity(64);

    // Salary: formal employment, a fixed pay day, stable amount.
    if u.formal_job {
        let dom = r.random_range(1..=28u32);
        let base = u.income * r.random_range(0.9..1.1);
        for m in first_month..=0 {
            let day = ymd_day(as_of_year, as_of_m0 + m, dom);
            if day < ws || day >= as_of || r.random_bool(0.02 + 0.08 * risk) {
                continue;
            }
            let amount = base * (1.0 + 0.03 * normal(r));
            tx.push(TxRow {
                ts: ts_at(day, random_time(r, 8, 11)),
                kind: K_SALARY,
                amount: round2(amount),
                ..Default::default()
            });
        }
    }
    // Income-like transfers in (main inflow for informal earners) and transfers out.
    let n_in = poisson(r, months * if u.formal_job { 0.12 } else { 0.45 });
    for _ in 0..n_in {
        let scale = if u.formal_job { 0.2 } else { 0.6 };
        let amount = u.income * scale * (0.6 * normal(r)).exp();
        tx.push(TxRow {
            ts: ts_at(day_in_window(r), random_time(r, 0, 24)),
            kind: K_TIN,
            amount: round2(amount),
            ..Default::default()
        });
    }
    let n_out = poisson(r, months * (0.12 + 0.2 * risk));
    for _ in 0..n_out {
        let amount = u.income * 0.3 * (0.8 * normal(r)).exp();
        tx.push(TxRow {
            ts: ts_at(day_in_window(r), random_time(r, 0, 24)),
            kind: K_TOUT,
            amount: round2(amount),
            ..Default::default()
        });
    }
    // Purchases: risky users spend a larger, more volatile share of income, more on gaming/electronics.
    let n_purchases = poisson(r, months * 0.65 * activity);
    let mc_weights = [
        0.26,
        0.2,
        0.12,
        0.07 + 0.06 * risk,
        0.06,
        0.08,
        0.05,
        0.04,
        0.08,
        0.01 + 0.12 * risk,
    ];
    let mu = (u.income * (0.025 + 0.05 * risk)).ln();
    let sd = 0.7 + 0.6 * risk;
    for _ in 0..n_purchases {
        let day = day_in_window(r);
        let t = ts_at(day, random_time(r, 7, 24));
        let mc = pick_weighted(r, &mc_weights) as u8;
        let amount = round2((mu + sd * normal(r)).exp());
        tx.push(TxRow {
            ts: t,
            kind: K_PURCHASE,
            amount,
            mc: Some(mc),
            ..Default::default()
        });
        if r.random_bool(0.04) {
            let rday = day + r.random_range(1..=20);
            if rday < as_of {
                let ramount = round2(amount * r.random_range(0.3..=1.0));
                tx.push(TxRow {
                    ts: ts_at(rday, random_time(r, 9, 21)),
                    kind: K_REFUND,
                    amount: ramount,
                    mc: Some(mc),
                    ..Default::default()
                });
            }
        }
    }
    // Utility bills: monthly, due at noon on a fixed day; lateness from the user's propensity.
    // Up to two bill accounts (utilities, phone): the observable record of everyday punctuality.
    let n_accounts = usize::from(r.random_bool(0.8 + 0.04 * (4 - u.tier) as f64))
        + usize::from(r.random_bool(0.75));
    for _ in 0..n_accounts {
        let dom = r.random_range(5..=25u32);
        let base = 90.0 + 0.012 * u.income;
        for m in first_month..=0 {
            let due = ymd_day(as_of_year, as_of_m0 + m, dom);
            if due < ws || due >= as_of {
                continue;
            }
            let amount = round2(base * (0.25 * normal(r)).exp());
            let paid = payment_day(r, due, 0.7 * p_late, 0.6 * late_mean, as_of);
            tx.push(TxRow {
                ts: ts_at(due, 12 * 3_600_000),
                kind: K_UTILITY,
                amount,
                mc: None,
                due: Some(due),
                paid,
            });
        }
    }
    // Loans: disbursed inside the window, repaid in monthly instalments; only instalments due
    // before as-of are observed. Risky users borrow more often.
    let n_loans = poisson(r, (0.25 + 0.6 * risk) * months / 24.0 * 1.2);
    for _ in 0..n_loans {
        if as_of - 35 <= ws {
            break;
        }
        let disb = r.random_range(ws..as_of - 35);
        let term = [3, 6, 12, 24][pick_weighted(r, &[0.2, 0.35, 0.3, 0.15])];
        let principal = u.income * (0.5 * normal(r)).exp() * (term as f64 / 6.0).sqrt() * 1.2;
        tx.push(TxRow {
            ts: ts_at(disb, random_time(r, 9, 18)),
            kind: K_DISBURSE,
            amount: round2(principal),
            ..Default::default()
        });
        let instalment = round2(principal * (1.0 + 0.012 * term as f64) / term as f64);
        let stress = (0.4 * normal(r)).exp();
        let dom = date_of(disb).day().min(28);
        let m0 = month_index_of(disb);
        let mut prev_late = false;
        for k in 1..=term {
            let due = ymd_day(as_of_year, as_of_m0 + m0 + k, dom);
            if due >= as_of {
                break;
            }
            let pl = (p_late * stress * if prev_late { 2.5 } else { 1.0 }).min(0.95);
            let paid = payment_day(r, due, pl, late_mean, as_of);
            prev_late = paid.is_none_or(|p| p > due);
            tx.push(TxRow {
                ts: ts_at(due, 12 * 3_600_000),
                kind: K_REPAY,
                amount: instalment,
                mc: None,
                due: Some(due),
                paid,
            });
        }
    }
    tx.sort_by_key(|t| t.ts);
    for t in tx {
        buf.tx_user.push(i);
        buf.tx_ts.push(t.ts);
        buf.tx_kind.push(t.kind);
        buf.tx_amount.push(t.amount);
        buf.tx_mc.push(t.mc);
        buf.tx_due.push(t.due);
        buf.tx_paid.push(t.paid);
    }

    // Behaviours.
    let per_year = months / 12.0;
    let mut ev: Vec<(i64, u8)> = Vec::with_capacity(32);
    let p_night = 0.03 + 0.22 * risk;
    for _ in 0..poisson(r, months * 0.85 * activity) {
        let t = if r.random_bool(p_night) {
            random_time(r, 0, 5)
        } else {
            random_time(r, 7, 24)
        };
        ev.push((ts_at(day_in_window(r), t), 0));
    }
    let rates = [
        0.0,
        0.35 + 1.6 * risk,
        0.2 + 0.8 * risk,
        0.15 + 1.2 * risk,
        0.4 + 2.5 * risk,
        0.05 + 0.5 * risk,
    ];
    for (e, rate) in rates.iter().enumerate().skip(1) {
        for _ in 0..poisson(r, per_year * rate) {
            ev.push((ts_at(day_in_window(r), random_time(r, 0, 24)), e as u8));
        }
    }
    ev.sort_by_key(|e| e.0);
    let ring_devices: &[u64] = if u.ring != NO_RING {
        &rings[u.ring as usize].devices
    } else {
        &[]
    };
    let mut device_k: u64 = 1;
    let mut city = u.home_city;
    let p_travel = 0.04 + 0.15 * risk;
    for (t, e) in ev {
        if e == 1 {
            device_k = (device_k + 1).min(63);
        }
        if e == 2 && r.random_bool(0.5) {
            city = r.random_range(0..N_CITIES as u16);
        }
        let device = if !ring_devices.is_empty() && r.random_bool(0.7) {
            ring_devices[r.random_range(0..ring_devices.len())]
        } else {
            ((i as u64) << 6) | device_k
        };
        let c = if r.random_bool(p_travel) {
            r.random_range(0..N_CITIES as u16)
        } else {
            city
        };
        buf.bh_user.push(i);
        buf.bh_ts.push(t);
        buf.bh_event.push(e);
        buf.bh_device.push(device);
        buf.bh_city.push(c);
    }

    // Court judgments: a few percent of users, concentrated in the risky ones.
    let ring_bump = if u.ring != NO_RING { 1.5 } else { 0.0 };
    if r.random_bool(sigmoid(-4.4 - 1.5 * u.credit + ring_bump)) {
        let n = 1 + poisson(r, 0.3);
        let mut days: Vec<i32> = (0..n).map(|_| as_of - r.random_range(1..1500)).collect();
        days.sort_unstable();
        for (k, d) in days.into_iter().enumerate() {
            buf.jd_user.push(i);
            buf.jd_k.push(k as u8);
            buf.jd_filed.push(d);
            buf.jd_amount.push(round2((9.5 + 1.0 * normal(r)).exp()));
            let age_years = (as_of - d) as f64 / 365.0;
            buf.jd_settled
                .push(r.random_bool(sigmoid(-0.8 + 0.8 * u.credit + 0.8 * age_years)));
        }
    }
}

// ---- driver -----------------------------------------------------------------------

fn validate(cfg: &GenerateConfig) -> Result<(), DatasetError> {
    if cfg.users == 0 {
        return Err(DatasetError::InvalidArgument(
            "--users must be at least 1".into(),
        ));
    }
    if cfg.users > MAX_USERS {
        return Err(DatasetError::InvalidArgument(format!(
            "--users must be at most {MAX_USERS}"
        )));
    }
    if cfg.chunk_users == 0 {
        return Err(DatasetError::InvalidArgument(
            "--chunk-users must be at least 1".into(),
        ));
    }
    let y = cfg.as_of.year();
    if !(1990..=2200).contains(&y) {
        return Err(DatasetError::InvalidArgument(format!(
            "--as-of year {y} is out of range 1990..=2200"
        )));
    }
    Ok(())
}

struct Progress {
    bar: Option<indicatif::ProgressBar>,
    log_every: Option<u64>,
    total: u64,
    last_logged: u64,
}

impl Progress {
    fn new(enabled: bool, total: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = (enabled && terminal).then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} users (eta {eta})",
            ) {
                b.set_style(style);
            }
            b.set_message("generating");
            b
        });
        let log_every = (enabled && !terminal && total >= 200_000).then_some(total / 10);
        Progress {
            bar,
            log_every,
            total,
            last_logged: 0,
        }
    }
    fn set(&mut self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
        if let Some(every) = self.log_every {
            if done - self.last_logged >= every || done == self.total {
                eprintln!("generated {done}/{} users", self.total);
                self.last_logged = done;
            }
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// Generate the population into `cfg.out` (atomically) and report what was written.
pub fn generate(cfg: &GenerateConfig) -> Result<GenerateSummary, DatasetError> {
    validate(cfg)?;
    let started = Instant::now();
    let staged = StagedDir::new(&cfg.out)?;
    let dir = staged.path().to_path_buf();
    let seed = cfg.seed;
    let as_of = day_number(cfg.as_of);
    let n = cfg.users as usize;

    // Phase 1: traits, rings, labels, graph.
    let mut users: Vec<User> = (0..n as u64).map(|i| user_traits(seed, i, as_of)).collect();
    let rings = make_rings(seed, &mut users, as_of);
    assign_labels(seed, &mut users, &rings);
    let ids: Vec<String> = users.iter().map(|u| hex_id('U', u.key)).collect();
    // Output order = user_id order (ids are fixed-width hex, so key order = string order).
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by_key(|&i| users[i as usize].key);
    let mut pos = vec![0u32; n];
    for (p, &i) in order.iter().enumerate() {
        pos[i as usize] = p as u32;
    }

    let mut progress = Progress::new(cfg.progress, cfg.users);
    let chunk = cfg.chunk_users;

    // users / labels / oracle
    let mut w_users = TableWriter::create(&dir, "users", schema::users())?;
    let mut w_labels = TableWriter::create(&dir, "labels", schema::labels())?;
    let mut w_oracle = TableWriter::create(&dir, "oracle", schema::oracle())?;
    for part in order.chunks(chunk.max(100_000)) {
        let us: Vec<&User> = part.iter().map(|&i| &users[i as usize]).collect();
        let uid = || part.iter().map(|&i| ids[i as usize].as_str());
        w_users.write(vec![
            col_str("user_id", uid()),
            col_date("signup_date", us.iter().map(|u| u.signup).collect()),
            col_i32("age", us.iter().map(|u| u.age).collect()),
            col_i32("city_tier", us.iter().map(|u| u.tier).collect()),
            col_bool(
                "real_name_verified",
                &us.iter().map(|u| u.real_name).collect::<Vec<_>>(),
            ),
            col_str(
                "education",
                us.iter().map(|u| EDUCATION_LEVELS[u.edu as usize]),
            ),
            col_bool(
                "education_verified",
                &us.iter().map(|u| u.edu_verified).collect::<Vec<_>>(),
            ),
            col_i32(
                "social_security_months",
                us.iter().map(|u| u.ss_months).collect(),
            ),
            col_i32(
                "housing_fund_months",
                us.iter().map(|u| u.hf_months).collect(),
            ),
            col_i32(
                "phone_tenure_months",
                us.iter().map(|u| u.phone_tenure).collect(),
            ),
            col_i32_opt(
                "income_band",
                &us.iter().map(|u| u.income_band).collect::<Vec<_>>(),
            ),
        ])?;
        w_labels.write(vec![
            col_str("user_id", uid()),
            col_bool(
                "defaulted",
                &us.iter().map(|u| u.defaulted).collect::<Vec<_>>(),
            ),
        ])?;
        w_oracle.write(vec![
            col_str("user_id", uid()),
            col_f64("true_pd", us.iter().map(|u| u.true_pd).collect()),
        ])?;
    }
    w_users.finish()?;
    w_labels.finish()?;
    w_oracle.finish()?;

    // relations
    let edges = make_edges(seed, &users, &rings, &pos, as_of);
    let mut w_rel = TableWriter::create(&dir, "relations", schema::relations())?;
    for part in edges.chunks(1_000_000) {
        w_rel.write(vec![
            col_str("src", part.iter().map(|e| ids[e.a as usize].as_str())),
            col_str("dst", part.iter().map(|e| ids[e.b as usize].as_str())),
            col_str("kind", part.iter().map(|e| RELATION_KINDS[e.kind as usize])),
            col_date("since", part.iter().map(|e| e.since).collect()),
        ])?;
    }
    let n_relations = w_rel.finish()?;
    drop(edges);

    // Phase 2: events, chunk by chunk in user-id order; each chunk split across threads.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let mut w_tx = TableWriter::create(&dir, "transactions", schema::transactions())?;
    let mut w_bh = TableWriter::create(&dir, "behaviors", schema::behaviors())?;
    let mut w_jd = TableWriter::create(&dir, "judgments", schema::judgments())?;
    let mut done = 0u64;
    for part in order.chunks(chunk) {
        let per = part.len().div_ceil(threads);
        let bufs: Vec<EventBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = part
                .chunks(per)
                .map(|sub| {
                    let users = &users;
                    let rings = &rings;
                    s.spawn(move || {
                        let mut b = EventBuf::default();
                        for &i in sub {
                            gen_user_events(seed, i, &users[i as usize], rings, as_of, &mut b);
                        }
                        b
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("event generator thread panicked"))
                .collect()
        });
        let mut b = EventBuf::default();
        for x in bufs {
            b.append(x);
        }
        w_tx.write(vec![
            col_str(
                "user_id",
                b.tx_user.iter().map(|&i| ids[i as usize].as_str()),
            ),
            col_ts("ts", b.tx_ts),
            col_str("kind", b.tx_kind.iter().map(|&k| TX_KINDS[k as usize])),
            col_f64("amount", b.tx_amount),
            col_str_opt(
                "merchant_category",
                b.tx_mc
                    .iter()
                    .map(|m| m.map(|m| MERCHANT_CATEGORIES[m as usize])),
            ),
            col_date_opt("due_date", &b.tx_due),
            col_date_opt("paid_date", &b.tx_paid),
        ])?;
        let devices: Vec<String> = b
            .bh_device
            .iter()
            .map(|&d| hex_id('D', device_key(seed, d)))
            .collect();
        w_bh.write(vec![
            col_str(
                "user_id",
                b.bh_user.iter().map(|&i| ids[i as usize].as_str()),
            ),
            col_ts("ts", b.bh_ts),
            col_str("event", b.bh_event.iter().map(|&e| EVENTS[e as usize])),
            col_str("device_id", devices.iter().map(|s| s.as_str())),
            col_str("ip_city", b.bh_city.iter().map(|&c| city_name(c))),
        ])?;
        drop(devices);
        let case_ids: Vec<String> = b
            .jd_user
            .iter()
            .zip(&b.jd_k)
            .zip(&b.jd_filed)
            .map(|((&i, &k), &d)| {
                format!("({}){}-{}", date_of(d).year(), &ids[i as usize][1..], k + 1)
            })
            .collect();
        w_jd.write(vec![
            col_str(
                "user_id",
                b.jd_user.iter().map(|&i| ids[i as usize].as_str()),
            ),
            col_str("case_id", case_ids.iter().map(|s| s.as_str())),
            col_date("filed_date", b.jd_filed),
            col_f64("amount", b.jd_amount),
            col_str(
                "status",
                b.jd_settled
                    .iter()
                    .map(|&s| if s { "settled" } else { "active" }),
            ),
        ])?;
        done += part.len() as u64;
        progress.set(done);
    }
    let n_tx = w_tx.finish()?;
    let n_bh = w_bh.finish()?;
    let n_jd = w_jd.finish()?;
    progress.finish();

    staged.commit()?;

    let pd: Vec<f64> = users.iter().map(|u| u.true_pd).collect();
    let y: Vec<bool> = users.iter().map(|u| u.defaulted).collect();
    let defaults = y.iter().filter(|&&d| d).count() as u64;
    let oracle_auc = super::auc(&pd, &y).unwrap_or(f64::NAN);
    Ok(GenerateSummary {
        out: cfg.out.clone(),
        users: cfg.users,
        transactions: n_tx,
        behaviors: n_bh,
        relations: n_relations,
        judgments: n_jd,
        fraud_rings: rings.len(),
        ring_members: rings.iter().map(|r| r.members.len()).sum(),
        defaults,
        default_rate: defaults as f64 / cfg.users as f64,
        oracle_auc,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_fixed_width_and_seed_dependent() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000u64 {
            assert!(seen.insert(permute48(42, P_IDS, i)), "collision at {i}");
        }
        assert_ne!(permute48(42, P_IDS, 7), permute48(43, P_IDS, 7));
        let id = hex_id('U', permute48(1, P_IDS, 0));
        assert_eq!(id.len(), 13);
        assert!(id.starts_with('U'));
    }

    #[test]
    fn poisson_mean_is_close_to_lambda() {
        let mut r = rng_for(1, 99, 0);
        let n = 20_000;
        let mean = (0..n).map(|_| poisson(&mut r, 3.0) as f64).sum::<f64>() / n as f64;
        assert!((mean - 3.0).abs() < 0.1, "mean {mean}");
        assert_eq!(poisson(&mut r, 0.0), 0);
    }

    #[test]
    fn unpaid_by_as_of_means_null_paid_date() {
        let mut r = rng_for(1, 98, 0);
        for _ in 0..1000 {
            // Always late, due the day before as-of: payment cannot be known yet.
            assert_eq!(payment_day(&mut r, 99, 1.0, 5.0, 100), None);
        }
    }

    #[test]
    fn city_names_cover_every_index() {
        let total: usize = CITIES.iter().map(|t| t.len()).sum();
        assert_eq!(total, N_CITIES);
        assert_eq!(city_name(0), "Beijing");
        assert_eq!(city_name((N_CITIES - 1) as u16), "Tongren");
    }
}
