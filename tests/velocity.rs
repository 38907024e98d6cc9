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
use sesame::rules::velocity::{RedisVelocity, RedisVelocityConfig};
use sesame::rules::{InProcessVelocity, VelocityStore};
use sesame::security::consent::{unix_now, ConsentKey};
use sesame::service::pb;
use sesame::service::pb::credit_scoring_client::CreditScoringClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

const HOUR_MS: i64 = 3_600_000;
const MULTI_LENDING_RULE: &str = "FR-001";

/// A throwaway `redis-server` on a free loopback port, nothing persisted; killed on drop.
struct TempRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TempRedis {
    /// `None` (and the reason printed) when `redis-server` cannot run here.
    fn start(test: &str) -> Option<TempRedis> {
        let port = match StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => {
                println!("skipping {test}: no free port: {e}");
                return None;
            }
        };
        let mut r = TempRedis {
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
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
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ping = redis::Client::open(self.url())
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
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
        format!("redis://127.0.0.1:{}/0", self.port)
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

fn store(redis: &TempRedis, prefix: &str) -> RedisVelocity {
    RedisVelocity::new(RedisVelocityConfig {
        url: redis.url(),
        key_prefix: prefix.to_string(),
        timeout: Duration::from_millis(500),
    })
    .expect("url parses")
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
    let mut con = redis::Client::open(redis.url())
        .and_then(|c| c.get_connection())
        .expect("connect");
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
    let df = sesame::io::read_parquet(&crate_path("datasets/demo/users.parquet")).expect("users");
    let ids = df.column("user_id").expect("user_id").str().expect("str");
    ids.get(3).expect("a user").to_string()
}

fn partner_key(i: usize) -> String {
    format!("lender-{i}-key")
}

/// Demo mode, the shipped model and rules, five lenders allowed `cash_loan`, velocity in Redis.
fn config(redis_url: &str, prefix: &str, dir: &Path) -> Config {
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
    c.velocity.redis_url = Some(redis_url.to_string());
    c.velocity.key_prefix = prefix.to_string();
    c
}

mod support;
use support::{http_get, Spawned};

struct Server {
    client: CreditScoringClient<Channel>,
    server: Spawned,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(redis_url: &str, prefix: &str) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Spawned::start(config(redis_url, prefix, dir.path()), true).await;
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
    let a = Server::start(&redis.url(), "t-two").await;
    let b = Server::start(&redis.url(), "t-two").await;
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
    let s = Server::start(&redis.url(), "t-outage").await;
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

    // On-call sees the refusals on /metrics, without the store's address.
    let metrics_addr = s.server.metrics_addr.expect("metrics listener");
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(
        text.contains("sesame_velocity_store_errors_total{store=\"redis\"} 3"),
        "{text}"
    );

    redis.restart();
    let r = s
        .score(&user, 4)
        .await
        .expect("scored right after Redis is back");
    assert!(!multi_lending_hit(&r));
    s.shutdown().await;
}
