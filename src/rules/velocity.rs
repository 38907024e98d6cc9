//! Velocity: how many distinct partners queried a user over sliding windows (multi-lending
//! signal). In process by default; [`RedisVelocity`] shares the counts between servers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Distinct partners that queried the user in each window, the current query included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VelocityCounts {
    pub partners_1h: u32,
    pub partners_24h: u32,
    pub partners_30d: u32,
}

/// The shared store could not be read or written; the query was not counted.
#[derive(Debug, thiserror::Error)]
#[error("velocity store {store}: {message}")]
pub struct VelocityError {
    pub store: String,
    pub message: String,
}

impl VelocityCounts {
    /// The three counts in the order the Redis transaction returns them.
    fn from_reply(partners_1h: u32, partners_24h: u32, partners_30d: u32) -> VelocityCounts {
        VelocityCounts {
            partners_1h,
            partners_24h,
            partners_30d,
        }
    }
}

pub trait VelocityStore: Send + Sync {
    /// Records a query of `user` by `partner` at `now_ms` and returns the counts after it.
    fn record(
        &self,
        user: &str,
        partner: &str,
        now_ms: i64,
    ) -> Result<VelocityCounts, VelocityError>;

    /// Where the counts live, for logs (no credentials).
    fn describe(&self) -> String {
        "in process".to_string()
    }

    /// Queries it could not count since start (each one a refused Score call).
    fn errors_total(&self) -> u64 {
        0
    }
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
const MONTH_MS: i64 = 30 * DAY_MS;
const SHARDS: usize = 32;

/// How often a shard drops the users nobody queried for 30 days.
const SWEEP_EVERY_MS: i64 = 60_000;

/// Per user: the last query time of each partner (30 days kept). Sharded mutexes keep
/// contention low without an extra crate.
pub struct InProcessVelocity {
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    users: HashMap<String, Vec<(String, i64)>>,
    /// A user's entries are trimmed when the user is queried again; one never queried again
    /// would stay for the life of the process, so each shard also sweeps once a minute.
    next_sweep_ms: i64,
}

impl Default for InProcessVelocity {
    fn default() -> Self {
        InProcessVelocity {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }
}

fn shard_of(user: &str) -> usize {
    // FNV-1a: stable and cheap; only spreads users over shards.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in user.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % SHARDS as u64) as usize
}

impl VelocityStore for InProcessVelocity {
    fn record(
        &self,
        user: &str,
        partner: &str,
        now_ms: i64,
    ) -> Result<VelocityCounts, VelocityError> {
        let shard = &self.shards[shard_of(user)];
        // A poisoned lock only means another thread panicked mid-update; the data is still usable.
        let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
        if now_ms >= shard.next_sweep_ms {
            shard
                .users
                .retain(|_, seen| seen.iter().any(|(_, t)| now_ms - *t < MONTH_MS));
            shard.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        }
        let seen = shard.users.entry(user.to_string()).or_default();
        seen.retain(|(_, t)| now_ms - *t < MONTH_MS);
        match seen.iter_mut().find(|(p, _)| p == partner) {
            Some(entry) => entry.1 = entry.1.max(now_ms),
            None => seen.push((partner.to_string(), now_ms)),
        }
        let within = |w: i64| seen.iter().filter(|(_, t)| now_ms - *t < w).count() as u32;
        Ok(VelocityCounts {
            partners_1h: within(HOUR_MS),
            partners_24h: within(DAY_MS),
            partners_30d: seen.len() as u32,
        })
    }
}

/// Where a [`RedisVelocity`] keeps its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisVelocityConfig {
    /// `redis://[user:password@]host[:port][/db]` or `redis+unix:///path/to/socket`.
    pub url: String,
    /// Keys are `{key_prefix}:{user_id}`, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Longest wait for a connection or a reply; past it the Score call is UNAVAILABLE.
    pub timeout: Duration,
    /// Certificates for a `rediss://` URL; must be empty for `redis://`.
    pub tls: RedisTlsFiles,
    /// A Redis Cluster: `url` is one or more of its nodes, comma-separated, from which the
    /// others are found. A user's counts live in one key, so each query is one slot's
    /// MULTI/EXEC, routed to the node that holds it.
    pub cluster: bool,
}

/// The configured Redis: one server, or a cluster found from its seed nodes.
pub enum RedisClient {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

/// A blocking connection of either kind.
enum BlockingConnection {
    Single(redis::Connection),
    Cluster(redis::cluster::ClusterConnection),
}

impl BlockingConnection {
    fn query<T: redis::FromRedisValue>(&mut self, p: &redis::Pipeline) -> redis::RedisResult<T> {
        match self {
            BlockingConnection::Single(c) => p.query(c),
            BlockingConnection::Cluster(c) => p.query(c),
        }
    }
}

/// The connection the async calls share, of either kind (both are cheap handles to clone).
#[derive(Clone)]
enum SharedConnection {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl SharedConnection {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        p: &redis::Pipeline,
    ) -> redis::RedisResult<T> {
        match self {
            SharedConnection::Single(c) => p.query_async(c).await,
            SharedConnection::Cluster(c) => p.query_async(c).await,
        }
    }

    /// PING; on a cluster, also its own verdict, `cluster_state:ok`: with a primary lost and
    /// `cluster-require-full-coverage yes` (Redis's default), every node refuses every key.
    async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            SharedConnection::Single(c) => {
                redis::cmd("PING").query_async::<String>(c).await.map(drop)
            }
            SharedConnection::Cluster(c) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                redis::cmd("PING").query_async::<String>(c).await?;
                // Every primary's own view: a node just back may still call the cluster down
                // and refuse its slots while the others say ok.
                let mut info = redis::cmd("CLUSTER");
                info.arg("INFO");
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match c.route_command(info, all).await? {
                    redis::Value::Map(replies) => replies.into_iter().try_for_each(|(_, reply)| {
                        cluster_state_ok(redis::from_redis_value(reply)?)
                    }),
                    reply => cluster_state_ok(redis::from_redis_value(reply)?),
                }
            }
        }
    }
}

fn cluster_state_ok(info: String) -> redis::RedisResult<()> {
    if info.lines().any(|l| l.trim() == "cluster_state:ok") {
        return Ok(());
    }
    let state = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_state:"))
        .unwrap_or("unknown")
        .to_string();
    Err(redis::RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
        "the cluster is not serving every slot",
        format!("cluster_state:{state}"),
    )))
}

/// PEM files for a `rediss://` (TLS) URL. Without `ca`, the system's trusted roots check Redis's
/// certificate (managed services sign theirs with a public CA). `cert` + `key` are the client
/// certificate that Redis asks for when it checks its clients (`tls-auth-clients yes`, its
/// default when TLS is on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisTlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl RedisTlsFiles {
    /// The config key of the first file that is set, to name in an error when none may be.
    pub fn first_set(&self) -> Option<&'static str> {
        [
            ("velocity.tls_ca", &self.ca),
            ("velocity.tls_cert", &self.cert),
            ("velocity.tls_key", &self.key),
        ]
        .into_iter()
        .find_map(|(field, file)| file.is_some().then_some(field))
    }
}

/// Why a Redis store cannot be set up from its configuration, naming the setting to fix.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RedisSetupError {
    /// The key as written in the config file (`velocity.redis_url`).
    pub field: &'static str,
    pub message: String,
}

fn setup_error(field: &'static str, message: impl Into<String>) -> RedisSetupError {
    RedisSetupError {
        field,
        message: message.into(),
    }
}

fn read_setup_file(field: &'static str, path: &Path) -> Result<Vec<u8>, RedisSetupError> {
    std::fs::read(path)
        .map_err(|e| setup_error(field, format!("cannot read {}: {e}", path.display())))
}

/// The file's PEM certificates, refused when it holds none (an empty trust store would fail
/// every call, long after the start).
/// The file's bytes (what the redis crate takes) and its certificates, parsed once.
type PemCertificates = (Vec<u8>, Vec<CertificateDer<'static>>);

fn read_pem_certificates(
    field: &'static str,
    path: &Path,
) -> Result<PemCertificates, RedisSetupError> {
    let bytes = read_setup_file(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            setup_error(
                field,
                format!("{}: not PEM certificates ({e})", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(setup_error(
            field,
            format!("{}: holds no PEM certificate", path.display()),
        ));
    }
    Ok((bytes, certs))
}

/// Refuses a key that is not a PEM private key, or not the key of the certificate: found here,
/// not at the first connection, where it would refuse every Score call instead of the start.
fn check_client_key(
    chain: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
    key_path: &Path,
) -> Result<(), RedisSetupError> {
    let field = "velocity.tls_key";
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        setup_error(
            field,
            format!("{}: not a PEM private key ({e})", key_path.display()),
        )
    })?;
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map(|_| ())
        .map_err(|e| {
            setup_error(
                field,
                format!(
                    "{}: cannot sign for velocity.tls_cert's certificate ({e})",
                    key_path.display()
                ),
            )
        })
}

impl RedisVelocityConfig {
    /// The Redis client: the URL (or a cluster's seed URLs) parsed and, for `rediss://`, the TLS
    /// files read and parsed. Config validation builds it too, so a file that passes at start is
    /// the one that serves.
    pub fn client(&self) -> Result<RedisClient, RedisSetupError> {
        let url_error = |m: String| setup_error("velocity.redis_url", m);
        let urls: Vec<&str> = if self.cluster {
            self.url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect()
        } else {
            vec![self.url.as_str()]
        };
        let mut tls = None;
        for url in &urls {
            let parsed = redis::Client::open(*url).map_err(|e| {
                let several = if !self.cluster && url.contains(',') {
                    "; several nodes are a cluster: set velocity.redis_cluster = true"
                } else {
                    ""
                };
                url_error(format!(
                    "is not a Redis URL like redis://127.0.0.1:6379/0 or rediss://host:6380/0 ({e}){several}"
                ))
            })?;
            let this_tls = match parsed.get_connection_info().addr() {
                redis::ConnectionAddr::TcpTls { insecure: true, .. } => {
                    return Err(url_error(
                        "`#insecure` would accept any certificate; give Redis's CA in velocity.tls_ca instead"
                            .into(),
                    ))
                }
                redis::ConnectionAddr::TcpTls { .. } => true,
                redis::ConnectionAddr::Unix(_) if self.cluster => {
                    return Err(url_error(
                        "a cluster's nodes are reached over TCP (redis:// or rediss://), not a socket"
                            .into(),
                    ))
                }
                _ => false,
            };
            if tls.is_some_and(|t| t != this_tls) {
                return Err(url_error(
                    "mixes redis:// and rediss:// nodes; a cluster is all TLS or none".into(),
                ));
            }
            tls = Some(this_tls);
        }
        let Some(tls) = tls else {
            return Err(url_error("names no cluster node".into()));
        };
        let certificates = self.tls_certificates(tls)?;
        if !self.cluster {
            return match certificates {
                // the system's roots, no client certificate
                None => redis::Client::open(self.url.as_str())
                    .map(RedisClient::Single)
                    .map_err(|e| url_error(e.to_string())),
                Some(c) => redis::Client::build_with_tls(self.url.as_str(), c)
                    .map(RedisClient::Single)
                    .map_err(|e| url_error(format!("cannot set up TLS: {e}"))),
            };
        }
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(self.timeout)
            .response_timeout(self.timeout);
        if let Some(c) = certificates {
            builder = builder.certs(c);
        }
        builder
            .build()
            .map(RedisClient::Cluster)
            .map_err(|e| url_error(format!("cannot set up the cluster client: {e}")))
    }

    /// The TLS files read and checked: `None` when none is set (then a `rediss://` URL checks
    /// Redis with the system's roots). Refused when set for a URL without TLS.
    fn tls_certificates(
        &self,
        tls: bool,
    ) -> Result<Option<redis::TlsCertificates>, RedisSetupError> {
        let files = &self.tls;
        if !tls {
            return match files.first_set() {
                Some(field) => Err(setup_error(
                    field,
                    "is set, but velocity.redis_url is not a rediss:// (TLS) URL",
                )),
                None => Ok(None),
            };
        }
        let client_tls = match (&files.cert, &files.key) {
            (Some(cert), Some(key)) => {
                let (client_cert, chain) = read_pem_certificates("velocity.tls_cert", cert)?;
                let client_key = read_setup_file("velocity.tls_key", key)?;
                check_client_key(chain, &client_key, key)?;
                Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
            (Some(_), None) => {
                return Err(setup_error(
                    "velocity.tls_key",
                    "velocity.tls_cert is set; so must be its key",
                ))
            }
            (None, Some(_)) => {
                return Err(setup_error(
                    "velocity.tls_cert",
                    "velocity.tls_key is set; so must be its certificate",
                ))
            }
            (None, None) => None,
        };
        let root_cert = match &files.ca {
            Some(ca) => Some(read_pem_certificates("velocity.tls_ca", ca)?.0),
            None => None,
        };
        if client_tls.is_none() && root_cert.is_none() {
            return Ok(None);
        }
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// `redis 127.0.0.1:6379`, `redis (TLS) host:6380`: the address, never the password.
fn describe_addr(kind: &str, addr: &redis::ConnectionAddr) -> String {
    let tls = match addr {
        redis::ConnectionAddr::TcpTls { .. } => " (TLS)",
        _ => "",
    };
    format!("{kind}{tls} {addr}")
}

/// Most connections kept open between calls (one per call in flight is enough).
const MAX_IDLE_CONNECTIONS: usize = 32;

/// Velocity shared by every server pointed at one Redis: per user, a sorted set of partner →
/// last query time (ms), updated and counted in one MULTI/EXEC, so two servers answering the
/// same user at once both see both queries. Same windows and results as [`InProcessVelocity`]
/// (`tests/velocity.rs` compares them).
///
/// Two ways in, one command list ([`RedisVelocity::pipeline`]): `record_async`, for the service's
/// async workers, shares one multiplexed connection, so the queries of concurrent calls travel
/// pipelined on one socket and nobody blocks a thread; `record` (the [`VelocityStore`] trait) is
/// for synchronous callers (inline applicants on the blocking pool, tests) and keeps a small pool
/// of blocking connections.
pub struct RedisVelocity {
    client: RedisClient,
    config: RedisVelocityConfig,
    /// `host:port` or the socket path; never the password.
    name: String,
    idle: Mutex<Vec<BlockingConnection>>,
    multiplexed: Mutex<Option<SharedConnection>>,
    /// Failures since the last warning, and when that was (ms): one log line per 10 s in an
    /// outage, not one per call.
    failures: AtomicU64,
    last_warning_ms: AtomicI64,
    errors_total: AtomicU64,
    /// Woken by every failed query, so that the health probe looks at once rather than at its
    /// next tick.
    failed: tokio::sync::Notify,
}

impl RedisVelocity {
    /// Checks the URL; connects on first use (a Redis that is down at start is not fatal).
    pub fn new(config: RedisVelocityConfig) -> Result<RedisVelocity, VelocityError> {
        let client = config.client().map_err(|e| VelocityError {
            store: "redis".into(),
            message: e.to_string(),
        })?;
        let name = match &client {
            RedisClient::Single(c) => describe_addr("redis", c.get_connection_info().addr()),
            RedisClient::Cluster(_) => {
                // The first seed (already parsed once by `client()`), never the password.
                let first = config.url.split(',').map(str::trim).find(|u| !u.is_empty());
                match first.and_then(|u| redis::Client::open(u).ok()) {
                    Some(c) => describe_addr("redis cluster", c.get_connection_info().addr()),
                    None => "redis cluster".to_string(),
                }
            }
        };
        Ok(RedisVelocity {
            client,
            config,
            name,
            idle: Mutex::new(Vec::new()),
            multiplexed: Mutex::new(None),
            failures: AtomicU64::new(0),
            last_warning_ms: AtomicI64::new(i64::MIN),
            errors_total: AtomicU64::new(0),
            failed: tokio::sync::Notify::new(),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> VelocityError {
        VelocityError {
            store: self.name.clone(),
            message: e.to_string(),
        }
    }

    fn warn(&self, e: &VelocityError, now_ms: i64) {
        self.errors_total.fetch_add(1, Ordering::Relaxed);
        self.failed.notify_one();
        let failed = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 10_000
            && self
                .last_warning_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(error = %e, calls_refused = failed, "velocity store unreachable; Score calls refused");
        }
    }

    fn connect(&self) -> Result<BlockingConnection, VelocityError> {
        let t = Some(self.config.timeout);
        match &self.client {
            RedisClient::Single(client) => {
                let con = client
                    .get_connection_with_timeout(self.config.timeout)
                    .map_err(|e| self.error(e))?;
                con.set_read_timeout(t).map_err(|e| self.error(e))?;
                con.set_write_timeout(t).map_err(|e| self.error(e))?;
                Ok(BlockingConnection::Single(con))
            }
            RedisClient::Cluster(client) => {
                let con = client.get_connection().map_err(|e| self.error(e))?;
                con.set_read_timeout(t).map_err(|e| self.error(e))?;
                con.set_write_timeout(t).map_err(|e| self.error(e))?;
                Ok(BlockingConnection::Cluster(con))
            }
        }
    }

    /// The one MULTI/EXEC of a query; its reply is (partners in 1 h, in 24 h, in 30 d).
    fn pipeline(&self, user: &str, partner: &str, now_ms: i64) -> redis::Pipeline {
        let key = format!("{}:{user}", self.config.key_prefix);
        // Same windows as the in-process store: a partner counts while now - t < window.
        // MULTI/EXEC rather than a Lua script: the script cost Redis ~25 % more CPU per query
        // here (68-70 against 55-57 µs, docs/rules.md).
        let mut p = redis::pipe();
        p.atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg("GT")
            .arg(now_ms)
            .arg(partner)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now_ms - MONTH_MS)
            .ignore()
            .cmd("ZCOUNT")
            .arg(&key)
            .arg(format!("({}", now_ms - HOUR_MS))
            .arg("+inf")
            .cmd("ZCOUNT")
            .arg(&key)
            .arg(format!("({}", now_ms - DAY_MS))
            .arg("+inf")
            .cmd("ZCARD")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(MONTH_MS)
            .ignore();
        p
    }

    async fn connect_async(&self) -> Result<SharedConnection, VelocityError> {
        match &self.client {
            RedisClient::Single(client) => {
                let t = Some(self.config.timeout);
                let cfg = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(t)
                    .set_response_timeout(t);
                client
                    .get_multiplexed_async_connection_with_config(&cfg)
                    .await
                    .map(SharedConnection::Single)
                    .map_err(|e| self.error(e))
            }
            // The timeouts are the cluster client's own (set when it was built).
            RedisClient::Cluster(client) => client
                .get_async_connection()
                .await
                .map(SharedConnection::Cluster)
                .map_err(|e| self.error(e)),
        }
    }

    /// As [`VelocityStore::record`], without blocking the thread: concurrent calls share one
    /// connection and their queries are pipelined on it.
    pub async fn record_async(
        &self,
        user: &str,
        partner: &str,
        now_ms: i64,
    ) -> Result<VelocityCounts, VelocityError> {
        let pipe = self.pipeline(user, partner, now_ms);
        let cached = self
            .multiplexed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let counted = async {
            let from_cache = cached.is_some();
            let mut con = match cached {
                Some(c) => c,
                None => self.connect_async().await?,
            };
            let mut result = con.query::<(u32, u32, u32)>(&pipe).await;
            // The shared connection may have been cut (Redis restarted): retry once on a new
            // one. Safe to repeat: ZADD GT with the same time changes nothing the second time.
            if from_cache && matches!(&result, Err(e) if is_dead_connection(e)) {
                con = self.connect_async().await?;
                result = con.query(&pipe).await;
            }
            let mut slot = self.multiplexed.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(r) => {
                    *slot = Some(con);
                    Ok(r)
                }
                Err(e) => {
                    if is_dead_connection(&e) {
                        *slot = None;
                    }
                    Err(self.error(e))
                }
            }
        }
        .await;
        let (h1, h24, d30) = counted.inspect_err(|e| self.warn(e, now_ms))?;
        Ok(VelocityCounts::from_reply(h1, h24, d30))
    }

    /// A PING on the connection the Score calls share (opened if there is none): the health
    /// probe's question, "would a Score call be counted now?". A failure is not counted as a
    /// refused call.
    pub async fn ping_async(&self) -> Result<(), VelocityError> {
        let cached = self
            .multiplexed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut con = match cached {
            Some(c) => c,
            None => self.connect_async().await?,
        };
        let result = con.ping().await;
        let mut slot = self.multiplexed.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(_) => {
                *slot = Some(con);
                Ok(())
            }
            Err(e) => {
                if is_dead_connection(&e) {
                    *slot = None;
                }
                Err(self.error(e))
            }
        }
    }
}

fn is_dead_connection(e: &redis::RedisError) -> bool {
    e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error()
}

impl VelocityStore for RedisVelocity {
    fn record(
        &self,
        user: &str,
        partner: &str,
        now_ms: i64,
    ) -> Result<VelocityCounts, VelocityError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let from_pool = pooled.is_some();
        let counted = (|| {
            let mut con = match pooled {
                Some(c) => c,
                None => self.connect()?,
            };
            let pipe = self.pipeline(user, partner, now_ms);
            let mut result = con.query::<(u32, u32, u32)>(&pipe);
            // An idle connection may have been cut (Redis restarted): retry once on a new one.
            // Safe to repeat: ZADD GT with the same time changes nothing the second time.
            if from_pool && matches!(&result, Err(e) if is_dead_connection(e)) {
                con = self.connect()?;
                result = con.query(&pipe);
            }
            result.map(|r| (con, r)).map_err(|e| self.error(e))
        })();
        let (con, (h1, h24, d30)) = counted.inspect_err(|e| self.warn(e, now_ms))?;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(con);
        }
        Ok(VelocityCounts::from_reply(h1, h24, d30))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }

    fn errors_total(&self) -> u64 {
        self.errors_total.load(Ordering::Relaxed)
    }
}

/// The store a scoring engine counts in: this process, or a shared Redis.
pub enum Velocity {
    InProcess(InProcessVelocity),
    Redis(RedisVelocity),
}

impl Velocity {
    pub fn new(redis: Option<RedisVelocityConfig>) -> Result<Velocity, VelocityError> {
        Ok(match redis {
            None => Velocity::InProcess(InProcessVelocity::default()),
            Some(c) => Velocity::Redis(RedisVelocity::new(c)?),
        })
    }

    fn store(&self) -> &dyn VelocityStore {
        match self {
            Velocity::InProcess(v) => v,
            Velocity::Redis(v) => v,
        }
    }

    pub fn record(
        &self,
        user: &str,
        partner: &str,
        now_ms: i64,
    ) -> Result<VelocityCounts, VelocityError> {
        self.store().record(user, partner, now_ms)
    }

    /// Never waits for the in-process store; waits on the network, without blocking the
    /// thread, for Redis.
    pub async fn record_async(
        &self,
        user: &str,
        partner: &str,
        now_ms: i64,
    ) -> Result<VelocityCounts, VelocityError> {
        match self {
            Velocity::InProcess(v) => v.record(user, partner, now_ms),
            // Boxed: the Redis future is ~2.5 KB, and inline it would make every Score call's
            // future that size, copied at each await level, in process or not.
            Velocity::Redis(v) => Box::pin(v.record_async(user, partner, now_ms)).await,
        }
    }

    pub fn describe(&self) -> String {
        self.store().describe()
    }

    /// Whether a Score call could be counted now: always for the in-process store; a PING,
    /// without blocking the thread, for Redis.
    pub async fn check_async(&self) -> Result<(), VelocityError> {
        match self {
            Velocity::InProcess(_) => Ok(()),
            Velocity::Redis(v) => Box::pin(v.ping_async()).await,
        }
    }

    /// Completes after a query failed (never, for the in-process store, which cannot fail).
    pub async fn failed(&self) {
        match self {
            Velocity::InProcess(_) => std::future::pending().await,
            Velocity::Redis(v) => v.failed.notified().await,
        }
    }

    /// Whether the counters live outside this process, where they can be unreachable.
    pub fn is_shared(&self) -> bool {
        matches!(self, Velocity::Redis(_))
    }

    /// `in_process` or `redis`: a metrics label without the address.
    pub fn kind(&self) -> &'static str {
        match self {
            Velocity::InProcess(_) => "in_process",
            Velocity::Redis(_) => "redis",
        }
    }

    pub fn errors_total(&self) -> u64 {
        self.store().errors_total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_partners_per_window() {
        let v = InProcessVelocity::default();
        let v = |u: &str, p: &str, t: i64| v.record(u, p, t).expect("in-process never fails");
        let t0 = 1_000 * DAY_MS;
        assert_eq!(v("u", "p1", t0).partners_1h, 1);
        assert_eq!(v("u", "p1", t0 + 1).partners_1h, 1); // same partner again
        let c = v("u", "p2", t0 + 2 * HOUR_MS);
        assert_eq!((c.partners_1h, c.partners_24h, c.partners_30d), (1, 2, 2));
        let c = v("u", "p3", t0 + 2 * DAY_MS);
        assert_eq!((c.partners_1h, c.partners_24h, c.partners_30d), (1, 1, 3));
        let c = v("u", "p4", t0 + 40 * DAY_MS);
        assert_eq!((c.partners_1h, c.partners_24h, c.partners_30d), (1, 1, 1));
        assert_eq!(v("other", "p1", t0).partners_30d, 1);
    }

    #[test]
    fn users_nobody_queried_for_30_days_are_swept() {
        let v = InProcessVelocity::default();
        let held = |v: &InProcessVelocity, u: &str| {
            v.shards[shard_of(u)]
                .lock()
                .map(|s| s.users.contains_key(u))
                .unwrap_or(false)
        };
        let neighbour = (0..1000)
            .map(|i| format!("u{i}"))
            .find(|u| shard_of(u) == shard_of("idle") && u != "idle")
            .expect("another user in the same shard");
        let t0 = 1_000 * DAY_MS;
        v.record("idle", "p1", t0).expect("in process");
        v.record(&neighbour, "p1", t0 + 29 * DAY_MS)
            .expect("in process");
        assert!(held(&v, "idle"), "29 days: still inside the window");
        v.record(&neighbour, "p2", t0 + 30 * DAY_MS + 1)
            .expect("in process");
        assert!(!held(&v, "idle"), "30 days: swept");
        assert!(held(&v, &neighbour));
    }
}
