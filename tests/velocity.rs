//! The shared velocity store against a real Redis (Debian's `redis-server`, which `.ci/run`
//! installs): the same counts as the in-process store, two real servers counting one user's
//! lenders together, and an outage refused with UNAVAILABLE and recovered from without a
//! restart. Each test prints why and passes when `redis-server` is not on this machine.

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sesame::config::{sha256_hex, Config, PartnerConfig, DEMO_CONSENT_SECRET};
use sesame::rules::velocity::{RedisClient, RedisTlsFiles, RedisVelocity, RedisVelocityConfig};
use sesame::rules::{InProcessVelocity, VelocityStore};
use sesame::security::consent::{unix_now, ConsentKey};
use sesame::service::pb;
use sesame::service::pb::admin_client::AdminClient;
use sesame::service::pb::credit_scoring_client::CreditScoringClient;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;

const HOUR_MS: i64 = 3_600_000;
const MULTI_LENDING_RULE: &str = "FR-001";

/// A throwaway `redis-server` on a free loopback port, nothing persisted; killed on drop.
struct TempRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// TLS only (no plain port), with the test CA's server certificate, and clients must show
    /// a certificate signed by that CA (`tls-auth-clients yes`, Redis's default).
    tls: bool,
    /// More `redis-server` arguments (a cluster node's).
    extra: Vec<String>,
}

/// The test PKI of tests/fixtures/tls (scripts/make-test-certs.sh).
fn tls_fixture(name: &str) -> PathBuf {
    crate_path("tests/fixtures/tls").join(name)
}

/// The files a client of the TLS Redis needs: the test CA and the `acme` client certificate.
fn tls_client_files() -> RedisTlsFiles {
    RedisTlsFiles {
        ca: Some(tls_fixture("ca.pem")),
        cert: Some(tls_fixture("acme.pem")),
        key: Some(tls_fixture("acme.key")),
    }
}

impl TempRedis {
    /// `None` (and the reason printed) when `redis-server` cannot run here.
    fn start(test: &str) -> Option<TempRedis> {
        Self::start_with(test, false)
    }

    /// As [`TempRedis::start`], serving TLS only.
    fn start_tls(test: &str) -> Option<TempRedis> {
        Self::start_with(test, true)
    }

    fn start_with(test: &str, tls: bool) -> Option<TempRedis> {
        Self::start_node(test, tls, |_, _| Vec::new())
    }

    /// `extra(port, dir)`: more arguments for `redis-server`.
    fn start_node(
        test: &str,
        tls: bool,
        extra: impl FnOnce(u16, &Path) -> Vec<String>,
    ) -> Option<TempRedis> {
        let port = match free_port() {
            Ok(p) => p,
            Err(e) => {
                println!("skipping {test}: no free port: {e}");
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = extra(port, dir.path());
        let mut r = TempRedis {
            port,
            dir,
            child: None,
            tls,
            extra,
        };
        match r.spawn() {
            Ok(()) => Some(r),
            Err(e) => {
                println!("skipping {test}: cannot start redis-server here ({e}); .ci/run installs Debian's redis-server");
                None
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1"]);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(tls_fixture("server.pem"))
                .arg("--tls-key-file")
                .arg(tls_fixture("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(tls_fixture("ca.pem"));
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = self
                .client()
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if ping.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    /// What a store pointed at this server is configured with.
    fn store_config(&self, prefix: &str) -> RedisVelocityConfig {
        RedisVelocityConfig {
            url: self.url(),
            key_prefix: prefix.to_string(),
            timeout: Duration::from_millis(500),
            cluster: false,
            tls: if self.tls {
                tls_client_files()
            } else {
                RedisTlsFiles::default()
            },
        }
    }

    /// A client for checking what the stores wrote (this server alone, even in a cluster).
    fn client(&self) -> redis::Client {
        match self.store_config("").client().expect("client config") {
            RedisClient::Single(c) => c,
            RedisClient::Cluster(_) => unreachable!("store_config is one server's"),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn().expect("redis-server restarts on its port");
    }
}

impl Drop for TempRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> std::io::Result<u16> {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
}

/// Three throwaway `redis-server` primaries made one Redis Cluster by `redis-cli --cluster
/// create` (slots split three ways, no replicas).
struct TempCluster {
    nodes: Vec<TempRedis>,
}

impl TempCluster {
    /// `None` (and the reason printed) when `redis-server` or `redis-cli` cannot run here.
    fn start(test: &str) -> Option<TempCluster> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            // The cluster bus gets its own free port (port + 10000 may be out of range).
            let node = TempRedis::start_node(test, false, |_, dir| {
                let bus = free_port().expect("a free port for the cluster bus");
                vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    dir.join("nodes.conf").display().to_string(),
                    "--cluster-port".into(),
                    bus.to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ]
            })?;
            nodes.push(node);
        }
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output();
        match created {
            Err(e) => {
                println!("skipping {test}: cannot run redis-cli ({e}); .ci/run installs Debian's redis-tools");
                return None;
            }
            Ok(o) => assert!(
                o.status.success(),
                "redis-cli --cluster create: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for n in &nodes {
            loop {
                let info = n
                    .client()
                    .get_connection_with_timeout(Duration::from_millis(200))
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
                    .unwrap_or_default();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster not ok in 20 s: {info}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some(TempCluster { nodes })
    }

    /// The seed URLs of the nodes `which`, comma-separated, as `velocity.redis_url` takes them.
    fn seeds(&self, which: &[usize]) -> String {
        which
            .iter()
            .map(|&i| self.nodes[i].url())
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn store(redis: &TempRedis, prefix: &str) -> RedisVelocity {
    RedisVelocity::new(redis.store_config(prefix)).expect("url parses")
}

/// 3,000 queries over 20 users and 9 partners, times on a half-hour grid (so queries land
/// exactly on the 1 h, 24 h and 30 d edges) with jumps of up to 40 days and some clock skew
/// backwards: Redis and the in-process store give the same counts after every query. The
/// queries alternate between Redis's blocking and async paths, which share the keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_counts_like_the_in_process_store() {
    let Some(redis) = TempRedis::start("redis_store_counts_like_the_in_process_store") else {
        return;
    };
    let shared = store(&redis, "t-equal");
    let local = InProcessVelocity::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut now = 20_000 * 24 * HOUR_MS;
    let half_hour = HOUR_MS / 2;
    let (mut seen_1h, mut seen_24h, mut seen_30d) = (0, 0, 0);
    for i in 0..3_000 {
        now += match rng.random_range(0..100) {
            0..=49 => 0,
            50..=79 => half_hour * rng.random_range(1..=4),
            80..=94 => half_hour * 48 * rng.random_range(1..=3),
            95..=97 => half_hour * 48 * 30,
            _ => -half_hour * rng.random_range(1..=3),
        };
        let user = format!("U{}", rng.random_range(0..20));
        let partner = format!("p{}", rng.random_range(0..9));
        let want = local.record(&user, &partner, now).expect("in process");
        let got = if i % 2 == 0 {
            shared.record(&user, &partner, now)
        } else {
            shared.record_async(&user, &partner, now).await
        }
        .expect("redis answers");
        assert_eq!(got, want, "query {i}: {user} by {partner} at {now}");
        seen_1h = seen_1h.max(want.partners_1h);
        seen_24h = seen_24h.max(want.partners_24h);
        seen_30d = seen_30d.max(want.partners_30d);
    }
    // The sequence exercised windows that differ, not only counts of 1.
    assert!(seen_1h >= 2 && seen_24h > seen_1h && seen_30d > seen_24h);
    // Idle users' keys expire with the 30-day window instead of growing forever.
    let mut con = redis.client().get_connection().expect("connect");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("t-equal:U0")
        .query(&mut con)
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 30 * 24 * HOUR_MS, "ttl {ttl}");
}

fn crate_path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn demo_user() -> String {
    demo_users(4).pop().expect("a user")
}

/// The first `n` users of the demo population.
fn demo_users(n: usize) -> Vec<String> {
    let df = sesame::io::read_parquet(&crate_path("datasets/demo/users.parquet")).expect("users");
    let ids = df.column("user_id").expect("user_id").str().expect("str");
    (0..n)
        .map(|i| ids.get(i).expect("a user").to_string())
        .collect()
}

fn partner_key(i: usize) -> String {
    format!("lender-{i}-key")
}

/// Demo mode, the shipped model and rules, five lenders allowed `cash_loan`, velocity in Redis.
fn config(redis: &TempRedis, prefix: &str, dir: &Path) -> Config {
    let mut c = Config::default();
    c.model_dir = crate_path("models");
    c.data_dir = crate_path("datasets/demo");
    c.rules_dir = crate_path("rules");
    c.watch_interval = None;
    c.metrics_listen = None;
    c.audit.path = dir.join("audit.db");
    for i in 1..=5 {
        c.partners.push(PartnerConfig::new(
            &format!("lender{i}"),
            &sha256_hex(&partner_key(i)),
            &["cash_loan"],
        ));
    }
    let store = redis.store_config(prefix);
    c.velocity.redis_url = Some(store.url);
    c.velocity.key_prefix = store.key_prefix;
    c.velocity.tls = store.tls;
    c
}

mod support;
use support::{http_get, wait_health, Spawned};

struct Server {
    client: CreditScoringClient<Channel>,
    server: Spawned,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(redis: &TempRedis, prefix: &str) -> Server {
        Server::start_with(redis, prefix, |_| {}).await
    }

    async fn start_with(
        redis: &TempRedis,
        prefix: &str,
        adjust: impl FnOnce(&mut Config),
    ) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = config(redis, prefix, dir.path());
        adjust(&mut c);
        let server = Spawned::start(c, true).await;
        support::wait_serving(server.channel.clone(), Duration::from_secs(300)).await;
        Server {
            client: CreditScoringClient::new(server.channel.clone()),
            server,
            _dir: dir,
        }
    }

    async fn score(&self, user: &str, lender: usize) -> Result<pb::ScoreResponse, tonic::Status> {
        self.score_with(user, lender, None).await
    }

    async fn score_with(
        &self,
        user: &str,
        lender: usize,
        applicant: Option<pb::ApplicantData>,
    ) -> Result<pb::ScoreResponse, tonic::Status> {
        let partner = format!("lender{lender}");
        let consent = ConsentKey::new(DEMO_CONSENT_SECRET.as_bytes()).issue(
            user,
            &partner,
            "cash_loan",
            unix_now(),
            3600,
        );
        let mut r = Request::new(pb::ScoreRequest {
            request_id: format!("{partner}-{user}"),
            user_id: user.into(),
            scenario: "cash_loan".into(),
            consent_token: consent,
            model_version: None,
            applicant,
        });
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", partner_key(lender))
                .parse()
                .expect("header"),
        );
        self.client.clone().score(r).await.map(|r| r.into_inner())
    }

    async fn shutdown(self) {
        self.server.shutdown().await.expect("run Ok");
    }

    /// Whether health turns to `want` within `secs`.
    async fn health_becomes(&self, want: ServingStatus, secs: f64) -> bool {
        wait_health(
            self.server.channel.clone(),
            want,
            Duration::from_secs_f64(secs),
        )
        .await
    }

    /// The admin status's view of the velocity store: (description, answers).
    async fn velocity_status(&self) -> (String, bool) {
        let mut r = Request::new(pb::StatusRequest {});
        r.metadata_mut().insert(
            "authorization",
            "Bearer sesame-demo-admin-key".parse().expect("header"),
        );
        let s = AdminClient::new(self.server.channel.clone())
            .status(r)
            .await
            .expect("admin status")
            .into_inner();
        (s.velocity_store, s.velocity_store_up)
    }
}

fn multi_lending_hit(r: &pb::ScoreResponse) -> bool {
    r.rule_hits.iter().any(|h| h.rule_id == MULTI_LENDING_RULE)
}

/// Five lenders query one user within the hour, alternating between two servers: neither
/// server saw five lenders itself, but the fifth answer carries the multi-lending rule
/// (`partners_24h >= 5`) because both count in the same Redis. The first four do not. Once for
/// a stored user (counted on the async path) and once for a new applicant whose data comes
/// inline (the pipeline runs on the blocking pool, and so does its count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_redis_count_one_users_lenders_together() {
    let Some(redis) =
        TempRedis::start("two_servers_sharing_redis_count_one_users_lenders_together")
    else {
        return;
    };
    let a = Server::start(&redis, "t-two").await;
    let b = Server::start(&redis, "t-two").await;
    let applicant = pb::ApplicantData {
        identity: Some(pb::IdentityFacts {
            signup_date: Some("2023-03-01".into()),
            age: Some(31),
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases = [
        (demo_user(), None),
        ("new-applicant-velocity".to_string(), Some(applicant)),
    ];
    for (user, inline) in cases {
        for lender in 1..=5 {
            let server = if lender % 2 == 1 { &a } else { &b };
            let r = server
                .score_with(&user, lender, inline.clone())
                .await
                .expect("scored");
            assert_eq!(
                multi_lending_hit(&r),
                lender == 5,
                "{user}, lender {lender}: rule hits {:?}",
                r.rule_hits
            );
            if lender == 5 {
                assert_ne!(r.decision, pb::Decision::Approve as i32);
            }
        }
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Redis restarts between two calls: the pooled connection is dead, and the next Score retries
/// once on a new one and succeeds. Redis stops: Score is refused with UNAVAILABLE (the rules
/// cannot run without the counts), and the message says why without the store's address.
/// Redis comes back (empty, on the same port): the next Score succeeds, no server restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_refuses_score_and_recovers_without_a_restart() {
    let Some(mut redis) =
        TempRedis::start("redis_outage_refuses_score_and_recovers_without_a_restart")
    else {
        return;
    };
    let s = Server::start(&redis, "t-outage").await;
    let user = demo_user();
    s.score(&user, 1).await.expect("scored while Redis is up");
    s.score(&user, 2).await.expect("scored again");

    redis.restart();
    s.score(&user, 3)
        .await
        .expect("scored on a new connection after Redis restarted");

    redis.stop();
    for lender in [1, 2, 3] {
        let e = s
            .score(&user, lender)
            .await
            .expect_err("refused while Redis is down");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains("velocity"), "{}", e.message());
        assert!(!e.message().contains("127.0.0.1"), "{}", e.message());
    }

    // A load balancer stops sending calls here: health says NOT_SERVING (the first refused
    // call sends the probe at once).
    assert!(
        s.health_becomes(ServingStatus::NotServing, 2.0).await,
        "health still SERVING while Redis is down"
    );

    // On-call sees the refusals and the outage on /metrics, without the store's address.
    let metrics_addr = s.server.metrics_addr.expect("metrics listener");
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(
        text.contains("sesame_velocity_store_errors_total{store=\"redis\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("sesame_velocity_store_up{store=\"redis\"} 0"),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1"), "{text}");

    redis.restart();
    let r = s
        .score(&user, 4)
        .await
        .expect("scored right after Redis is back");
    assert!(!multi_lending_hit(&r));
    assert!(
        s.health_becomes(ServingStatus::Serving, 5.0).await,
        "health not SERVING again after Redis came back"
    );
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(
        text.contains("sesame_velocity_store_up{store=\"redis\"} 1"),
        "{text}"
    );
    s.shutdown().await;
}

/// A Redis of its own for `test`, and a server probing it every `every`.
async fn probed_server(test: &str, every: Duration) -> Option<(TempRedis, Server)> {
    let redis = TempRedis::start(test)?;
    let server = Server::start_with(&redis, test, |c| c.health_probe_interval = every).await;
    Some((redis, server))
}

/// Health follows Redis with no call made: the probe's PING finds it gone and back. The admin
/// status says which store and whether it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_redis_without_any_call() {
    let Some((mut redis, s)) = probed_server(
        "health_follows_redis_without_any_call",
        Duration::from_millis(100),
    )
    .await
    else {
        return;
    };
    let (store, up) = s.velocity_status().await;
    assert!(store.starts_with("redis"), "{store}");
    assert!(up);

    redis.stop();
    assert!(
        s.health_becomes(ServingStatus::NotServing, 3.0).await,
        "health still SERVING with Redis gone"
    );
    assert!(!s.velocity_status().await.1);

    redis.restart();
    assert!(
        s.health_becomes(ServingStatus::Serving, 3.0).await,
        "health not SERVING with Redis back"
    );
    assert!(s.velocity_status().await.1);
    s.score(&demo_user(), 1).await.expect("scored");
    s.shutdown().await;
}

/// With a probe every minute, only a failed Score call can make the server look again: it does,
/// and health turns NOT_SERVING well before the next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_sends_the_health_probe_at_once() {
    let Some((mut redis, s)) = probed_server(
        "a_refused_call_sends_the_health_probe_at_once",
        Duration::from_secs(60),
    )
    .await
    else {
        return;
    };
    redis.stop();
    // Loading probed once; nothing but a failed call would look again within the minute.
    assert!(!s.health_becomes(ServingStatus::NotServing, 0.5).await);
    let e = s.score(&demo_user(), 1).await.expect_err("refused");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        s.health_becomes(ServingStatus::NotServing, 2.0).await,
        "a refused call did not send the probe"
    );
    s.shutdown().await;
}

/// Redis over TLS only, checking client certificates: a store with the test CA and the `acme`
/// client certificate counts on both paths (blocking and async); one that trusts another CA, or
/// shows no client certificate, is refused on both, so the certificates are really checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_checks_both_certificates() {
    let Some(redis) = TempRedis::start_tls("redis_over_tls_checks_both_certificates") else {
        return;
    };
    let now = 20_000 * 24 * HOUR_MS;
    let good = store(&redis, "t-tls");
    assert!(
        good.describe().starts_with("redis (TLS) 127.0.0.1:"),
        "{}",
        good.describe()
    );
    let first = good
        .record("U1", "p1", now)
        .expect("counted over TLS (blocking)");
    let second = good
        .record_async("U1", "p2", now)
        .await
        .expect("counted over TLS (async)");
    assert_eq!((first.partners_1h, second.partners_1h), (1, 2));

    let mut wrong_ca = redis.store_config("t-tls");
    wrong_ca.tls.ca = Some(tls_fixture("rogue-ca.pem"));
    let mut no_client_cert = redis.store_config("t-tls");
    no_client_cert.tls.cert = None;
    no_client_cert.tls.key = None;
    for (case, config) in [
        ("another CA", wrong_ca),
        ("no client certificate", no_client_cert),
    ] {
        let refused = RedisVelocity::new(config).expect("config is well formed");
        let e = refused
            .record("U1", "p3", now)
            .expect_err("refused (blocking)");
        println!("{case}, blocking: {e}");
        assert!(
            e.to_string().to_lowercase().contains("certificate"),
            "{case}: {e}"
        );
        let e = refused
            .record_async("U1", "p3", now)
            .await
            .expect_err("refused (async)");
        println!("{case}, async: {e}");
        assert!(
            e.to_string().to_lowercase().contains("certificate"),
            "{case}: {e}"
        );
    }
    // Nothing the refused stores tried was counted.
    let mut con = redis.client().get_connection().expect("connect");
    let partners: i64 = redis::cmd("ZCARD")
        .arg("t-tls:U1")
        .query(&mut con)
        .expect("zcard");
    assert_eq!(partners, 2);
}

/// A real server configured for Redis over TLS (URL and the three files, as in the config
/// file) counts a stored user's lenders there: five lenders, the fifth answer carries the
/// multi-lending rule, and the user's key in Redis holds the five partners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_counts_in_redis_over_tls() {
    let Some(redis) = TempRedis::start_tls("a_server_counts_in_redis_over_tls") else {
        return;
    };
    let s = Server::start(&redis, "t-tls-server").await;
    let user = demo_user();
    for lender in 1..=5 {
        let r = s.score(&user, lender).await.expect("scored");
        assert_eq!(multi_lending_hit(&r), lender == 5, "lender {lender}");
    }
    let mut con = redis.client().get_connection().expect("connect");
    let partners: i64 = redis::cmd("ZCARD")
        .arg(format!("t-tls-server:{user}"))
        .query(&mut con)
        .expect("zcard");
    assert_eq!(partners, 5);
    s.shutdown().await;
}

/// Two servers count in one Redis Cluster of three primaries, each knowing it from different
/// seed nodes. Six users, five lenders each: only every fifth answer carries the multi-lending
/// rule, each user's key holds five partners, and the keys are spread over the nodes, so the
/// queries were routed by slot. A primary going away turns health NOT_SERVING (the cluster
/// declares itself down and refuses every key); its return turns it SERVING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_count_in_a_redis_cluster() {
    let Some(mut cluster) = TempCluster::start("servers_count_in_a_redis_cluster") else {
        return;
    };
    let prefix = "t-cluster";
    let seeded = |which: &'static [usize]| {
        let seeds = cluster.seeds(which);
        move |c: &mut Config| {
            c.velocity.redis_url = Some(seeds);
            c.velocity.redis_cluster = true;
            c.health_probe_interval = Duration::from_millis(100);
        }
    };
    let a = Server::start_with(&cluster.nodes[0], prefix, seeded(&[0])).await;
    let b = Server::start_with(&cluster.nodes[0], prefix, seeded(&[1, 2])).await;
    let (store, up) = a.velocity_status().await;
    assert!(store.starts_with("redis cluster"), "{store}");
    assert!(up);

    let users = demo_users(6);
    for user in &users {
        for lender in 1..=5 {
            let server = if lender % 2 == 1 { &a } else { &b };
            let r = server.score(user, lender).await.expect("scored");
            assert_eq!(
                multi_lending_hit(&r),
                lender == 5,
                "{user}, lender {lender}"
            );
        }
    }
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let mut con = redis::cluster::ClusterClient::new(seeds)
        .expect("cluster client")
        .get_connection()
        .expect("connect to the cluster");
    for user in &users {
        let partners: u32 = redis::cmd("ZCARD")
            .arg(format!("{prefix}:{user}"))
            .query(&mut con)
            .expect("ZCARD");
        assert_eq!(partners, 5, "{user}");
    }
    let holding = cluster
        .nodes
        .iter()
        .filter(|n| {
            let mut c = n.client().get_connection().expect("node");
            redis::cmd("DBSIZE").query::<u64>(&mut c).expect("DBSIZE") > 0
        })
        .count();
    assert!(holding >= 2, "all keys on one node: not routed by slot");

    cluster.nodes[2].stop();
    assert!(
        a.health_becomes(ServingStatus::NotServing, 15.0).await,
        "health still SERVING with a primary gone"
    );

    // It comes back with its slots (its nodes.conf kept them; its keys are gone): the cluster
    // is whole again, and so is health.
    cluster.nodes[2].restart();
    assert!(
        a.health_becomes(ServingStatus::Serving, 20.0).await,
        "health not SERVING with the cluster whole again"
    );
    a.score(&users[0], 1).await.expect("scored again");
    a.shutdown().await;
    b.shutdown().await;
}
