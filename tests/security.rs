//! Partner security and the query audit log, end to end (docs/security.md): the real server on
//! 127.0.0.1:0 with a real tonic client; refusals with their codes, each found in the audit
//! store; the audit failing closed; production-mode start checks; and a crash test that
//! `kill -9`s the real `sesame serve` binary under load.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sesame::audit::{user_ref, Filter, Store};
use sesame::config::{sha256_hex, Config, Mode, PartnerConfig, DEMO_CONSENT_SECRET};
use sesame::security::consent::{unix_now, ConsentKey};
use sesame::service::pb::credit_scoring_client::CreditScoringClient;
use sesame::service::pb::{self, score_stream_item::Item};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

const DEMO_KEY: &str = "sesame-demo-key";
const NARROW_KEY: &str = "narrow-partner-key";
const SLOW_KEY: &str = "slow-partner-key";
const ENGINE_LOAD_TIMEOUT: Duration = Duration::from_secs(300);

fn crate_path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sesame")
}

mod support;
use support::Spawned;

struct Running {
    channel: Channel,
    audit_path: PathBuf,
    server: Spawned,
    _dir: tempfile::TempDir,
}

impl Running {
    fn scoring(&self) -> CreditScoringClient<Channel> {
        CreditScoringClient::new(self.channel.clone())
    }
    async fn shutdown(self) {
        self.server.shutdown().await.expect("run Ok");
    }
}

/// Demo mode plus `narrow` (cash_loan only) and `slow` (1/s, burst 2); the engine loads the
/// crate's models only when `engine` is set.
fn config(engine: bool, dir: &Path) -> Config {
    let mut c = Config::default();
    if engine {
        c.model_dir = crate_path("models");
        c.data_dir = crate_path("datasets/demo");
        c.rules_dir = crate_path("rules");
    } else {
        c.model_dir = dir.join("no-models");
        c.data_dir = dir.join("no-data");
        c.rules_dir = dir.join("no-rules");
    }
    c.watch_interval = None;
    c.metrics_listen = None;
    c.audit.path = dir.join("var/audit.db");
    c.partners.push(PartnerConfig::new(
        "narrow",
        &sha256_hex(NARROW_KEY),
        &["cash_loan"],
    ));
    let mut slow = PartnerConfig::new("slow", &sha256_hex(SLOW_KEY), &["cash_loan"]);
    slow.rate_per_sec = 1;
    slow.burst = 2;
    c.partners.push(slow);
    c
}

async fn start(engine: bool) -> Running {
    start_in(engine, tempfile::tempdir().expect("tempdir")).await
}

/// [`start`] in a directory the caller has prepared.
async fn start_in(engine: bool, dir: tempfile::TempDir) -> Running {
    let c = config(engine, dir.path());
    let audit_path = c.audit.path.clone();
    let server = Spawned::start(c, false).await;
    Running {
        channel: server.channel.clone(),
        audit_path,
        server,
        _dir: dir,
    }
}

async fn wait_serving(channel: Channel) {
    support::wait_serving(channel, ENGINE_LOAD_TIMEOUT).await
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header"),
    );
    r
}

fn token(user: &str, partner: &str, scenario: &str) -> String {
    ConsentKey::new(DEMO_CONSENT_SECRET.as_bytes()).issue(user, partner, scenario, unix_now(), 3600)
}

fn req(id: &str, user: &str, scenario: &str, consent: String) -> pb::ScoreRequest {
    pb::ScoreRequest {
        request_id: id.into(),
        user_id: user.into(),
        scenario: scenario.into(),
        consent_token: consent,
        model_version: None,
        applicant: None,
    }
}

fn demo_user() -> String {
    let path = crate_path("datasets/demo/users.parquet");
    let df = sesame::io::read_parquet(&path).expect("demo users");
    let ids = df
        .column("user_id")
        .expect("user_id")
        .str()
        .expect("str")
        .clone();
    ids.get(0).expect("a user").to_string()
}

/// `sesame consent issue` prints the token alone on one line.
fn cli_token(user: &str, partner: &str, scenario: &str, ttl: &str) -> String {
    let out = Command::new(bin())
        .args(["consent", "issue", "--user", user, "--partner", partner])
        .args(["--scenario", scenario, "--ttl", ttl])
        .env_remove("SESAME_MODE")
        .env_remove("SESAME_CONSENT_SECRET")
        .output()
        .expect("run sesame consent issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    assert_eq!(text.lines().count(), 1, "{text}");
    text.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_each_refusal_has_its_code_and_is_in_the_audit_log() {
    let r = start(true).await;
    wait_serving(r.channel.clone()).await;
    let user = demo_user();
    let mut c = r.scoring();
    let good = || token(&user, "demo", "cash_loan");
    // (request id, key, request, expected code, expected partner, message fragment)
    let expired = ConsentKey::new(DEMO_CONSENT_SECRET.as_bytes()).issue(
        &user,
        "demo",
        "cash_loan",
        unix_now() - 7200,
        3600,
    );
    let forged = ConsentKey::new(b"not-the-server-secret-not-the-server-secret").issue(
        &user,
        "demo",
        "cash_loan",
        unix_now(),
        3600,
    );
    let cases: Vec<(&str, Option<&str>, pb::ScoreRequest, Code, &str, &str)> = vec![
        (
            "ok-cli",
            Some(DEMO_KEY),
            req(
                "ok-cli",
                &user,
                "cash_loan",
                cli_token(&user, "demo", "cash_loan", "1h"),
            ),
            Code::Ok,
            "demo",
            "",
        ),
        (
            "no-key",
            None,
            req("no-key", &user, "cash_loan", good()),
            Code::Unauthenticated,
            "unknown",
            "authorization",
        ),
        (
            "wrong-key",
            Some("not-a-key"),
            req("wrong-key", &user, "cash_loan", good()),
            Code::Unauthenticated,
            "unknown",
            "unknown api key",
        ),
        (
            "not-allowed",
            Some(NARROW_KEY),
            req(
                "not-allowed",
                &user,
                "rental_deposit_free",
                token(&user, "narrow", "rental_deposit_free"),
            ),
            Code::PermissionDenied,
            "narrow",
            "not allowed scenario",
        ),
        (
            "no-consent",
            Some(DEMO_KEY),
            req("no-consent", &user, "cash_loan", String::new()),
            Code::PermissionDenied,
            "demo",
            "consent_token: missing",
        ),
        (
            "bad-consent",
            Some(DEMO_KEY),
            req("bad-consent", &user, "cash_loan", "c-1".into()),
            Code::PermissionDenied,
            "demo",
            "consent_token: malformed",
        ),
        (
            "expired",
            Some(DEMO_KEY),
            req("expired", &user, "cash_loan", expired),
            Code::PermissionDenied,
            "demo",
            "expired at",
        ),
        (
            "forged",
            Some(DEMO_KEY),
            req("forged", &user, "cash_loan", forged),
            Code::PermissionDenied,
            "demo",
            "signature",
        ),
        (
            "other-user",
            Some(DEMO_KEY),
            req(
                "other-user",
                &user,
                "cash_loan",
                token("U-someone-else", "demo", "cash_loan"),
            ),
            Code::PermissionDenied,
            "demo",
            "another user",
        ),
        (
            "other-partner",
            Some(DEMO_KEY),
            req(
                "other-partner",
                &user,
                "cash_loan",
                token(&user, "narrow", "cash_loan"),
            ),
            Code::PermissionDenied,
            "demo",
            "partner 'narrow'",
        ),
        (
            "other-scenario",
            Some(DEMO_KEY),
            req(
                "other-scenario",
                &user,
                "cash_loan",
                token(&user, "demo", "rental_deposit_free"),
            ),
            Code::PermissionDenied,
            "demo",
            "scenario 'rental_deposit_free'",
        ),
        (
            "invalid",
            Some(DEMO_KEY),
            req("invalid", "", "cash_loan", good()),
            Code::InvalidArgument,
            "demo",
            "user_id:",
        ),
        (
            "not-found",
            Some(DEMO_KEY),
            req(
                "not-found",
                "U-not-in-store",
                "cash_loan",
                token("U-not-in-store", "demo", "cash_loan"),
            ),
            Code::NotFound,
            "demo",
            "",
        ),
    ];
    let mut expected: Vec<(String, Code, String)> = Vec::new();
    for (id, key, msg, code, partner, fragment) in cases {
        let result = match key {
            Some(k) => c.score(with_key(msg, k)).await,
            None => c.score(Request::new(msg)).await,
        };
        match result {
            Ok(resp) => {
                assert_eq!(code, Code::Ok, "{id}: answered");
                assert_eq!(resp.into_inner().request_id, id);
            }
            Err(s) => {
                assert_eq!(s.code(), code, "{id}: {s:?}");
                assert!(s.message().contains(fragment), "{id}: {}", s.message());
                assert!(!s.message().contains(&user), "{id}: no user id in messages");
            }
        }
        expected.push((id.to_string(), code, partner.to_string()));
    }
    // Over the rate limit: `slow` allows a burst of 2 at 1/s.
    let mut exhausted = None;
    for i in 0..4 {
        let id = format!("slow-{i}");
        let m = req(&id, &user, "cash_loan", token(&user, "slow", "cash_loan"));
        match c.score(with_key(m, SLOW_KEY)).await {
            Ok(_) => expected.push((id, Code::Ok, "slow".into())),
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("retry after"), "{}", s.message());
                assert!(
                    s.metadata().get("retry-after").is_some(),
                    "retry-after metadata"
                );
                expected.push((id, Code::ResourceExhausted, "slow".into()));
                exhausted.get_or_insert(i);
            }
        }
    }
    assert!(exhausted.is_some_and(|i| i >= 2), "burst 2 then refused");
    // ScoreStream: each item recorded; a stream without a key recorded once.
    let items = vec![
        req("st-ok", &user, "cash_loan", good()),
        req("st-no-consent", &user, "cash_loan", String::new()),
    ];
    let mut out = c
        .score_stream(with_key(tokio_stream::iter(items), DEMO_KEY))
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0;
    while let Some(item) = out.message().await.expect("item") {
        match item.item.expect("set") {
            Item::Response(r) => assert_eq!(r.request_id, "st-ok"),
            Item::Error(e) => {
                assert_eq!(e.request_id, "st-no-consent");
                assert_eq!(e.code, Code::PermissionDenied as i32);
            }
        }
        n += 1;
    }
    assert_eq!(n, 2);
    expected.push(("st-ok".into(), Code::Ok, "demo".into()));
    expected.push((
        "st-no-consent".into(),
        Code::PermissionDenied,
        "demo".into(),
    ));
    let e = c
        .score_stream(tokio_stream::iter(vec![req(
            "x",
            &user,
            "cash_loan",
            good(),
        )]))
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::Unauthenticated);

    // Every call is in the store, with its partner and code, before its answer came back.
    let store = Store::open_read_only(&r.audit_path).expect("audit store");
    let all = store.query(&Filter::default()).expect("query");
    for (id, code, partner) in &expected {
        let rec = all
            .iter()
            .find(|s| &s.record.request_id == id)
            .unwrap_or_else(|| panic!("{id} not in the audit log"));
        let want = sesame::service::audit::code_name(*code);
        assert_eq!(rec.record.code, want, "{id}");
        assert_eq!(&rec.record.partner, partner, "{id}");
        if *code == Code::Ok {
            assert!(!rec.record.decision.is_empty() && !rec.record.model_version.is_empty());
        }
    }
    assert!(
        all.iter()
            .any(|s| s.record.method == "ScoreStream" && s.record.code == "UNAUTHENTICATED"),
        "the refused stream is recorded"
    );
    assert_eq!(all.len(), expected.len() + 1);
    // No raw user id in the store; the user's queries are found through their reference.
    assert!(all
        .iter()
        .all(|s| !format!("{:?}", s.record).contains(&user)));
    let mine = store
        .query(&Filter {
            user_ref: Some(user_ref(&user)),
            ..Default::default()
        })
        .expect("query");
    assert!(mine.len() >= 10, "{}", mine.len());
    assert_eq!(store.verify().expect("verify").first_broken, None);
    // The CLI answers the same questions.
    let out = Command::new(bin())
        .args(["audit", "--path"])
        .arg(&r.audit_path)
        .args(["--user", &user])
        .output()
        .expect("sesame audit --user");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no-consent") && text.contains("PERMISSION_DENIED"),
        "{text}"
    );
    assert!(!text.contains(&user), "the listing shows no user id");
    let out = Command::new(bin())
        .args(["audit", "--path"])
        .arg(&r.audit_path)
        .args(["--partner", "slow", "--since", "2000-01-01T00:00:00Z"])
        .output()
        .expect("sesame audit --partner");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("RESOURCE_EXHAUSTED"),
        "{text}"
    );
    assert!(!text.contains("\tdemo\t"), "{text}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_audit_cannot_record_is_not_answered() {
    let r = start(false).await;
    let mut c = r.scoring();
    let m = || req("r", "u1", "cash_loan", token("u1", "demo", "cash_loan"));
    let e = c
        .score(with_key(m(), DEMO_KEY))
        .await
        .expect_err("no engine");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(!e.message().contains("audit"), "{}", e.message());
    let store = Store::open_read_only(&r.audit_path).expect("store");
    assert_eq!(store.count().expect("count"), 1);
    assert_eq!(store.verify().expect("verify").first_broken, None);
    r.shutdown().await;

    // The disk refuses the audit journal's writes (its file is /dev/full: every write fails
    // with ENOSPC): the call fails instead of being answered unrecorded, and nothing is left.
    if Path::new("/dev/full").exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("var")).expect("mkdir");
        std::os::unix::fs::symlink("/dev/full", dir.path().join("var/audit.journal"))
            .expect("symlink");
        let r = start_in(false, dir).await;
        let mut c = r.scoring();
        let e = c
            .score(with_key(m(), DEMO_KEY))
            .await
            .expect_err("audit down");
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.message().contains("audit log"), "{}", e.message());
        let store = Store::open_read_only(&r.audit_path).expect("store");
        assert_eq!(
            store.count().expect("count"),
            0,
            "nothing recorded, nothing answered"
        );
        r.shutdown().await;
    } else {
        println!("skipped the disk-full case: no /dev/full");
    }

    // An audit path that cannot be opened stops the start.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(false, dir.path());
    std::fs::write(dir.path().join("file"), b"x").expect("write");
    c.audit.path = dir.path().join("file/audit.db");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let e = sesame::server::run_with_metrics(listener, None, c, std::future::pending())
        .await
        .expect_err("unopenable audit log");
    assert!(e.to_string().contains("audit log"), "{e:#}");
}

/// Clears the immutable flag it set, so that the temporary directory can be removed whatever
/// the test's outcome.
struct Immutable(PathBuf);

impl Immutable {
    /// `chattr +i path`, or why it cannot be set here.
    fn set(path: &Path) -> Result<Immutable, String> {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run chattr: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// The audit log's disk stops taking writes (its journal made immutable: every write fails with
/// EPERM, as on a file system remounted read-only): the Score call is refused, not answered
/// unrecorded; health turns NOT_SERVING, `/metrics` says `sesame_audit_writable 0` and
/// `Admin/Status` `audit_writable: false`. Writable
/// again: the health probe's rewrite of the journal's last block succeeds, health is SERVING,
/// and the next call is answered and recorded. Skipped (with the reason) where `chattr +i`
/// cannot be set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_audit_logs_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(true, dir.path());
    c.health_probe_interval = Duration::from_millis(100);
    let audit_path = c.audit.path.clone();
    let server = Spawned::start(c, true).await;
    let r = Running {
        channel: server.channel.clone(),
        audit_path,
        server,
        _dir: dir,
    };
    wait_serving(r.channel.clone()).await;
    let user = demo_user();
    let call = |id: &str| req(id, &user, "cash_loan", token(&user, "demo", "cash_loan"));
    r.scoring()
        .score(with_key(call("before"), DEMO_KEY))
        .await
        .expect("answered while the disk takes writes");

    let journal = sesame::audit::journal_path(&r.audit_path);
    let frozen = match Immutable::set(&journal) {
        Ok(f) => f,
        Err(why) => {
            println!("skipping health_follows_the_audit_logs_disk: chattr +i refused here ({why})");
            r.shutdown().await;
            return;
        }
    };
    let e = r
        .scoring()
        .score(with_key(call("refused"), DEMO_KEY))
        .await
        .expect_err("the audit cannot record it");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("audit log"), "{}", e.message());
    assert!(
        support::wait_health(
            r.channel.clone(),
            support::NOT_SERVING,
            Duration::from_secs(3)
        )
        .await,
        "health still SERVING with the audit log unwritable"
    );
    let metrics = r.server.metrics_addr.expect("metrics listener");
    let text = support::http_get(metrics, "/metrics").await;
    assert!(text.contains("sesame_audit_writable 0"), "{text}");
    let admin_says_writable = || {
        let channel = r.channel.clone();
        async move {
            sesame::service::pb::admin_client::AdminClient::new(channel)
                .status(with_key(pb::StatusRequest {}, "sesame-demo-admin-key"))
                .await
                .expect("admin status")
                .into_inner()
                .audit_writable
        }
    };
    assert!(!admin_says_writable().await);

    drop(frozen);
    assert!(
        support::wait_health(r.channel.clone(), support::SERVING, Duration::from_secs(3)).await,
        "health not SERVING with the audit log writable again"
    );
    let text = support::http_get(metrics, "/metrics").await;
    assert!(text.contains("sesame_audit_writable 1"), "{text}");
    assert!(
        text.contains("\nsesame_audit_index_lag_records "),
        "no index lag gauge: {text}"
    );
    assert!(admin_says_writable().await);
    r.scoring()
        .score(with_key(call("after"), DEMO_KEY))
        .await
        .expect("answered again");
    // Stopped, but its directory kept for the reading.
    let Running {
        server,
        audit_path,
        _dir: dir,
        ..
    } = r;
    server.shutdown().await.expect("run Ok");
    let store = Store::open_read_only(&audit_path).expect("store");
    let ids: Vec<String> = store
        .query(&Filter::default())
        .expect("query")
        .into_iter()
        .map(|s| s.record.request_id)
        .collect();
    assert_eq!(ids, ["before", "after"], "the refused call left no record");
    assert_eq!(store.verify().expect("verify").first_broken, None);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_refuses_demo_and_missing_credentials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut base = config(false, dir.path());
    base.mode = Mode::Production;
    base.partners.retain(|p| p.id != "slow");
    let admin = sha256_hex("a-real-admin-key");
    let secret = "a-real-consent-secret-of-32-bytes-or-more".to_string();
    let cases: Vec<(Box<dyn Fn(&mut Config)>, &str)> = vec![
        (
            Box::new(|c| c.consent_secret = Some(secret.clone())),
            "admin_key_sha256",
        ),
        (
            Box::new(|c| c.admin_key_sha256 = Some(admin.clone())),
            "consent_secret",
        ),
        (
            Box::new(|c| {
                c.admin_key_sha256 = Some(admin.clone());
                c.consent_secret = Some(DEMO_CONSENT_SECRET.into());
            }),
            "demo consent secret",
        ),
        (
            Box::new(|c| {
                c.admin_key_sha256 = Some(sha256_hex("sesame-demo-admin-key"));
                c.consent_secret = Some(secret.clone());
            }),
            "demo key",
        ),
        (
            Box::new(|c| {
                c.admin_key_sha256 = Some(admin.clone());
                c.consent_secret = Some(secret.clone());
                c.audit.enabled = false;
            }),
            "audit.enabled",
        ),
    ];
    for (set, want) in cases {
        let mut c = base.clone();
        set(&mut c);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let e = sesame::server::run_with_metrics(listener, None, c, std::future::pending())
            .await
            .expect_err(want);
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
    // The binary says the same and exits non-zero.
    let out = Command::new(bin())
        .arg("serve")
        .env("SESAME_MODE", "production")
        .env(
            "SESAME_PARTNERS",
            format!("acme:{}:cash_loan", sha256_hex("real")),
        )
        .env("SESAME_CONSENT_SECRET", &secret)
        .env_remove("SESAME_ADMIN_KEY_SHA256")
        .output()
        .expect("run serve");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin_key_sha256"), "{err}");
    // Demo-mode consent issue refuses a partner or scenario the config does not allow.
    let out = Command::new(bin())
        .args(["consent", "issue", "--user", "u", "--partner", "ghost"])
        .args(["--scenario", "cash_loan"])
        .output()
        .expect("run consent");
    assert!(!out.status.success());
}

/// The crash test: the real binary under load, `kill -9`, then every answered call is in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_kill_9_under_load_loses_no_answered_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.db");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
    let mut child = Command::new(bin())
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SESAME_LISTEN", addr.to_string())
        .env("SESAME_METRICS_LISTEN", "off")
        .env("SESAME_AUDIT_PATH", &audit)
        .env("SESAME_WATCH_INTERVAL_SECS", "0")
        .env_remove("SESAME_MODE")
        .env_remove("SESAME_CONSENT_SECRET")
        .env_remove("SESAME_PARTNERS")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn sesame serve");
    let deadline = Instant::now() + ENGINE_LOAD_TIMEOUT;
    let channel = loop {
        if let Ok(ch) = Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
        {
            break ch;
        }
        assert!(Instant::now() < deadline, "server did not listen");
        assert!(child.try_wait().expect("wait").is_none(), "server exited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    wait_serving(channel.clone()).await;
    let user = demo_user();
    let ok_token = token(&user, "demo", "cash_loan");
    // Answers received by the client: (request id, code).
    let received: Arc<Mutex<Vec<(String, Code)>>> = Arc::default();
    let mut workers = Vec::new();
    for w in 0..6 {
        let mut c = CreditScoringClient::new(channel.clone());
        let (received, user, ok_token) = (received.clone(), user.clone(), ok_token.clone());
        workers.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("w{w}-{i}");
                // One call in five is refused (no consent): refusals must be logged too.
                let consent = if i % 5 == 4 {
                    String::new()
                } else {
                    ok_token.clone()
                };
                match c
                    .score(with_key(req(&id, &user, "cash_loan", consent), DEMO_KEY))
                    .await
                {
                    Ok(_) => received.lock().expect("lock").push((id, Code::Ok)),
                    Err(s) if s.code() == Code::PermissionDenied => {
                        received.lock().expect("lock").push((id, s.code()))
                    }
                    // The server is gone: no answer for this call.
                    Err(_) => return,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.lock().expect("lock").len() < 3000 {
        assert!(Instant::now() < deadline, "load too slow");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("kill -9"); // SIGKILL on Unix
    let _ = child.wait();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .expect("workers see the server gone")
            .expect("worker");
    }
    let received = received.lock().expect("lock").clone();
    // Restart: open the store (recovers the WAL) as the next server would.
    let mut store = Store::open(&audit).expect("reopen after the crash");
    let all = store.query(&Filter::default()).expect("query");
    let logged: HashSet<(String, String)> = all
        .iter()
        .map(|s| (s.record.request_id.clone(), s.record.code.clone()))
        .collect();
    let missing: Vec<_> = received
        .iter()
        .filter(|(id, code)| {
            !logged.contains(&(
                id.clone(),
                sesame::service::audit::code_name(*code).to_string(),
            ))
        })
        .collect();
    let refused = received.iter().filter(|(_, c)| *c != Code::Ok).count();
    println!(
        "crash test: {} answers received ({} OK, {refused} PERMISSION_DENIED), {} records in the log after kill -9, {} answered calls missing",
        received.len(),
        received.len() - refused,
        all.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "answered but not logged: {missing:?}");
    assert!(all.len() >= received.len());
    assert_eq!(store.verify().expect("verify").first_broken, None);
    // The chain goes on after the restart.
    let head = store.head_seq();
    store
        .append(&[sesame::audit::AuditRecord {
            ts_ms: 1,
            method: "Score".into(),
            partner: "demo".into(),
            code: "OK".into(),
            ..Default::default()
        }])
        .expect("append after restart");
    assert_eq!(store.head_seq(), head + 1);
    drop(store);
    let verify = |path: &Path| {
        Command::new(bin())
            .args(["audit", "--verify", "--path"])
            .arg(path)
            .output()
            .expect("sesame audit --verify")
    };
    let out = verify(&audit);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Tampering with one stored record is detected, naming it.
    let victim = all[all.len() / 2].seq;
    let conn = rusqlite::Connection::open(&audit).expect("open");
    conn.execute(
        "UPDATE audit SET code = 'OK', decision = 'approve' WHERE seq = ?1",
        [victim],
    )
    .expect("tamper");
    conn.execute(
        "UPDATE audit SET partner = 'nobody' WHERE seq = ?1",
        [victim],
    )
    .expect("tamper");
    drop(conn);
    let out = verify(&audit);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "tampering must fail --verify: {text}"
    );
    assert!(
        text.contains(&format!("BROKEN at record {victim}")),
        "{text}"
    );
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate_path("tests/fixtures/tls").join(name)).expect("TLS fixture")
}

/// SHA-256 (hex) of a PEM certificate's DER bytes, as `cert_sha256` is configured.
fn cert_sha256(pem: &[u8]) -> String {
    use base64::Engine;
    let text = String::from_utf8(pem.to_vec()).expect("pem");
    let b64: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// A TLS channel to `addr`, trusting the test CA, with the client certificate `client` if any.
async fn tls_channel(addr: SocketAddr, client: Option<&str>) -> Result<Channel, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(fixture("ca.pem")))
        .domain_name("localhost");
    if let Some(name) = client {
        tls = tls.identity(Identity::from_pem(
            fixture(&format!("{name}.pem")),
            fixture(&format!("{name}.key")),
        ));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn ping(channel: Channel, key: Option<&str>) -> Result<String, tonic::Status> {
    let mut client = CreditScoringClient::new(channel);
    let msg = pb::PingRequest {};
    let req = match key {
        Some(k) => with_key(msg, k),
        None => Request::new(msg),
    };
    client.ping(req).await.map(|r| r.into_inner().partner_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_identifies_the_partner_by_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = config(false, dir.path());
    c.tls.cert = Some(crate_path("tests/fixtures/tls/server.pem"));
    c.tls.key = Some(crate_path("tests/fixtures/tls/server.key"));
    c.tls.client_ca = Some(crate_path("tests/fixtures/tls/ca.pem"));
    let mut acme = PartnerConfig::new("acme", &sha256_hex("acme-key"), &["cash_loan"]);
    acme.cert_sha256 = Some(cert_sha256(&fixture("acme.pem")));
    c.partners.push(acme);
    let audit_path = c.audit.path.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(sesame::server::run_with_metrics(listener, None, c, async {
        let _ = rx.await;
    }));

    // The certificate alone identifies acme.
    let acme_tls = tls_channel(addr, Some("acme")).await.expect("mTLS connect");
    assert_eq!(ping(acme_tls.clone(), None).await.expect("ping"), "acme");
    assert_eq!(
        ping(acme_tls.clone(), Some("acme-key"))
            .await
            .expect("ping"),
        "acme"
    );
    // Its certificate with another partner's key: refused.
    let s = ping(acme_tls.clone(), Some(DEMO_KEY)).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("different partners"), "{s:?}");
    // A Score over mTLS is audited under the certificate's partner.
    let mut client = CreditScoringClient::new(acme_tls);
    let s = client
        .score(Request::new(req(
            "tls-1",
            "U1",
            "cash_loan",
            token("U1", "acme", "cash_loan"),
        )))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unavailable, "no engine loaded: {s:?}");

    // TLS without a client certificate: keys still work, except acme's (bound to its cert).
    let plain_tls = tls_channel(addr, None).await.expect("TLS connect");
    assert_eq!(
        ping(plain_tls.clone(), Some(DEMO_KEY)).await.expect("ping"),
        "demo"
    );
    let s = ping(plain_tls.clone(), Some("acme-key")).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert!(s.message().contains("client certificate"), "{s:?}");
    let s = ping(plain_tls, None).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // A certificate from another CA fails the handshake; so does plaintext.
    let rogue = match tls_channel(addr, Some("rogue")).await {
        Err(_) => None,
        Ok(ch) => Some(ping(ch, None).await),
    };
    assert!(
        !matches!(rogue, Some(Ok(_))),
        "a certificate of an unknown CA must not get through: {rogue:?}"
    );
    let plaintext = async {
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        ping(ch, Some(DEMO_KEY)).await.map_err(|e| e.to_string())
    };
    let plaintext = tokio::time::timeout(Duration::from_secs(10), plaintext)
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    assert!(plaintext.is_err(), "plaintext on a TLS port: {plaintext:?}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("server stops")
        .expect("no panic")
        .expect("run Ok");
    let store = Store::open_read_only(&audit_path).expect("audit store");
    let acme_calls = store
        .query(&Filter {
            partner: Some("acme".into()),
            ..Filter::default()
        })
        .expect("query");
    assert_eq!(acme_calls.len(), 1, "{acme_calls:?}");
    assert_eq!(acme_calls[0].record.request_id, "tls-1");
    assert_eq!(acme_calls[0].record.code, "UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start_err = |c: Config| async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        sesame::server::run_with_metrics(listener, None, c, async {})
            .await
            .expect_err("must refuse to start")
            .to_string()
    };
    let mut c = config(false, dir.path());
    c.tls.cert = Some(crate_path("tests/fixtures/tls/server.pem"));
    let e = start_err(c).await;
    assert!(e.contains("tls.key"), "{e}");

    let mut c = config(false, dir.path());
    c.tls.cert = Some(dir.path().join("missing.pem"));
    c.tls.key = Some(crate_path("tests/fixtures/tls/server.key"));
    let e = format!("{:#}", start_err(c).await);
    assert!(e.contains("tls.cert"), "{e}");

    let mut c = config(false, dir.path());
    let mut p = PartnerConfig::new("acme", &sha256_hex("acme-key"), &["cash_loan"]);
    p.cert_sha256 = Some("ab".repeat(32));
    c.partners.push(p);
    let e = start_err(c).await;
    assert!(
        e.contains("cert_sha256") && e.contains("tls.client_ca"),
        "{e}"
    );

    // Client certificates required: a TLS client without one cannot call.
    let mut c = config(false, dir.path());
    c.tls.cert = Some(crate_path("tests/fixtures/tls/server.pem"));
    c.tls.key = Some(crate_path("tests/fixtures/tls/server.key"));
    c.tls.client_ca = Some(crate_path("tests/fixtures/tls/ca.pem"));
    c.tls.require_client_cert = true;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(sesame::server::run_with_metrics(listener, None, c, async {
        let _ = rx.await;
    }));
    let without = match tls_channel(addr, None).await {
        Err(_) => None,
        Ok(ch) => Some(ping(ch, Some(DEMO_KEY)).await),
    };
    assert!(
        !matches!(without, Some(Ok(_))),
        "no client certificate must be refused: {without:?}"
    );
    let with = tls_channel(addr, Some("acme")).await.expect("mTLS connect");
    assert_eq!(ping(with, Some(DEMO_KEY)).await.expect("ping"), "demo");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
}
