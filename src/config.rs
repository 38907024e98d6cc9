//! Service configuration, layered: built-in defaults → optional TOML file (`--config FILE`) →
//! `SESAME_*` environment variables. Every value is checked when it is read and the whole is
//! validated before the server starts; errors name the key (`as_of`, `SESAME_AS_OF`, ...).
//!
//! Partners authenticate with API keys; the configuration holds only the keys' SHA-256 hashes.
//! Demo mode adds the partner `demo` (key `sesame-demo-key`) and the admin key
//! `sesame-demo-admin-key`. Production mode refuses to start without partners, with a demo key,
//! without an admin key, without its own consent-signing secret, or with the audit log off
//! (docs/security.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::scoring::EngineConfig;

/// The demo partner's API key (demo mode only).
pub const DEMO_PARTNER_KEY: &str = "sesame-demo-key";
/// The demo admin key (demo mode only).
pub const DEMO_ADMIN_KEY: &str = "sesame-demo-admin-key";
/// The demo partner's id.
pub const DEMO_PARTNER_ID: &str = "demo";
/// The demo consent-signing secret (demo mode only; production refuses it).
pub const DEMO_CONSENT_SECRET: &str = crate::security::consent::DEMO_CONSENT_SECRET;
/// Shortest consent-signing secret accepted, bytes.
pub const MIN_CONSENT_SECRET_BYTES: usize = 32;
/// Rate limit of a configured partner that names none: requests per second, burst.
pub const DEFAULT_PARTNER_RATE: (u32, u32) = (100, 200);
/// Rate limit of the demo partner (generous: `sesame bench` must not hit it).
pub const DEMO_PARTNER_RATE: (u32, u32) = (100_000, 100_000);
/// Scenarios the project ships rules for.
pub const SHIPPED_SCENARIOS: [&str; 2] = ["rental_deposit_free", "cash_loan"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Built-in demo partner and admin keys; for trying the service locally.
    Demo,
    /// Only the partners configured; demo keys are refused.
    Production,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "demo" => Ok(Mode::Demo),
            "production" => Ok(Mode::Production),
            _ => Err(format!("'{s}' is not a mode (expected demo or production)")),
        }
    }
}

/// A partner allowed to call CreditScoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerConfig {
    pub id: String,
    /// SHA-256 of the API key, lowercase hex (64 characters).
    pub key_sha256: String,
    /// Scenarios the partner may score.
    pub scenarios: Vec<String>,
    /// Sustained rate of Score calls (and ScoreStream items) allowed, per second.
    pub rate_per_sec: u32,
    /// Calls allowed at once above the sustained rate (token-bucket size).
    pub burst: u32,
    /// SHA-256 (hex) of the partner's TLS client certificate (DER). When set, the partner is
    /// identified by that certificate (mutual TLS) and its calls must come with it.
    pub cert_sha256: Option<String>,
}

impl PartnerConfig {
    /// A partner with the default rate limit.
    pub fn new(id: &str, key_sha256: &str, scenarios: &[&str]) -> PartnerConfig {
        PartnerConfig {
            id: id.to_string(),
            key_sha256: key_sha256.to_string(),
            scenarios: scenarios.iter().map(|s| s.to_string()).collect(),
            rate_per_sec: DEFAULT_PARTNER_RATE.0,
            burst: DEFAULT_PARTNER_RATE.1,
            cert_sha256: None,
        }
    }
}

/// TLS for the gRPC port (docs/security.md). Off when `cert` is unset: plain HTTP/2, for
/// loopback, tests, or behind a TLS-terminating proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Server certificate chain, PEM.
    pub cert: Option<PathBuf>,
    /// Server private key, PEM.
    pub key: Option<PathBuf>,
    /// CA whose client certificates are accepted (mutual TLS); partners are matched by
    /// `cert_sha256`.
    pub client_ca: Option<PathBuf>,
    /// Refuse connections without a client certificate (otherwise API keys still work).
    pub require_client_cert: bool,
}

/// Bounds of `health_probe_interval_ms`: more often is load on Redis for nothing; less often
/// leaves a load balancer sending calls that fail for a minute.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(50);
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(60);

/// Where the multi-lending counters live (docs/rules.md, "Velocity").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VelocityConfig {
    /// Shared counters in Redis, so that several servers count one user's queries together;
    /// `None` keeps them in this process (one server).
    pub redis_url: Option<String>,
    /// `redis_url` is a Redis Cluster: one or more of its nodes, comma-separated.
    pub redis_cluster: bool,
    /// Keys are `{key_prefix}:{user_id}`.
    pub key_prefix: String,
    /// Longest wait for Redis per call; past it the call is UNAVAILABLE.
    pub timeout: Duration,
    /// PEM files for a `rediss://` URL: Redis's CA (default: the system's roots) and the
    /// client certificate and key Redis may ask for.
    pub tls: crate::rules::velocity::RedisTlsFiles,
}

impl Default for VelocityConfig {
    fn default() -> VelocityConfig {
        VelocityConfig {
            redis_url: None,
            redis_cluster: false,
            key_prefix: "sesame:velocity".to_string(),
            timeout: Duration::from_millis(250),
            tls: Default::default(),
        }
    }
}

/// The query audit log (docs/security.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Off only to measure what the audit costs (`sesame bench`); refused in production mode.
    pub enabled: bool,
    /// The SQLite file (WAL mode); its directory is created when missing.
    pub path: PathBuf,
    /// Shortest time between two journal commits, µs. Longer groups more calls per durable
    /// write (less CPU at saturation) but makes each call wait longer (docs/security.md).
    pub commit_interval_us: u64,
}

/// Longest commit interval accepted, µs: beyond it every call waits for a visible pause.
pub const MAX_AUDIT_COMMIT_INTERVAL_US: u64 = 10_000;

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            enabled: true,
            path: PathBuf::from("var/audit.db"),
            commit_interval_us: crate::audit::DEFAULT_COMMIT_INTERVAL.as_micros() as u64,
        }
    }
}

/// Most items of one ScoreStream scored at once: beyond the audit's group commit and the cores,
/// more only holds more requests in memory.
const MAX_STREAM_CONCURRENCY: usize = 1024;

/// Limits protecting the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request or response message, bytes.
    pub max_message_bytes: usize,
    /// Time limit of one call (a shorter client deadline wins).
    pub call_timeout: Duration,
    /// In-flight requests per HTTP/2 connection.
    pub concurrency_per_connection: usize,
    /// Scorings running at once on the blocking pool (others wait).
    pub max_concurrent_scores: usize,
    /// Answers buffered per ScoreStream before the server stops reading requests.
    pub stream_buffer: usize,
    /// Items of one ScoreStream scored at once; answers still come in request order.
    pub stream_concurrency: usize,
    /// How long shutdown waits for in-flight calls before giving up.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 4 * 1024 * 1024,
            call_timeout: Duration::from_secs(10),
            concurrency_per_connection: 256,
            max_concurrent_scores: 64,
            stream_buffer: 32,
            stream_concurrency: 32,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// gRPC listen address (used by `sesame serve`; `server::run` takes a bound listener).
    pub listen: SocketAddr,
    /// Prometheus `/metrics` over plain HTTP; `None` = off.
    pub metrics_listen: Option<SocketAddr>,
    pub model_dir: PathBuf,
    /// Sub-directory of `model_dir` holding the champion (when it holds several versions).
    /// MERGE NOTE: the lead's `EngineConfig` has a `champion` field; pass this through there.
    pub champion: String,
    pub data_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub as_of: NaiveDate,
    pub limits: Limits,
    /// Poll the model directory every this often and reload when it changed; `None` = off.
    pub watch_interval: Option<Duration>,
    /// How often the server asks what Score depends on (a shared Redis: PING; an audit log
    /// whose last write failed: a durable rewrite) for its health status, and at once after a
    /// failure; while one does not answer, `sesame.v1.CreditScoring` is NOT_SERVING.
    pub health_probe_interval: Duration,
    /// Also run requests with inline applicant data (the polars pipeline, milliseconds) on the
    /// async worker threads. Stored users are always scored there (microseconds); by default
    /// applicant requests go to the blocking pool, bounded by `limits.max_concurrent_scores`.
    pub inline_scoring: bool,
    /// Partners besides the demo partner (which demo mode adds by itself).
    pub partners: Vec<PartnerConfig>,
    /// SHA-256 (hex) of the admin key; `None` = Admin disabled (demo mode uses the demo admin key).
    pub admin_key_sha256: Option<String>,
    /// HMAC key signing user consent tokens; `None` = the demo secret (demo mode only).
    pub consent_secret: Option<String>,
    pub audit: AuditConfig,
    pub tls: TlsConfig,
    pub velocity: VelocityConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: Mode::Demo,
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            model_dir: PathBuf::from("models"),
            champion: "default".to_string(),
            data_dir: PathBuf::from("datasets/demo"),
            rules_dir: PathBuf::from("rules"),
            as_of: crate::datasets::demo_as_of(),
            limits: Limits::default(),
            watch_interval: Some(Duration::from_secs(5)),
            health_probe_interval: Duration::from_secs(1),
            inline_scoring: false,
            partners: Vec::new(),
            admin_key_sha256: None,
            consent_secret: None,
            audit: AuditConfig::default(),
            tls: TlsConfig::default(),
            velocity: VelocityConfig::default(),
        }
    }
}

/// Lowercase hex SHA-256 of a key, as stored in the configuration.
pub fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

// ---- the TOML file: every key optional, unknown keys refused ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    mode: Option<String>,
    listen: Option<String>,
    metrics_listen: Option<String>,
    model_dir: Option<PathBuf>,
    champion: Option<String>,
    data_dir: Option<PathBuf>,
    rules_dir: Option<PathBuf>,
    as_of: Option<String>,
    watch_interval_secs: Option<u64>,
    health_probe_interval_ms: Option<u64>,
    inline_scoring: Option<bool>,
    admin_key_sha256: Option<String>,
    consent_secret: Option<String>,
    limits: Option<FileLimits>,
    audit: Option<FileAudit>,
    tls: Option<FileTls>,
    velocity: Option<FileVelocity>,
    #[serde(default)]
    partners: Vec<FilePartner>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_message_bytes: Option<usize>,
    call_timeout_ms: Option<u64>,
    concurrency_per_connection: Option<usize>,
    max_concurrent_scores: Option<usize>,
    stream_buffer: Option<usize>,
    stream_concurrency: Option<usize>,
    shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    enabled: Option<bool>,
    path: Option<PathBuf>,
    commit_interval_us: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVelocity {
    redis_url: Option<String>,
    redis_cluster: Option<bool>,
    key_prefix: Option<String>,
    timeout_ms: Option<u64>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    require_client_cert: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePartner {
    id: String,
    key_sha256: String,
    scenarios: Vec<String>,
    rate_per_sec: Option<u32>,
    burst: Option<u32>,
    cert_sha256: Option<String>,
}

fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(key, format!("'{s}' is not an address like 127.0.0.1:50051")))
}

fn parse_optional_addr(key: &str, s: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if s.trim().is_empty() || s.trim() == "off" {
        Ok(None)
    } else {
        parse_addr(key, s).map(Some)
    }
}

fn parse_date(key: &str, s: &str) -> Result<NaiveDate, ConfigError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| invalid(key, format!("'{s}' is not a date YYYY-MM-DD")))
}

fn parse_num<T: std::str::FromStr>(key: &str, s: &str) -> Result<T, ConfigError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(key, format!("'{s}' is not a non-negative integer")))
}

fn parse_bool(key: &str, s: &str) -> Result<bool, ConfigError> {
    match s.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(key, format!("'{s}' is not true or false"))),
    }
}

fn interval(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// `SESAME_PARTNERS`: `id:sha256hex:scenario1|scenario2[:rate_per_sec[:burst[:cert_sha256]]]`, several
/// separated by `,`.
fn parse_partners_env(key: &str, s: &str) -> Result<Vec<PartnerConfig>, ConfigError> {
    let mut out = Vec::new();
    for (i, item) in s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .enumerate()
    {
        let parts: Vec<&str> = item.split(':').collect();
        if !(3..=6).contains(&parts.len()) {
            return Err(invalid(
                key,
                format!(
                    "entry {i} is not id:key_sha256:scenario1|scenario2[:rate_per_sec[:burst[:cert_sha256]]]"
                ),
            ));
        }
        let rate_per_sec = match parts.get(3) {
            Some(v) => parse_num(key, v)?,
            None => DEFAULT_PARTNER_RATE.0,
        };
        let burst = match parts.get(4) {
            Some(v) => parse_num(key, v)?,
            None => rate_per_sec.max(DEFAULT_PARTNER_RATE.1),
        };
        out.push(PartnerConfig {
            rate_per_sec,
            burst,
            id: parts[0].trim().to_string(),
            key_sha256: parts[1].trim().to_lowercase(),
            scenarios: parts[2]
                .split('|')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect(),
            cert_sha256: parts
                .get(5)
                .map(|h| h.trim().to_lowercase())
                .filter(|h| !h.is_empty()),
        });
    }
    Ok(out)
}

impl Config {
    /// Defaults → `file` (if any) → the process environment; then validated.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_from(file, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            c.apply_toml(&text).map_err(|e| match e {
                ConfigError::Invalid { key, message } => ConfigError::File {
                    path: path.to_path_buf(),
                    message: format!("{key}: {message}"),
                },
                other => other,
            })?;
        }
        c.apply_env(env)?;
        c.validate()?;
        Ok(c)
    }

    /// Applies a TOML document on top of `self`.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let f: FileConfig = toml::from_str(text).map_err(|e| invalid("toml", e.to_string()))?;
        if let Some(v) = f.mode {
            self.mode = v.parse().map_err(|e: String| invalid("mode", e))?;
        }
        if let Some(v) = f.listen {
            self.listen = parse_addr("listen", &v)?;
        }
        if let Some(v) = f.metrics_listen {
            self.metrics_listen = parse_optional_addr("metrics_listen", &v)?;
        }
        if let Some(v) = f.model_dir {
            self.model_dir = v;
        }
        if let Some(v) = f.champion {
            self.champion = v;
        }
        if let Some(v) = f.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = f.rules_dir {
            self.rules_dir = v;
        }
        if let Some(v) = f.as_of {
            self.as_of = parse_date("as_of", &v)?;
        }
        if let Some(v) = f.health_probe_interval_ms {
            self.health_probe_interval = Duration::from_millis(v);
        }
        if let Some(v) = f.watch_interval_secs {
            self.watch_interval = interval(v);
        }
        if let Some(v) = f.inline_scoring {
            self.inline_scoring = v;
        }
        if let Some(v) = f.admin_key_sha256 {
            self.admin_key_sha256 = Some(v.trim().to_lowercase());
        }
        if let Some(l) = f.limits {
            let d = &mut self.limits;
            if let Some(v) = l.max_message_bytes {
                d.max_message_bytes = v;
            }
            if let Some(v) = l.call_timeout_ms {
                d.call_timeout = Duration::from_millis(v);
            }
            if let Some(v) = l.concurrency_per_connection {
                d.concurrency_per_connection = v;
            }
            if let Some(v) = l.max_concurrent_scores {
                d.max_concurrent_scores = v;
            }
            if let Some(v) = l.stream_buffer {
                d.stream_buffer = v;
            }
            if let Some(v) = l.stream_concurrency {
                d.stream_concurrency = v;
            }
            if let Some(v) = l.shutdown_grace_secs {
                d.shutdown_grace = Duration::from_secs(v);
            }
        }
        if let Some(v) = f.consent_secret {
            self.consent_secret = Some(v);
        }
        if let Some(a) = f.audit {
            if let Some(v) = a.enabled {
                self.audit.enabled = v;
            }
            if let Some(v) = a.path {
                self.audit.path = v;
            }
            if let Some(v) = a.commit_interval_us {
                self.audit.commit_interval_us = v;
            }
        }
        if let Some(t) = f.tls {
            if t.cert.is_some() {
                self.tls.cert = t.cert;
            }
            if t.key.is_some() {
                self.tls.key = t.key;
            }
            if t.client_ca.is_some() {
                self.tls.client_ca = t.client_ca;
            }
            if let Some(v) = t.require_client_cert {
                self.tls.require_client_cert = v;
            }
        }
        if let Some(v) = f.velocity {
            if let Some(u) = v.redis_url {
                self.velocity.redis_url = Some(u).filter(|u| !u.trim().is_empty());
            }
            if let Some(c) = v.redis_cluster {
                self.velocity.redis_cluster = c;
            }
            if let Some(p) = v.key_prefix {
                self.velocity.key_prefix = p;
            }
            if let Some(t) = v.timeout_ms {
                self.velocity.timeout = Duration::from_millis(t);
            }
            let tls = &mut self.velocity.tls;
            for (from, to) in [
                (v.tls_ca, &mut tls.ca),
                (v.tls_cert, &mut tls.cert),
                (v.tls_key, &mut tls.key),
            ] {
                if let Some(path) = from {
                    *to = Some(path).filter(|p| !p.as_os_str().is_empty());
                }
            }
        }
        for p in f.partners {
            let rate_per_sec = p.rate_per_sec.unwrap_or(DEFAULT_PARTNER_RATE.0);
            self.partners.push(PartnerConfig {
                rate_per_sec,
                burst: p
                    .burst
                    .unwrap_or_else(|| rate_per_sec.max(DEFAULT_PARTNER_RATE.1)),
                id: p.id,
                key_sha256: p.key_sha256.trim().to_lowercase(),
                scenarios: p.scenarios,
                cert_sha256: p
                    .cert_sha256
                    .map(|h| h.trim().replace(':', "").to_lowercase()),
            });
        }
        Ok(())
    }

    /// Applies `SESAME_*` variables on top of `self`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |k: &str| env(k);
        if let Some(v) = get("SESAME_MODE") {
            self.mode = v
                .trim()
                .parse()
                .map_err(|e: String| invalid("SESAME_MODE", e))?;
        }
        if let Some(v) = get("SESAME_LISTEN") {
            self.listen = parse_addr("SESAME_LISTEN", &v)?;
        }
        if let Some(v) = get("SESAME_METRICS_LISTEN") {
            self.metrics_listen = parse_optional_addr("SESAME_METRICS_LISTEN", &v)?;
        }
        if let Some(v) = get("SESAME_MODEL_DIR") {
            self.model_dir = PathBuf::from(v);
        }
        if let Some(v) = get("SESAME_CHAMPION") {
            self.champion = v.trim().to_string();
        }
        if let Some(v) = get("SESAME_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("SESAME_RULES_DIR") {
            self.rules_dir = PathBuf::from(v);
        }
        if let Some(v) = get("SESAME_AS_OF") {
            self.as_of = parse_date("SESAME_AS_OF", &v)?;
        }
        if let Some(v) = get("SESAME_WATCH_INTERVAL_SECS") {
            self.watch_interval = interval(parse_num("SESAME_WATCH_INTERVAL_SECS", &v)?);
        }
        if let Some(v) = get("SESAME_INLINE_SCORING") {
            self.inline_scoring = parse_bool("SESAME_INLINE_SCORING", &v)?;
        }
        if let Some(v) = get("SESAME_ADMIN_KEY_SHA256") {
            self.admin_key_sha256 = Some(v.trim().to_lowercase());
        }
        if let Some(v) = get("SESAME_CONSENT_SECRET") {
            self.consent_secret = Some(v);
        }
        if let Some(v) = get("SESAME_AUDIT_ENABLED") {
            self.audit.enabled = parse_bool("SESAME_AUDIT_ENABLED", &v)?;
        }
        if let Some(v) = get("SESAME_AUDIT_PATH") {
            self.audit.path = PathBuf::from(v);
        }
        if let Some(v) = get("SESAME_AUDIT_COMMIT_INTERVAL_US") {
            self.audit.commit_interval_us = parse_num("SESAME_AUDIT_COMMIT_INTERVAL_US", &v)?;
        }
        if let Some(v) = get("SESAME_TLS_CERT") {
            self.tls.cert = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = get("SESAME_TLS_KEY") {
            self.tls.key = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = get("SESAME_TLS_CLIENT_CA") {
            self.tls.client_ca = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some(v) = get("SESAME_TLS_REQUIRE_CLIENT_CERT") {
            self.tls.require_client_cert = parse_bool("SESAME_TLS_REQUIRE_CLIENT_CERT", &v)?;
        }
        if let Some(v) = get("SESAME_VELOCITY_REDIS_URL") {
            self.velocity.redis_url = Some(v).filter(|u| !u.trim().is_empty());
        }
        if let Some(v) = get("SESAME_VELOCITY_REDIS_CLUSTER") {
            self.velocity.redis_cluster = parse_bool("SESAME_VELOCITY_REDIS_CLUSTER", &v)?;
        }
        if let Some(v) = get("SESAME_VELOCITY_KEY_PREFIX") {
            self.velocity.key_prefix = v;
        }
        if let Some(v) = get("SESAME_VELOCITY_TIMEOUT_MS") {
            self.velocity.timeout =
                Duration::from_millis(parse_num("SESAME_VELOCITY_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("SESAME_HEALTH_PROBE_INTERVAL_MS") {
            self.health_probe_interval =
                Duration::from_millis(parse_num("SESAME_HEALTH_PROBE_INTERVAL_MS", &v)?);
        }
        let tls = &mut self.velocity.tls;
        for (key, to) in [
            ("SESAME_VELOCITY_TLS_CA", &mut tls.ca),
            ("SESAME_VELOCITY_TLS_CERT", &mut tls.cert),
            ("SESAME_VELOCITY_TLS_KEY", &mut tls.key),
        ] {
            if let Some(v) = get(key) {
                *to = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
            }
        }
        if let Some(v) = get("SESAME_PARTNERS") {
            self.partners = parse_partners_env("SESAME_PARTNERS", &v)?;
        }
        let l = &mut self.limits;
        if let Some(v) = get("SESAME_MAX_MESSAGE_BYTES") {
            l.max_message_bytes = parse_num("SESAME_MAX_MESSAGE_BYTES", &v)?;
        }
        if let Some(v) = get("SESAME_CALL_TIMEOUT_MS") {
            l.call_timeout = Duration::from_millis(parse_num("SESAME_CALL_TIMEOUT_MS", &v)?);
        }
        if let Some(v) = get("SESAME_CONCURRENCY_PER_CONNECTION") {
            l.concurrency_per_connection = parse_num("SESAME_CONCURRENCY_PER_CONNECTION", &v)?;
        }
        if let Some(v) = get("SESAME_MAX_CONCURRENT_SCORES") {
            l.max_concurrent_scores = parse_num("SESAME_MAX_CONCURRENT_SCORES", &v)?;
        }
        if let Some(v) = get("SESAME_STREAM_BUFFER") {
            l.stream_buffer = parse_num("SESAME_STREAM_BUFFER", &v)?;
        }
        if let Some(v) = get("SESAME_STREAM_CONCURRENCY") {
            l.stream_concurrency = parse_num("SESAME_STREAM_CONCURRENCY", &v)?;
        }
        if let Some(v) = get("SESAME_SHUTDOWN_GRACE_SECS") {
            l.shutdown_grace = Duration::from_secs(parse_num("SESAME_SHUTDOWN_GRACE_SECS", &v)?);
        }
        Ok(())
    }

    /// Cross-field checks. Called by `load`; `server::run` calls it again (configs built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        if l.max_message_bytes < 1024 {
            return Err(invalid("limits.max_message_bytes", "must be at least 1024"));
        }
        if l.call_timeout.is_zero() {
            return Err(invalid("limits.call_timeout_ms", "must be > 0"));
        }
        if l.concurrency_per_connection == 0 {
            return Err(invalid("limits.concurrency_per_connection", "must be > 0"));
        }
        if l.max_concurrent_scores == 0 {
            return Err(invalid("limits.max_concurrent_scores", "must be > 0"));
        }
        if l.stream_buffer == 0 {
            return Err(invalid("limits.stream_buffer", "must be > 0"));
        }
        if !(MIN_PROBE_INTERVAL..=MAX_PROBE_INTERVAL).contains(&self.health_probe_interval) {
            return Err(invalid(
                "health_probe_interval_ms",
                "must be between 50 and 60000 (ms)",
            ));
        }
        if !(1..=MAX_STREAM_CONCURRENCY).contains(&l.stream_concurrency) {
            return Err(invalid(
                "limits.stream_concurrency",
                &format!("must be between 1 and {MAX_STREAM_CONCURRENCY}"),
            ));
        }
        if self.champion.trim().is_empty() {
            return Err(invalid("champion", "must not be empty"));
        }
        let demo_hashes = [sha256_hex(DEMO_PARTNER_KEY), sha256_hex(DEMO_ADMIN_KEY)];
        let mut ids = std::collections::BTreeSet::new();
        for (i, p) in self.partners.iter().enumerate() {
            let key = format!("partners[{i}]");
            if p.id.trim().is_empty() {
                return Err(invalid(&format!("{key}.id"), "must not be empty"));
            }
            if !ids.insert(p.id.as_str()) || (self.mode == Mode::Demo && p.id == DEMO_PARTNER_ID) {
                return Err(invalid(
                    &format!("{key}.id"),
                    format!("duplicate partner id '{}'", p.id),
                ));
            }
            check_hash(&format!("{key}.key_sha256"), &p.key_sha256)?;
            if p.scenarios.is_empty() {
                return Err(invalid(
                    &format!("{key}.scenarios"),
                    "must list at least one scenario",
                ));
            }
            if p.rate_per_sec == 0 {
                return Err(invalid(&format!("{key}.rate_per_sec"), "must be > 0"));
            }
            if p.burst < 1 {
                return Err(invalid(&format!("{key}.burst"), "must be > 0"));
            }
            if let Some(h) = &p.cert_sha256 {
                check_hash(&format!("{key}.cert_sha256"), h)?;
                if self.tls.client_ca.is_none() {
                    return Err(invalid(
                        &format!("{key}.cert_sha256"),
                        "needs tls.client_ca (client certificates are only asked for with mutual TLS)",
                    ));
                }
            }
            if self.mode == Mode::Production && demo_hashes.contains(&p.key_sha256) {
                return Err(invalid(
                    &format!("{key}.key_sha256"),
                    "is a demo key, refused in production mode",
                ));
            }
        }
        if let Some(h) = &self.admin_key_sha256 {
            check_hash("admin_key_sha256", h)?;
            if self.mode == Mode::Production && demo_hashes.contains(h) {
                return Err(invalid(
                    "admin_key_sha256",
                    "is a demo key, refused in production mode",
                ));
            }
            if self.partners.iter().any(|p| &p.key_sha256 == h) {
                return Err(invalid(
                    "admin_key_sha256",
                    "must differ from every partner key",
                ));
            }
        }
        if self.mode == Mode::Production && self.partners.is_empty() {
            return Err(invalid(
                "partners",
                "production mode needs at least one partner (TOML [[partners]] or SESAME_PARTNERS)",
            ));
        }
        if self.mode == Mode::Production && self.admin_key_sha256.is_none() {
            return Err(invalid(
                "admin_key_sha256",
                "production mode needs an admin credential (admin_key_sha256 or SESAME_ADMIN_KEY_SHA256)",
            ));
        }
        match &self.consent_secret {
            Some(s) if s == DEMO_CONSENT_SECRET && self.mode == Mode::Production => {
                return Err(invalid(
                    "consent_secret",
                    "is the demo consent secret, refused in production mode",
                ));
            }
            Some(s) if s.len() < MIN_CONSENT_SECRET_BYTES => {
                return Err(invalid(
                    "consent_secret",
                    format!("must be at least {MIN_CONSENT_SECRET_BYTES} bytes (e.g. openssl rand -hex 32)"),
                ));
            }
            None if self.mode == Mode::Production => {
                return Err(invalid(
                    "consent_secret",
                    "production mode needs a consent-signing secret (consent_secret or SESAME_CONSENT_SECRET)",
                ));
            }
            _ => {}
        }
        if self.mode == Mode::Production && !self.audit.enabled {
            return Err(invalid(
                "audit.enabled",
                "the audit log may be off only in demo mode (benchmarks); production mode needs it",
            ));
        }
        if self.audit.commit_interval_us > MAX_AUDIT_COMMIT_INTERVAL_US {
            return Err(invalid(
                "audit.commit_interval_us",
                &format!("must be at most {MAX_AUDIT_COMMIT_INTERVAL_US} (10 ms)"),
            ));
        }
        if self.audit.enabled && self.audit.path.as_os_str().is_empty() {
            return Err(invalid("audit.path", "must not be empty"));
        }
        let v = &self.velocity;
        if let Some(redis) = self.engine_config().velocity_redis {
            // Built here so that a typo or a bad certificate file stops the start, not every
            // Score call; the password in the URL is never echoed.
            if let Err(e) = redis.client() {
                return Err(invalid(e.field, e.message));
            }
            if v.key_prefix.trim().is_empty() {
                return Err(invalid("velocity.key_prefix", "must not be empty"));
            }
            if v.timeout.is_zero() || v.timeout >= l.call_timeout {
                return Err(invalid(
                    "velocity.timeout_ms",
                    "must be > 0 and shorter than limits.call_timeout_ms",
                ));
            }
        } else if let Some(field) = v.tls.first_set() {
            return Err(invalid(field, "is set, but velocity.redis_url is not"));
        }
        let t = &self.tls;
        match (&t.cert, &t.key) {
            (Some(_), None) => {
                return Err(invalid("tls.key", "tls.cert is set; so must be the key"))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert",
                    "tls.key is set; so must be the certificate",
                ))
            }
            _ => {}
        }
        if t.client_ca.is_some() && t.cert.is_none() {
            return Err(invalid(
                "tls.client_ca",
                "mutual TLS needs tls.cert and tls.key",
            ));
        }
        if t.require_client_cert && t.client_ca.is_none() {
            return Err(invalid("tls.require_client_cert", "needs tls.client_ca"));
        }
        Ok(())
    }

    /// The consent-signing secret in force (the demo secret in demo mode unless one is set).
    pub fn effective_consent_secret(&self) -> Option<&str> {
        match (&self.consent_secret, self.mode) {
            (Some(s), _) => Some(s.as_str()),
            (None, Mode::Demo) => Some(DEMO_CONSENT_SECRET),
            (None, Mode::Production) => None,
        }
    }

    /// The partners in force: the configured ones, plus `demo` in demo mode.
    pub fn effective_partners(&self) -> Vec<PartnerConfig> {
        let mut v = self.partners.clone();
        if self.mode == Mode::Demo {
            v.push(PartnerConfig {
                id: DEMO_PARTNER_ID.to_string(),
                key_sha256: sha256_hex(DEMO_PARTNER_KEY),
                scenarios: SHIPPED_SCENARIOS.iter().map(|s| s.to_string()).collect(),
                rate_per_sec: DEMO_PARTNER_RATE.0,
                burst: DEMO_PARTNER_RATE.1,
                cert_sha256: None,
            });
        }
        v
    }

    /// The admin key hash in force (the demo admin key in demo mode unless one is configured).
    pub fn effective_admin_key_sha256(&self) -> Option<String> {
        match (&self.admin_key_sha256, self.mode) {
            (Some(h), _) => Some(h.clone()),
            (None, Mode::Demo) => Some(sha256_hex(DEMO_ADMIN_KEY)),
            (None, Mode::Production) => None,
        }
    }

    pub fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            model_dir: self.model_dir.clone(),
            champion: self.champion.clone(),
            data_dir: self.data_dir.clone(),
            rules_dir: self.rules_dir.clone(),
            as_of: self.as_of,
            velocity_redis: self.velocity.redis_url.as_ref().map(|url| {
                crate::rules::velocity::RedisVelocityConfig {
                    url: url.trim().to_string(),
                    key_prefix: self.velocity.key_prefix.clone(),
                    timeout: self.velocity.timeout,
                    tls: self.velocity.tls.clone(),
                    cluster: self.velocity.redis_cluster,
                }
            }),
        }
    }
}

fn check_hash(key: &str, h: &str) -> Result<(), ConfigError> {
    if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(
            key,
            "must be the SHA-256 of the key as 64 hex characters (sha256sum)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_are_demo_and_valid() {
        let c = Config::load_from(None, env(&[])).expect("defaults valid");
        assert_eq!(c.mode, Mode::Demo);
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.model_dir, PathBuf::from("models"));
        assert_eq!(c.data_dir, PathBuf::from("datasets/demo"));
        assert_eq!(c.as_of.to_string(), "2025-12-31");
        let partners = c.effective_partners();
        assert_eq!(partners.len(), 1);
        assert_eq!(partners[0].key_sha256, sha256_hex(DEMO_PARTNER_KEY));
        assert_eq!(
            c.effective_admin_key_sha256(),
            Some(sha256_hex(DEMO_ADMIN_KEY))
        );
    }

    #[test]
    fn file_then_env_layering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sesame.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:6000\"\nas_of = \"2025-06-30\"\nmodel_dir = \"/m\"\n[limits]\ncall_timeout_ms = 500\n",
        )
        .expect("write");
        let c = Config::load_from(Some(&path), env(&[("SESAME_LISTEN", "127.0.0.1:7000")]))
            .expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:7000", "env beats file");
        assert_eq!(c.as_of.to_string(), "2025-06-30", "file beats default");
        assert_eq!(c.model_dir, PathBuf::from("/m"));
        assert_eq!(c.limits.call_timeout, Duration::from_millis(500));
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load_from(None, env(&[("SESAME_AS_OF", "31/12/2025")])).unwrap_err();
        assert!(e.to_string().starts_with("SESAME_AS_OF:"), "{e}");
        let e = Config::load_from(None, env(&[("SESAME_MODE", "prod")])).unwrap_err();
        assert!(e.to_string().starts_with("SESAME_MODE:"), "{e}");
        let mut c = Config::default();
        let e = c.apply_toml("listen = \"nope\"").unwrap_err();
        assert!(e.to_string().starts_with("listen:"), "{e}");
        let e = c.apply_toml("lisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
    }

    #[test]
    fn velocity_redis_is_layered_and_checked_at_start() {
        let c = Config::load_from(None, env(&[])).expect("valid");
        assert_eq!(c.velocity.redis_url, None, "in process by default");
        assert_eq!(c.engine_config().velocity_redis, None);
        let mut f = Config::default();
        f.apply_toml("[velocity]\nredis_url = \"redis://10.0.0.5:6379/2\"\ntimeout_ms = 100\n")
            .expect("file");
        f.apply_env(env(&[("SESAME_VELOCITY_KEY_PREFIX", "risk:v")]))
            .expect("env");
        f.validate().expect("valid");
        let r = f.engine_config().velocity_redis.expect("redis configured");
        assert_eq!(r.url, "redis://10.0.0.5:6379/2");
        assert_eq!(r.key_prefix, "risk:v");
        assert_eq!(r.timeout, Duration::from_millis(100));
        // An empty URL turns it back off (an env var can undo a file).
        f.apply_env(env(&[("SESAME_VELOCITY_REDIS_URL", "")]))
            .expect("env");
        assert_eq!(f.engine_config().velocity_redis, None);

        let secret = "http://user:hunter2@10.0.0.5:6379";
        let e = Config::load_from(None, env(&[("SESAME_VELOCITY_REDIS_URL", secret)])).unwrap_err();
        assert!(e.to_string().starts_with("velocity.redis_url:"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = Config::load_from(
            None,
            env(&[
                ("SESAME_VELOCITY_REDIS_URL", "redis://127.0.0.1:6379"),
                ("SESAME_VELOCITY_TIMEOUT_MS", "0"),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("velocity.timeout_ms:"), "{e}");

        // The health probe's interval: 1 s by default, from the file or the environment, and
        // bounded so that a typo neither hammers Redis nor leaves health stale for an hour.
        assert_eq!(f.health_probe_interval, Duration::from_secs(1));
        f.apply_toml("health_probe_interval_ms = 250\n")
            .expect("file");
        assert_eq!(f.health_probe_interval, Duration::from_millis(250));
        f.validate().expect("valid");
        for bad in ["10", "3600000"] {
            let e = Config::load_from(None, env(&[("SESAME_HEALTH_PROBE_INTERVAL_MS", bad)]))
                .unwrap_err();
            assert!(
                e.to_string().starts_with("health_probe_interval_ms:"),
                "{e}"
            );
        }
    }

    #[test]
    fn stream_concurrency_is_layered_and_bounded() {
        let c = Config::load_from(None, env(&[])).expect("defaults");
        assert_eq!(c.limits.stream_concurrency, 32);
        let mut f = Config::default();
        f.apply_toml("[limits]\nstream_concurrency = 8\n")
            .expect("file");
        assert_eq!(f.limits.stream_concurrency, 8);
        f.apply_env(env(&[("SESAME_STREAM_CONCURRENCY", "128")]))
            .expect("env");
        assert_eq!(f.limits.stream_concurrency, 128);
        f.validate().expect("valid");
        for bad in ["0", "1025"] {
            let e =
                Config::load_from(None, env(&[("SESAME_STREAM_CONCURRENCY", bad)])).unwrap_err();
            assert!(
                e.to_string().starts_with("limits.stream_concurrency:"),
                "{e}"
            );
        }
    }

    #[test]
    fn velocity_redis_cluster_takes_seed_nodes_checked_at_start() {
        let load = |vars: &[(&str, &str)]| Config::load_from(None, env(vars));
        let c = load(&[
            (
                "SESAME_VELOCITY_REDIS_URL",
                "redis://10.0.0.5:7000, redis://10.0.0.6:7000",
            ),
            ("SESAME_VELOCITY_REDIS_CLUSTER", "true"),
        ])
        .expect("two seeds make a cluster");
        let r = c.engine_config().velocity_redis.expect("redis configured");
        assert!(r.cluster);
        assert!(matches!(
            r.client(),
            Ok(crate::rules::velocity::RedisClient::Cluster(_))
        ));
        let mut f = Config::default();
        f.apply_toml("[velocity]\nredis_url = \"redis://10.0.0.5:7000\"\nredis_cluster = true\n")
            .expect("file");
        f.validate().expect("one seed is enough");
        assert!(f.engine_config().velocity_redis.expect("redis").cluster);

        let refused = |vars: &[(&str, &str)], why: &str| {
            let e = load(vars).unwrap_err().to_string();
            assert!(e.starts_with("velocity.redis_url:"), "{e}");
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        };
        // Several nodes without saying it is a cluster: the error says what to set.
        refused(
            &[(
                "SESAME_VELOCITY_REDIS_URL",
                "redis://:hunter2@10.0.0.5:7000,redis://10.0.0.6:7000",
            )],
            "velocity.redis_cluster = true",
        );
        let cluster = |url: &'static str| {
            vec![
                ("SESAME_VELOCITY_REDIS_URL", url),
                ("SESAME_VELOCITY_REDIS_CLUSTER", "1"),
            ]
        };
        refused(&cluster("redis+unix:///run/redis.sock"), "over TCP");
        refused(
            &cluster("redis://10.0.0.5:7000,rediss://10.0.0.6:7000"),
            "mixes redis:// and rediss://",
        );
        refused(&cluster(" , "), "names no cluster node");
        refused(
            &cluster("redis://10.0.0.5:7000,nonsense"),
            "is not a Redis URL",
        );
    }

    #[test]
    fn velocity_redis_tls_files_are_read_and_checked_at_start() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
        let fixture = |name: &str| fixtures.join(name).display().to_string();
        let load = |pairs: &[(&str, &str)]| Config::load_from(None, env(pairs));
        let tls_url = ("SESAME_VELOCITY_REDIS_URL", "rediss://127.0.0.1:6380/0");
        let (ca, cert, key) = (fixture("ca.pem"), fixture("acme.pem"), fixture("acme.key"));

        let mut f = Config::default();
        f.apply_toml(&format!(
            "[velocity]\nredis_url = \"rediss://127.0.0.1:6380/0\"\ntls_ca = \"{ca}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"
        ))
        .expect("file");
        f.validate()
            .expect("a CA, a client certificate and its key");
        let r = f.engine_config().velocity_redis.expect("redis");
        assert_eq!(r.tls.ca.as_deref(), Some(Path::new(&ca)));
        assert!(
            load(&[tls_url]).is_ok(),
            "the system's roots, no client certificate"
        );
        assert!(load(&[tls_url, ("SESAME_VELOCITY_TLS_CA", &ca)]).is_ok());

        let refused = |pairs: &[(&str, &str)], field: &str, says: &str| {
            let e = load(pairs).expect_err(field).to_string();
            assert!(e.starts_with(&format!("{field}:")), "{e}");
            assert!(e.contains(says), "{e}");
        };
        let plain_url = ("SESAME_VELOCITY_REDIS_URL", "redis://127.0.0.1:6379/0");
        refused(
            &[plain_url, ("SESAME_VELOCITY_TLS_CA", &ca)],
            "velocity.tls_ca",
            "not a rediss://",
        );
        refused(
            &[("SESAME_VELOCITY_TLS_KEY", &key)],
            "velocity.tls_key",
            "redis_url is not",
        );
        refused(
            &[tls_url, ("SESAME_VELOCITY_TLS_CERT", &cert)],
            "velocity.tls_key",
            "so must be",
        );
        refused(
            &[tls_url, ("SESAME_VELOCITY_TLS_CA", "/no/such/ca.pem")],
            "velocity.tls_ca",
            "cannot read /no/such/ca.pem",
        );
        // A key where the CA belongs holds no certificate; a certificate is not a key.
        refused(
            &[tls_url, ("SESAME_VELOCITY_TLS_CA", &key)],
            "velocity.tls_ca",
            "no PEM certificate",
        );
        refused(
            &[
                tls_url,
                ("SESAME_VELOCITY_TLS_CERT", &cert),
                ("SESAME_VELOCITY_TLS_KEY", &cert),
            ],
            "velocity.tls_key",
            "not a PEM private key",
        );
        let other_key = fixture("rogue.key");
        refused(
            &[
                tls_url,
                ("SESAME_VELOCITY_TLS_CERT", &cert),
                ("SESAME_VELOCITY_TLS_KEY", &other_key),
            ],
            "velocity.tls_key",
            "cannot sign for velocity.tls_cert's certificate",
        );
        refused(
            &[(
                "SESAME_VELOCITY_REDIS_URL",
                "rediss://127.0.0.1:6380/#insecure",
            )],
            "velocity.redis_url",
            "#insecure",
        );
    }

    #[test]
    fn production_refuses_no_partners_and_demo_keys() {
        let e = Config::load_from(None, env(&[("SESAME_MODE", "production")])).unwrap_err();
        assert!(e.to_string().starts_with("partners:"), "{e}");
        let demo = format!("acme:{}:cash_loan", sha256_hex(DEMO_PARTNER_KEY));
        let e = Config::load_from(
            None,
            env(&[("SESAME_MODE", "production"), ("SESAME_PARTNERS", &demo)]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("demo key"), "{e}");
        let ok = format!(
            "acme:{}:cash_loan|rental_deposit_free",
            sha256_hex("a-real-key")
        );
        let admin = sha256_hex("a-real-admin-key");
        let secret = "a-real-consent-secret-of-32-bytes-or-more";
        let c = Config::load_from(
            None,
            env(&[
                ("SESAME_MODE", "production"),
                ("SESAME_PARTNERS", &ok),
                ("SESAME_ADMIN_KEY_SHA256", &admin),
                ("SESAME_CONSENT_SECRET", secret),
            ]),
        )
        .expect("valid production config");
        let p = c.effective_partners();
        assert_eq!(p.len(), 1, "no demo partner in production");
        assert_eq!(p[0].scenarios, vec!["cash_loan", "rental_deposit_free"]);
        assert_eq!(p[0].rate_per_sec, DEFAULT_PARTNER_RATE.0);
        assert_eq!(c.effective_admin_key_sha256(), Some(admin.clone()));
        assert_eq!(c.effective_consent_secret(), Some(secret));
        // Each missing or demo credential stops the start, naming the key.
        let cases: [(&[(&str, &str)], &str); 5] = [
            (
                &[("SESAME_CONSENT_SECRET", secret)],
                "admin_key_sha256: production mode needs an admin credential",
            ),
            (
                &[("SESAME_ADMIN_KEY_SHA256", &admin)],
                "consent_secret: production mode needs",
            ),
            (
                &[
                    ("SESAME_ADMIN_KEY_SHA256", &admin),
                    ("SESAME_CONSENT_SECRET", DEMO_CONSENT_SECRET),
                ],
                "consent_secret: is the demo consent secret",
            ),
            (
                &[
                    ("SESAME_ADMIN_KEY_SHA256", &admin),
                    ("SESAME_CONSENT_SECRET", "short"),
                ],
                "consent_secret: must be at least 32 bytes",
            ),
            (
                &[
                    ("SESAME_ADMIN_KEY_SHA256", &admin),
                    ("SESAME_CONSENT_SECRET", secret),
                    ("SESAME_AUDIT_ENABLED", "false"),
                ],
                "audit.enabled:",
            ),
        ];
        for (extra, want) in cases {
            let mut pairs = vec![("SESAME_MODE", "production"), ("SESAME_PARTNERS", &ok)];
            pairs.extend_from_slice(extra);
            let e = Config::load_from(None, env(&pairs)).unwrap_err();
            assert!(e.to_string().starts_with(want), "{want}: {e}");
        }
        let demo_admin = sha256_hex(DEMO_ADMIN_KEY);
        let e = Config::load_from(
            None,
            env(&[
                ("SESAME_MODE", "production"),
                ("SESAME_PARTNERS", &ok),
                ("SESAME_ADMIN_KEY_SHA256", &demo_admin),
                ("SESAME_CONSENT_SECRET", secret),
            ]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("demo key"), "{e}");
    }

    #[test]
    fn partner_rate_limits_and_audit_settings() {
        let h = sha256_hex("k");
        let c = Config::load_from(
            None,
            env(&[
                (
                    "SESAME_PARTNERS",
                    &format!("a:{h}:cash_loan:5:7,b:{h}x:cash_loan"),
                ),
                ("SESAME_AUDIT_PATH", "/tmp/x.db"),
            ]),
        );
        assert!(c.is_err(), "bad hash of b refused");
        let c = Config::load_from(
            None,
            env(&[("SESAME_PARTNERS", &format!("a:{h}:cash_loan:5:7"))]),
        )
        .expect("valid");
        assert_eq!((c.partners[0].rate_per_sec, c.partners[0].burst), (5, 7));
        let mut c = Config::default();
        c.apply_toml(&format!(
            "[audit]\nenabled = false\npath = \"/a/b.db\"\n[[partners]]\nid = \"p\"\nkey_sha256 = \"{h}\"\nscenarios = [\"cash_loan\"]\nrate_per_sec = 3\n"
        ))
        .expect("toml");
        assert!(!c.audit.enabled);
        assert_eq!(c.audit.path, PathBuf::from("/a/b.db"));
        assert_eq!((c.partners[0].rate_per_sec, c.partners[0].burst), (3, 200));
        c.validate().expect("demo mode may turn the audit off");
        c.partners[0].rate_per_sec = 0;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().starts_with("partners[0].rate_per_sec"), "{e}");
        let e = Config::load_from(None, env(&[("SESAME_PARTNERS", &format!("a:{h}:c:x"))]))
            .unwrap_err();
        assert!(e.to_string().starts_with("SESAME_PARTNERS:"), "{e}");
    }

    #[test]
    fn audit_commit_interval_is_layered_and_bounded() {
        assert_eq!(Config::default().audit.commit_interval_us, 500);
        let mut c = Config::default();
        c.apply_toml("[audit]\ncommit_interval_us = 2000\n")
            .expect("toml");
        assert_eq!(c.audit.commit_interval_us, 2000);
        c.validate().expect("2 ms is allowed");
        let c = Config::load_from(None, env(&[("SESAME_AUDIT_COMMIT_INTERVAL_US", "0")]))
            .expect("0: commit as soon as a record waits");
        assert_eq!(c.audit.commit_interval_us, 0);
        let e = Config::load_from(None, env(&[("SESAME_AUDIT_COMMIT_INTERVAL_US", "20000")]))
            .unwrap_err();
        assert!(e.to_string().starts_with("audit.commit_interval_us"), "{e}");
        let e =
            Config::load_from(None, env(&[("SESAME_AUDIT_COMMIT_INTERVAL_US", "-1")])).unwrap_err();
        assert!(
            e.to_string().starts_with("SESAME_AUDIT_COMMIT_INTERVAL_US"),
            "{e}"
        );
    }
}
