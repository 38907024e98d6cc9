//! The gRPC service end to end: the real server (`server::run`) on 127.0.0.1:0, called with the
//! generated tonic clients.
//!
//! The first group needs no model (the engine is pointed at an empty directory, so it never
//! loads). The second group (`engine_*`) scores with the crate's `models/`, `datasets/demo` and
//! `rules/`; it fails with the engine's load error until those exist.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sesame::config::{sha256_hex, Config, Mode, PartnerConfig, DEMO_CONSENT_SECRET};
use sesame::domain::Band;
use sesame::security::consent::{unix_now, ConsentKey};
use sesame::service::pb::admin_client::AdminClient;
use sesame::service::pb::credit_scoring_client::CreditScoringClient;
use sesame::service::pb::{self, score_stream_item::Item};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const PARTNER_KEY: &str = "sesame-demo-key";
const ADMIN_KEY: &str = "sesame-demo-admin-key";
/// A second partner, allowed `cash_loan` only.
const NARROW_KEY: &str = "narrow-partner-key";
/// Engine loading reads parquet and fits nothing, but 2 shared cores can be slow.
const ENGINE_LOAD_TIMEOUT: Duration = Duration::from_secs(300);

mod support;
use support::{http_get, Spawned, SCORING};

struct Running {
    addr: SocketAddr,
    metrics_addr: SocketAddr,
    channel: Channel,
    server: Spawned,
    _dirs: Vec<tempfile::TempDir>,
}

impl Running {
    fn scoring(&self) -> CreditScoringClient<Channel> {
        CreditScoringClient::new(self.channel.clone())
    }
    fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }
    fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }
    /// Triggers shutdown and waits for `run` to return.
    async fn shutdown(self) -> anyhow::Result<()> {
        self.server.shutdown().await
    }
}

fn crate_path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn narrow_partner() -> PartnerConfig {
    PartnerConfig::new("narrow", &sha256_hex(NARROW_KEY), &["cash_loan"])
}

/// A config whose engine can never load (empty model dir), watcher off.
fn config_without_model() -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config::default();
    c.model_dir = dir.path().join("no-models-here");
    c.data_dir = dir.path().join("no-data-here");
    c.rules_dir = dir.path().join("no-rules-here");
    c.watch_interval = None;
    c.partners.push(narrow_partner());
    (c, dir)
}

/// The crate's shipped models, demo data and rules.
fn config_with_engine() -> Config {
    let mut c = Config::default();
    c.model_dir = crate_path("models");
    c.data_dir = crate_path("datasets/demo");
    c.rules_dir = crate_path("rules");
    c.watch_interval = None;
    c.partners.push(narrow_partner());
    c
}

async fn start(mut config: Config, mut dirs: Vec<tempfile::TempDir>) -> Running {
    // The audit log goes to a temporary directory, never into the work tree.
    let audit_dir = tempfile::tempdir().expect("audit tempdir");
    config.audit.path = audit_dir.path().join("audit.db");
    dirs.push(audit_dir);
    let server = Spawned::start(config, true).await;
    Running {
        addr: server.addr,
        metrics_addr: server.metrics_addr.expect("metrics listener"),
        channel: server.channel.clone(),
        server,
        _dirs: dirs,
    }
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("header value"),
    );
    r
}

/// A request of the demo partner, with the user's consent token (signed with the demo secret).
fn score_req(request_id: &str, user_id: &str, scenario: &str) -> pb::ScoreRequest {
    score_req_for("demo", request_id, user_id, scenario)
}

fn score_req_for(
    partner: &str,
    request_id: &str,
    user_id: &str,
    scenario: &str,
) -> pb::ScoreRequest {
    let token = ConsentKey::new(DEMO_CONSENT_SECRET.as_bytes()).issue(
        user_id,
        partner,
        scenario,
        unix_now(),
        3600,
    );
    pb::ScoreRequest {
        request_id: request_id.into(),
        user_id: user_id.into(),
        scenario: scenario.into(),
        consent_token: token,
        model_version: None,
        applicant: None,
    }
}

fn tx_row(amount: f64) -> pb::Transaction {
    pb::Transaction {
        ts_ms: 1_735_000_000_000,
        kind: "purchase".into(),
        amount,
        merchant_category: Some("grocery".into()),
        due_date: None,
        paid_date: None,
    }
}

async fn health_of(r: &Running, service: &str) -> ServingStatus {
    let resp = r
        .health()
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("health check");
    ServingStatus::try_from(resp.into_inner().status).expect("known status")
}

/// Waits until the first engine load attempt has finished (its error is reported by Status).
async fn wait_load_attempt(r: &Running) -> pb::StatusResponse {
    let deadline = Instant::now() + ENGINE_LOAD_TIMEOUT;
    loop {
        let s = r
            .admin()
            .status(with_key(pb::StatusRequest {}, ADMIN_KEY))
            .await
            .expect("admin status")
            .into_inner();
        if s.engine_ready || s.load_error.starts_with("engine load failed") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "engine load attempt did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for health SERVING; fails at once with the load error if the engine cannot load.
async fn wait_serving(r: &Running) {
    let mut watch = r
        .health()
        .watch(HealthCheckRequest {
            service: SCORING.into(),
        })
        .await
        .expect("health watch")
        .into_inner();
    let serving = async {
        while let Some(msg) = watch.message().await.expect("health stream") {
            if msg.status == ServingStatus::Serving as i32 {
                return;
            }
        }
        panic!("health stream ended before SERVING");
    };
    let failed = async {
        let s = wait_load_attempt(r).await;
        if !s.engine_ready {
            panic!(
                "the scoring engine did not load ({}); these tests need models/, datasets/demo and rules/",
                s.load_error
            );
        }
        std::future::pending::<()>().await;
    };
    tokio::time::timeout(ENGINE_LOAD_TIMEOUT, async {
        tokio::select! { _ = serving => {}, _ = failed => {} }
    })
    .await
    .expect("engine SERVING within the timeout");
}

// ------------------------------------------------------------------ no model needed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_not_serving_while_engine_missing_and_score_unavailable() {
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    assert_eq!(health_of(&r, SCORING).await, ServingStatus::NotServing);
    let s = wait_load_attempt(&r).await;
    assert!(!s.engine_ready);
    // The load failed: still NOT_SERVING, and the server keeps answering.
    assert_eq!(health_of(&r, SCORING).await, ServingStatus::NotServing);
    assert_eq!(health_of(&r, "").await, ServingStatus::Serving);
    let e = r
        .scoring()
        .score(with_key(score_req("r1", "u1", "cash_loan"), PARTNER_KEY))
        .await
        .expect_err("no engine");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = r
        .scoring()
        .get_model_info(with_key(pb::GetModelInfoRequest::default(), PARTNER_KEY))
        .await
        .expect_err("no engine");
    assert_eq!(e.code(), Code::Unavailable);
    let pong = r
        .scoring()
        .ping(with_key(pb::PingRequest {}, PARTNER_KEY))
        .await
        .expect("ping works without the engine")
        .into_inner();
    assert_eq!(pong.partner_id, "demo");
    assert!(!pong.engine_ready);
    // Reloading cannot help while there are no models: refused, server still up.
    let e = r
        .admin()
        .reload_models(with_key(pb::ReloadRequest {}, ADMIN_KEY))
        .await
        .expect_err("nothing to load");
    assert_ne!(e.code(), Code::Ok);
    assert_eq!(health_of(&r, SCORING).await, ServingStatus::NotServing);
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_without_key_is_unauthenticated() {
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    let e = r
        .scoring()
        .ping(pb::PingRequest {})
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = r
        .scoring()
        .score(score_req("r", "u1", "cash_loan"))
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::Unauthenticated);
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_unauthenticated() {
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    for key in ["wrong-key", "sesame-demo-ke", "sesame-demo-key2"] {
        let e = r
            .scoring()
            .ping(with_key(pb::PingRequest {}, key))
            .await
            .expect_err("wrong key");
        assert_eq!(e.code(), Code::Unauthenticated, "{key}");
    }
    let mut req = Request::new(pb::PingRequest {});
    req.metadata_mut().insert(
        "authorization",
        "Basic sesame-demo-key".parse().expect("value"),
    );
    let e = r.scoring().ping(req).await.expect_err("not bearer");
    assert_eq!(e.code(), Code::Unauthenticated);
    // The narrow partner's key works.
    let pong = r
        .scoring()
        .ping(with_key(pb::PingRequest {}, NARROW_KEY))
        .await
        .expect("valid key")
        .into_inner();
    assert_eq!(pong.partner_id, "narrow");
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_with_partner_key_is_permission_denied() {
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    let e = r
        .admin()
        .status(with_key(pb::StatusRequest {}, PARTNER_KEY))
        .await
        .expect_err("partner key");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = r
        .admin()
        .reload_models(with_key(pb::ReloadRequest {}, PARTNER_KEY))
        .await
        .expect_err("partner key");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = r
        .admin()
        .reload_rules(pb::ReloadRequest {})
        .await
        .expect_err("no key");
    assert_eq!(e.code(), Code::Unauthenticated);
    // The admin key is not a partner key either.
    let e = r
        .scoring()
        .score(with_key(score_req("r", "u1", "cash_loan"), ADMIN_KEY))
        .await
        .expect_err("admin key on scoring");
    assert_eq!(e.code(), Code::PermissionDenied);
    r.admin()
        .status(with_key(pb::StatusRequest {}, ADMIN_KEY))
        .await
        .expect("admin key works");
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_mode_refuses_to_start_without_partners_or_with_demo_keys() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut c = Config::default();
    c.mode = Mode::Production;
    let e = sesame::server::run_with_metrics(listener, None, c.clone(), std::future::pending())
        .await
        .expect_err("no partners");
    assert!(e.to_string().contains("partners"), "{e}");
    c.partners.push(PartnerConfig::new(
        "p",
        &sha256_hex(PARTNER_KEY),
        &["cash_loan"],
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let e = sesame::server::run_with_metrics(listener, None, c, std::future::pending())
        .await
        .expect_err("demo key in production");
    assert!(e.to_string().contains("demo key"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    let mut client = ServerReflectionClient::new(r.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream
        .message()
        .await
        .expect("message")
        .expect("one response");
    let names: Vec<String> = match resp.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    };
    for want in [SCORING, "sesame.v1.Admin", "grpc.health.v1.Health"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // The descriptor of the scoring service can be fetched (what grpcurl does next).
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(SCORING.into())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    match stream
        .message()
        .await
        .expect("message")
        .map(|m| m.message_response)
    {
        Some(Some(MessageResponse::FileDescriptorResponse(f))) => {
            assert!(!f.file_descriptor_proto.is_empty())
        }
        other => panic!("no descriptor for {SCORING}: {other:?}"),
    }
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_validated_naming_the_field() {
    // Validation needs no engine: it runs before the engine is consulted.
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    let mut client = r.scoring();
    let check = |e: tonic::Status, field: &str| {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{field}: {e:?}"
        );
    };
    let e = client
        .score(with_key(score_req("r", "", "cash_loan"), PARTNER_KEY))
        .await
        .expect_err("empty user");
    check(e, "user_id");
    let mut req = score_req("r", "u1", "cash_loan");
    req.applicant = Some(pb::ApplicantData {
        transactions: vec![tx_row(1.0), tx_row(2.0), tx_row(3.0), tx_row(f64::NAN)],
        ..Default::default()
    });
    let e = client
        .score(with_key(req, PARTNER_KEY))
        .await
        .expect_err("NaN");
    check(e, "applicant.transactions[3].amount");
    let mut req = score_req("r", "u1", "cash_loan");
    req.applicant = Some(pb::ApplicantData {
        transactions: vec![tx_row(1.0); sesame::scoring::MAX_INLINE_ROWS + 1],
        ..Default::default()
    });
    let e = client
        .score(with_key(req, PARTNER_KEY))
        .await
        .expect_err("too many rows");
    check(e, "applicant.transactions");
    let mut req = score_req("r", "u1", "cash_loan");
    let mut t = tx_row(5.0);
    t.due_date = Some("2025-13-01".into());
    req.applicant = Some(pb::ApplicantData {
        transactions: vec![t],
        ..Default::default()
    });
    let e = client
        .score(with_key(req, PARTNER_KEY))
        .await
        .expect_err("bad date");
    check(e, "applicant.transactions[0].due_date");
    r.shutdown().await.expect("clean shutdown");
}

/// Sends `reqs` on one ScoreStream of the demo partner and returns every item answered; the
/// stream itself must not fail.
async fn stream_items(r: &Running, reqs: Vec<pb::ScoreRequest>) -> Vec<Item> {
    let mut out = r
        .scoring()
        .score_stream(with_key(tokio_stream::iter(reqs), PARTNER_KEY))
        .await
        .expect("stream opens")
        .into_inner();
    let mut items = Vec::new();
    while let Some(item) = out
        .message()
        .await
        .expect("stream never fails for a bad item")
    {
        items.push(item.item.expect("item set"));
    }
    items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_answers_every_item_even_without_engine() {
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    let reqs = vec![
        score_req("a", "u1", "cash_loan"),
        score_req("b", "", "cash_loan"),
        score_req("c", "u3", "cash_loan"),
    ];
    let got: Vec<_> = stream_items(&r, reqs)
        .await
        .into_iter()
        .map(|item| match item {
            Item::Error(e) => (e.request_id, e.code),
            other => panic!("no engine, no response: {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a".to_string(), Code::Unavailable as i32),
            ("b".to_string(), Code::InvalidArgument as i32),
            ("c".to_string(), Code::Unavailable as i32),
        ]
    );
    let e = r
        .scoring()
        .score_stream(tokio_stream::iter(vec![score_req("a", "u1", "cash_loan")]))
        .await
        .expect_err("stream needs a key");
    assert_eq!(e.code(), Code::Unauthenticated);
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_and_hold_no_personal_data() {
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    let secret_user = "user-4242-secret";
    for _ in 0..3 {
        r.scoring()
            .ping(with_key(pb::PingRequest {}, PARTNER_KEY))
            .await
            .expect("ping");
    }
    let _ = r.scoring().ping(pb::PingRequest {}).await;
    let _ = r
        .scoring()
        .score(with_key(
            score_req("r", secret_user, "cash_loan"),
            PARTNER_KEY,
        ))
        .await;
    let text = http_get(r.metrics_addr, "/metrics").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("sesame_grpc_requests_total{method=\"Ping\",code=\"OK\"} 3"),
        "{text}"
    );
    assert!(text.contains("sesame_grpc_requests_total{method=\"Ping\",code=\"Unauthenticated\"} 1"));
    assert!(text.contains("sesame_grpc_requests_total{method=\"Score\",code=\"Unavailable\"} 1"));
    assert!(text.contains("sesame_grpc_request_duration_seconds_count{method=\"Ping\"} 4"));
    assert!(text.contains("sesame_engine_ready 0"));
    assert!(!text.contains(secret_user));
    assert!(http_get(r.metrics_addr, "/nope")
        .await
        .starts_with("HTTP/1.1 404"));
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_open_streams_finish() {
    let (c, dir) = config_without_model();
    let r = start(c, vec![dir]).await;
    // Three open streams, each proven live by one round trip.
    let mut streams = Vec::new();
    for s in 0..3 {
        let (tx, rx) = mpsc::channel::<pb::ScoreRequest>(4);
        let mut out = r
            .scoring()
            .score_stream(with_key(ReceiverStream::new(rx), PARTNER_KEY))
            .await
            .expect("open stream")
            .into_inner();
        tx.send(score_req(&format!("{s}-0"), "u1", "cash_loan"))
            .await
            .expect("send");
        let first = out.message().await.expect("item").expect("some item");
        assert!(matches!(first.item, Some(Item::Error(ref e)) if e.request_id == format!("{s}-0")));
        streams.push((tx, out));
    }
    let Running { addr, server, .. } = r;
    let Spawned { stop, handle, .. } = server;
    let _ = stop.expect("stop sender").send(());
    // Readiness signal for "shutdown began": the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // In-flight streams still work, and the server waits for them.
    for (s, (tx, out)) in streams.iter_mut().enumerate() {
        for i in 1..3 {
            tx.send(score_req(&format!("{s}-{i}"), "u1", "cash_loan"))
                .await
                .expect("send after shutdown began");
            let item = out
                .message()
                .await
                .expect("no failure mid-way")
                .expect("item");
            assert!(
                matches!(item.item, Some(Item::Error(ref e)) if e.request_id == format!("{s}-{i}"))
            );
        }
    }
    assert!(!handle.is_finished(), "server returned with streams open");
    for (tx, mut out) in streams {
        drop(tx);
        assert!(out.message().await.expect("clean end").is_none());
    }
    tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("server returns after the streams closed")
        .expect("no panic")
        .expect("run returns Ok");
}

// ------------------------------------------------------------------ need the real engine

/// A user the demo store holds: the first row of datasets/demo/users.parquet.
fn demo_user() -> String {
    demo_users(1).remove(0)
}

/// The first `n` users of the demo population.
fn demo_users(n: usize) -> Vec<String> {
    let path = crate_path("datasets/demo/users.parquet");
    let df =
        sesame::io::read_parquet(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    let col = df.column("user_id").expect("user_id column");
    let ids = col.str().expect("user_id is a string");
    (0..n)
        .map(|i| ids.get(i).expect("enough users").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_score_happy_path() {
    let config = config_with_engine();
    let as_of = config.as_of;
    let r = start(config, vec![]).await;
    wait_serving(&r).await;
    assert_eq!(health_of(&r, SCORING).await, ServingStatus::Serving);
    let user = demo_user();
    let mut client = r.scoring();
    for scenario in ["cash_loan", "rental_deposit_free"] {
        let resp = client
            .score(with_key(score_req("req-1", &user, scenario), PARTNER_KEY))
            .await
            .unwrap_or_else(|e| panic!("{scenario}: {e:?}"))
            .into_inner();
        assert_eq!(resp.request_id, "req-1");
        assert!((350..=950).contains(&resp.score), "{}", resp.score);
        let band = pb::Band::try_from(resp.band).expect("band");
        let want = sesame::service::convert::band(Band::of(resp.score));
        assert_eq!(band, want);
        assert!((0.0..=1.0).contains(&resp.probability_of_default));
        assert_ne!(resp.decision, pb::Decision::Unspecified as i32);
        assert!(!resp.dimension_scores.is_empty());
        assert!(!resp.model_version.is_empty());
        let fa = chrono::NaiveDate::parse_from_str(&resp.features_as_of, "%Y-%m-%d")
            .expect("features_as_of is a date");
        assert!(fa <= as_of);
        for w in resp.reasons.windows(2) {
            assert!(w[0].points_lost >= w[1].points_lost, "reasons are ranked");
        }
        let info = client
            .get_model_info(with_key(pb::GetModelInfoRequest::default(), PARTNER_KEY))
            .await
            .expect("model info")
            .into_inner();
        assert!(info.is_champion);
        assert_eq!(info.model_version, resp.model_version);
        assert!(!info.features.is_empty());
    }
    // A new applicant scored from inline rows.
    let mut req = score_req("req-2", "new-applicant-0001", "cash_loan");
    req.applicant = Some(pb::ApplicantData {
        identity: Some(pb::IdentityFacts {
            signup_date: Some("2023-03-01".into()),
            age: Some(31),
            real_name_verified: Some(true),
            ..Default::default()
        }),
        transactions: vec![tx_row(120.0), tx_row(80.5)],
        ..Default::default()
    });
    let resp = client
        .score(with_key(req, PARTNER_KEY))
        .await
        .expect("inline applicant scores")
        .into_inner();
    assert!((350..=950).contains(&resp.score));
    let status = r
        .admin()
        .status(with_key(pb::StatusRequest {}, ADMIN_KEY))
        .await
        .expect("status")
        .into_inner();
    assert!(status.engine_ready);
    assert!(status.scenarios.iter().any(|s| s == "cash_loan"));
    let text = http_get(r.metrics_addr, "/metrics").await;
    assert!(text.contains("sesame_engine_ready 1"));
    assert!(!text.contains(&user), "no user id in metrics");
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_every_error_code() {
    let r = start(config_with_engine(), vec![]).await;
    wait_serving(&r).await;
    let user = demo_user();
    let mut client = r.scoring();
    let invalid = |e: tonic::Status, field: &str| {
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            e.message().starts_with(&format!("{field}:")),
            "{field}: {e:?}"
        );
    };
    let e = client
        .score(with_key(score_req("r", "", "cash_loan"), PARTNER_KEY))
        .await
        .expect_err("empty user");
    invalid(e, "user_id");
    let e = client
        .score(with_key(score_req("r", &user, "space_travel"), PARTNER_KEY))
        .await
        .expect_err("unknown scenario");
    invalid(e, "scenario");
    let mut req = score_req("r", "new-applicant-0002", "cash_loan");
    req.applicant = Some(pb::ApplicantData {
        transactions: vec![tx_row(f64::NAN)],
        ..Default::default()
    });
    let e = client
        .score(with_key(req, PARTNER_KEY))
        .await
        .expect_err("NaN");
    invalid(e, "applicant.transactions[0].amount");
    let mut req = score_req("r", "new-applicant-0003", "cash_loan");
    req.applicant = Some(pb::ApplicantData {
        behaviors: vec![
            pb::BehaviorEvent {
                ts_ms: 1_735_000_000_000,
                event: "login".into(),
                device_id: "d".into(),
                ip_city: "c".into(),
            };
            sesame::scoring::MAX_INLINE_ROWS + 1
        ],
        ..Default::default()
    });
    let e = client
        .score(with_key(req, PARTNER_KEY))
        .await
        .expect_err("oversize");
    invalid(e, "applicant.behaviors");
    let e = client
        .score(with_key(
            score_req("r", "no-such-user-in-the-store", "cash_loan"),
            PARTNER_KEY,
        ))
        .await
        .expect_err("unknown user");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = client
        .score(with_key(
            score_req("r", &user, "rental_deposit_free"),
            NARROW_KEY,
        ))
        .await
        .expect_err("scenario not allowed");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    client
        .score(with_key(
            score_req_for("narrow", "r", &user, "cash_loan"),
            NARROW_KEY,
        ))
        .await
        .expect("the narrow partner's own scenario");
    // An unknown model version is a bad argument (the engine lists the loaded ones).
    let mut req = score_req("r", &user, "cash_loan");
    req.model_version = Some("no-such-model-version".into());
    let e = client
        .score(with_key(req, PARTNER_KEY))
        .await
        .expect_err("unknown model");
    invalid(e, "model_version");
    let e = client
        .get_model_info(with_key(
            pb::GetModelInfoRequest {
                model_version: "no-such-model-version".into(),
            },
            PARTNER_KEY,
        ))
        .await
        .expect_err("unknown model");
    invalid(e, "model_version");
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_score_stream_with_a_bad_item_in_the_middle() {
    let r = start(config_with_engine(), vec![]).await;
    wait_serving(&r).await;
    let user = demo_user();
    let mut reqs: Vec<pb::ScoreRequest> = (0..5)
        .map(|i| score_req(&format!("s{i}"), &user, "cash_loan"))
        .collect();
    reqs[2].applicant = Some(pb::ApplicantData {
        transactions: vec![tx_row(-10.0)],
        ..Default::default()
    });
    let items = stream_items(&r, reqs).await;
    assert_eq!(items.len(), 5);
    for (i, item) in items.iter().enumerate() {
        match (i, item) {
            (2, Item::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.request_id, "s2");
                assert!(
                    e.message.starts_with("applicant.transactions[0].amount:"),
                    "{e:?}"
                );
            }
            (i, Item::Response(resp)) if i != 2 => {
                assert_eq!(resp.request_id, format!("s{i}"));
                assert!((350..=950).contains(&resp.score));
            }
            other => panic!("unexpected item {other:?}"),
        }
    }
    r.shutdown().await.expect("clean shutdown");
}

/// A stream's items are scored at once (`limits.stream_concurrency`) and answered in request
/// order, each with its own user's answer. Stored users (fast) alternate with new applicants
/// whose rows come inline (the feature pipeline runs on the blocking pool, milliseconds), so
/// later items finish before earlier ones; every answer must still be its request's. Answers are
/// compared with the same requests made as unary Score calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_stream_answers_in_request_order_while_scoring_items_at_once() {
    let r = start(config_with_engine(), vec![]).await;
    wait_serving(&r).await;
    let applicant = |id: &str, i: usize| {
        let mut req = score_req(id, &format!("new-applicant-{i}"), "cash_loan");
        req.applicant = Some(pb::ApplicantData {
            identity: Some(pb::IdentityFacts {
                signup_date: Some("2023-03-01".into()),
                age: Some(31),
                ..Default::default()
            }),
            transactions: vec![tx_row(120.0), tx_row(80.5)],
            ..Default::default()
        });
        req
    };
    let unary = |req: pb::ScoreRequest| {
        let mut client = r.scoring();
        async move {
            client
                .score(with_key(req, PARTNER_KEY))
                .await
                .expect("unary score")
                .into_inner()
                .score
        }
    };
    // Two stored users with different scores, so that a swapped answer shows.
    let users = demo_users(20);
    let first = users[0].clone();
    let first_score = unary(score_req("u0", &first, "cash_loan")).await;
    let mut second = None;
    for u in &users[1..] {
        let s = unary(score_req("u", u, "cash_loan")).await;
        if s != first_score {
            second = Some((u.clone(), s));
            break;
        }
    }
    let (second, second_score) = second.expect("two demo users with different scores");
    let applicant_score = unary(applicant("a", 9999)).await;

    let n = 60;
    let reqs: Vec<pb::ScoreRequest> = (0..n)
        .map(|i| {
            let id = format!("s{i}");
            match i % 5 {
                0 => applicant(&id, i),
                1 | 3 => score_req(&id, &first, "cash_loan"),
                _ => score_req(&id, &second, "cash_loan"),
            }
        })
        .collect();
    let items = stream_items(&r, reqs).await;
    assert_eq!(items.len(), n, "one answer per request");
    for (i, item) in items.into_iter().enumerate() {
        let Item::Response(resp) = item else {
            panic!("item {i}: {item:?}");
        };
        assert_eq!(resp.request_id, format!("s{i}"), "answers in request order");
        let want = match i % 5 {
            0 => applicant_score,
            1 | 3 => first_score,
            _ => second_score,
        };
        assert_eq!(resp.score, want, "item {i} got another request's answer");
    }
    r.shutdown().await.expect("clean shutdown");
}

/// Runs `python3 args…` from the crate root on the blocking pool (the server under test runs on
/// this runtime); its stdout, or why it failed.
async fn python(args: Vec<String>) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("python3")
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "python3 {args:?}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .await
    .expect("python task")
}

/// The Python examples, run as a partner runs them (grpcio, stubs generated from the .proto):
/// `score.py` scores one user, `score_stream.py` a CSV of users over one ScoreStream, where a
/// row without a user and a row with a forged consent are answered as their own errors. Scores
/// agree with the Rust client's. Skipped, saying why, where python3 lacks grpcio and
/// grpcio-tools (`.ci/run` installs them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_examples_score_a_user_and_a_file_of_users() {
    if let Err(why) = python(vec!["-c".into(), "import grpc, grpc_tools".into()]).await {
        println!("skipping: python3 with grpcio and grpcio-tools is needed ({why})");
        return;
    }
    let r = start(config_with_engine(), vec![]).await;
    wait_serving(&r).await;
    let users = demo_users(2);
    let token = |u: &str| {
        ConsentKey::new(DEMO_CONSENT_SECRET.as_bytes()).issue(
            u,
            "demo",
            "cash_loan",
            unix_now(),
            3600,
        )
    };
    let mut expected = Vec::new();
    for u in &users {
        let resp = r
            .scoring()
            .score(with_key(score_req("rust", u, "cash_loan"), PARTNER_KEY))
            .await
            .expect("unary score")
            .into_inner();
        expected.push(resp.score);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let csv_in = dir.path().join("users.csv");
    let csv_out = dir.path().join("scores.csv");
    let mut rows = String::from("user_id,consent_token\n");
    for u in &users {
        rows.push_str(&format!("{u},{}\n", token(u)));
    }
    rows.push_str(",no-user\n");
    rows.push_str(&format!("{},forged\n", users[0]));
    std::fs::write(&csv_in, rows).expect("write users.csv");
    let addr = r.addr.to_string();
    let path = |p: &Path| p.display().to_string();
    python(
        [
            "examples/score_stream.py",
            "--addr",
            &addr,
            "--users",
            &path(&csv_in),
            "--out",
            &path(&csv_out),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
    .expect("score_stream.py");
    let out = std::fs::read_to_string(&csv_out).expect("scores.csv");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    for (i, want) in expected.iter().enumerate() {
        assert_eq!(lines[i][0], format!("row-{i}"), "{out}");
        assert_eq!(lines[i][2], want.to_string(), "{out}");
    }
    assert_eq!(lines[2][6], "INVALID_ARGUMENT", "{out}");
    assert!(lines[2][7].starts_with("user_id"), "{out}");
    assert_eq!(lines[3][6], "PERMISSION_DENIED", "{out}");
    assert!(lines[3][7].starts_with("consent_token"), "{out}");

    let one = python(
        [
            "examples/score.py",
            "--addr",
            &addr,
            "--user",
            &users[0],
            "--consent",
            &token(&users[0]),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await
    .expect("score.py");
    assert!(one.contains(&format!("score {} (", expected[0])), "{one}");
    r.shutdown().await.expect("clean shutdown");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read models dir").flatten() {
        let dst = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).expect("copy");
        }
    }
}

fn corrupt_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read").flatten() {
        if e.path().is_dir() {
            n += corrupt_files(&e.path());
        } else {
            std::fs::write(e.path(), b"{ this is not a model \x00\xff").expect("corrupt");
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_corrupt_model_reload_under_load_fails_no_call() {
    let models = tempfile::tempdir().expect("tempdir");
    copy_dir(&crate_path("models"), models.path());
    let mut config = config_with_engine();
    config.model_dir = models.path().to_path_buf();
    let r = start(config, vec![]).await;
    wait_serving(&r).await;
    let user = demo_user();
    let before = r
        .admin()
        .status(with_key(pb::StatusRequest {}, ADMIN_KEY))
        .await
        .expect("status")
        .into_inner();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for w in 0..4 {
        let mut client = r.scoring();
        let (stop, ok, user) = (stop.clone(), ok.clone(), user.clone());
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = score_req(&format!("w{w}-{i}"), &user, "cash_loan");
                match client.score(with_key(req, PARTNER_KEY)).await {
                    Ok(_) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e),
                }
                i += 1;
            }
            failures
        }));
    }
    // Let the load get going (a readiness signal: calls have succeeded).
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "no successful calls under load");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(corrupt_files(models.path()) > 0, "models dir had files");
    let e = r
        .admin()
        .reload_models(with_key(pb::ReloadRequest {}, ADMIN_KEY))
        .await
        .expect_err("a corrupt model is refused");
    assert_ne!(e.code(), Code::Ok);
    let mark = ok.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while ok.load(Ordering::Relaxed) < mark + 20 {
        assert!(
            Instant::now() < deadline,
            "calls stopped succeeding after the reload"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let failures = t.await.expect("load task");
        assert!(failures.is_empty(), "failed calls: {failures:?}");
    }
    let after = r
        .admin()
        .status(with_key(pb::StatusRequest {}, ADMIN_KEY))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(after.champion_version, before.champion_version);
    assert_eq!(health_of(&r, SCORING).await, ServingStatus::Serving);
    r.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_reload_refuses_a_bad_file_and_applies_a_good_one() {
    let rules = tempfile::tempdir().expect("tempdir");
    copy_dir(&crate_path("rules"), rules.path());
    let mut config = config_with_engine();
    config.rules_dir = rules.path().to_path_buf();
    let r = start(config, vec![]).await;
    wait_serving(&r).await;
    let user = demo_user();
    let score = |id: &'static str| {
        let mut client = r.scoring();
        let user = user.clone();
        async move {
            client
                .score(with_key(
                    score_req(id, &user, "rental_deposit_free"),
                    PARTNER_KEY,
                ))
                .await
                .expect("score")
                .into_inner()
        }
    };
    let first = score("a").await;
    let path = rules.path().join("rental_deposit_free.toml");
    let good = std::fs::read_to_string(&path).expect("policy");

    // A syntax error: refused naming the rule; the rules in force keep deciding.
    std::fs::write(
        &path,
        good.replace("when = \"score >= 650\"", "when = \"score >= \""),
    )
    .expect("write");
    let e = r
        .admin()
        .reload_rules(with_key(pb::ReloadRequest {}, ADMIN_KEY))
        .await
        .expect_err("a broken rule file is refused");
    assert!(e.message().contains("RDF-003"), "{}", e.message());
    let again = score("b").await;
    assert_eq!(
        (again.decision, again.rule_hits.clone()),
        (first.decision, first.rule_hits.clone())
    );

    // A valid change takes effect without a restart: a new first rule sends everyone to review.
    let trial = "[[rule]]\nid = \"RDF-000\"\ndescription = \"trial\"\nwhen = \"score >= 0\"\noutcome = \"review\"\nreason = \"trial period: manual review\"\n\n[[rule]]\nid = \"RDF-001\"";
    std::fs::write(&path, good.replacen("[[rule]]\nid = \"RDF-001\"", trial, 1)).expect("write");
    r.admin()
        .reload_rules(with_key(pb::ReloadRequest {}, ADMIN_KEY))
        .await
        .expect("a valid rule file is applied");
    let after = score("c").await;
    assert_eq!(after.decision, pb::Decision::Review as i32);
    assert!(
        after.rule_hits.iter().any(|h| h.rule_id == "RDF-000"),
        "{:?}",
        after.rule_hits
    );
    assert_eq!(after.score, first.score, "rules never change the score");
    // Per-rule hit counters of the rule set in force are exported.
    let text = http_get(r.metrics_addr, "/metrics").await;
    assert!(
        text.contains("sesame_rule_hits_total{policy=\"rental_deposit_free\",rule=\"RDF-000\"} 1"),
        "{text}"
    );
    assert!(text.contains("sesame_rules_info{version="), "{text}");
    r.shutdown().await.expect("clean shutdown");
}

/// The live PSI gauge is the same number `sesame evaluate` would compute on the scores the
/// service gave: same bins, same formula, against the model's recorded training distribution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_live_psi_matches_offline_psi_of_the_scores_given() {
    let r = start(config_with_engine(), vec![]).await;
    wait_serving(&r).await;
    let path = crate_path("datasets/demo/users.parquet");
    let df = sesame::io::read_parquet(&path).expect("users");
    let ids = df.column("user_id").expect("user_id");
    let ids = ids.str().expect("string ids");
    let mut client = r.scoring();
    let mut scores = Vec::new();
    let mut version = String::new();
    // The riskiest-looking users first would be a shifted sample; take every 37th user instead.
    for i in (0..ids.len()).step_by(37).take(300) {
        let user = ids.get(i).expect("id").to_string();
        let resp = client
            .score(with_key(
                score_req(&format!("psi-{i}"), &user, "cash_loan"),
                PARTNER_KEY,
            ))
            .await
            .expect("score")
            .into_inner();
        scores.push(resp.score as f64);
        version = resp.model_version;
    }
    let sc = sesame::model::Scorecard::load(&crate_path("models/default")).expect("model");
    let dist = &sc.metrics.train_score_distribution;
    let want = sesame::eval::metrics::psi_from_shares(
        &dist.shares,
        &sesame::eval::metrics::bin_shares(&scores, &dist.edges),
    )
    .expect("psi");
    let text = http_get(r.metrics_addr, "/metrics").await;
    let line = format!("sesame_score_psi{{model_version=\"{version}\"}} ");
    let got: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
        .parse()
        .expect("a number");
    assert!((got - want).abs() < 1e-12, "live {got} vs offline {want}");
    assert!(text.contains(&format!(
        "sesame_scores_observed{{model_version=\"{version}\"}} 300"
    )));
    r.shutdown().await.expect("clean shutdown");
}

/// `sesame bench` against the real server: the closed loop measures a maximum, and the open loop
/// starts exactly rate × duration calls on schedule, each answered (none lost or doubled);
/// the ScoreStream mode gets every item answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_open_loop_starts_every_scheduled_call() {
    use sesame::service::bench::{self, Arrivals, BenchArgs, Rate, Rpc};
    let r = start(config_with_engine(), vec![]).await;
    wait_serving(&r).await;
    let args = BenchArgs {
        addr: format!("http://{}", r.addr),
        connections: 2,
        inflight: 2,
        seconds: 0.5,
        rpc: Rpc::Score,
        user: Some(demo_user()),
        scenario: "cash_loan".into(),
        key: PARTNER_KEY.into(),
        partner: sesame::config::DEMO_PARTNER_ID.into(),
        consent_secret: DEMO_CONSENT_SECRET.into(),
        rate: Some(Rate::ShareOfMax(0.25)),
        arrivals: Arrivals::Ticks,
        // The server runs in this process: its CPU per call is read from our own /proc entry.
        server_pid: Some(std::process::id()),
        threads: 1,
    };
    let reports = bench::run(&args).await.expect("bench");
    assert_eq!(reports.len(), 2, "{reports:?}");
    let (max, open) = (&reports[0], &reports[1]);
    assert_eq!(max.offered, None);
    assert!(max.ok > 0 && max.errors.is_empty(), "{max}");
    let rate = open.offered.expect("open loop");
    assert!((rate - 0.25 * max.per_second()).abs() < 1e-6, "{open}");
    assert!(open.errors.is_empty(), "{open}");
    assert_eq!(open.ok, (rate * 0.5).round() as u64, "{open}");
    assert!(open.p50_us > 0 && open.p99_us >= open.p50_us, "{open}");
    assert!(
        open.p90_us >= open.p50_us && open.p99_us >= open.p90_us && open.p999_us >= open.p99_us,
        "{open}"
    );
    for r in &reports {
        let cpu = |v: Option<f64>| v.is_some_and(|us| us.is_finite() && us > 0.0);
        assert!(cpu(r.client_cpu_us) && cpu(r.server_cpu_us), "{r}");
        assert!(r.to_string().contains("CPU per call: client"), "{r}");
    }
    // Ping at a fixed rate needs no user; Poisson arrivals start every scheduled call too.
    for arrivals in [Arrivals::Ticks, Arrivals::Poisson] {
        let args = BenchArgs {
            rpc: Rpc::Ping,
            user: None,
            rate: Some(Rate::PerSecond(300.0)),
            arrivals,
            ..args.clone()
        };
        let reports = bench::run(&args).await.expect("bench ping");
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert_eq!(reports[0].ok, 150, "{arrivals:?}: {}", reports[0]);
        assert!(reports[0].errors.is_empty(), "{arrivals:?}: {}", reports[0]);
    }
    // ScoreStream: every item answered, none an error; the open loop is refused for it.
    let stream = BenchArgs {
        rpc: Rpc::Stream,
        rate: None,
        ..args.clone()
    };
    let reports = bench::run(&stream).await.expect("bench stream");
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].rpc, "stream");
    assert!(
        reports[0].ok > 0 && reports[0].errors.is_empty(),
        "{}",
        reports[0]
    );
    assert!(reports[0].p99_us >= reports[0].p50_us, "{}", reports[0]);
    let err = bench::run(&BenchArgs {
        rate: Some(Rate::PerSecond(100.0)),
        ..stream
    })
    .await
    .expect_err("no open loop for streams");
    assert!(err.to_string().contains("--rate"), "{err}");
    let args = BenchArgs {
        rpc: Rpc::Ping,
        user: None,
        ..args
    };
    // A server pid that does not exist is refused, naming the flag.
    let args = BenchArgs {
        server_pid: Some(u32::MAX),
        ..args
    };
    let err = bench::run(&args).await.expect_err("no such process");
    assert!(err.to_string().contains("--server-pid"), "{err}");
}
