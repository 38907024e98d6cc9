//! The gRPC server: health, reflection, CreditScoring and Admin on one port; metrics on another.
//!
//! [`run`] serves at once. The scoring engine loads on the blocking pool after the listener is
//! up; until it has loaded, `grpc.health.v1` reports NOT_SERVING for `sesame.v1.CreditScoring`
//! and scoring calls answer UNAVAILABLE. When the model or rules directory changes (polled every
//! `watch_interval`), models or rules are reloaded (or the engine loaded, if it had failed). When
//! `shutdown` completes the server stops accepting, lets in-flight calls and open streams finish
//! (up to `limits.shutdown_grace`) and returns `Ok(())`.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::service::pb::admin_server::AdminServer;
use crate::service::pb::credit_scoring_server::CreditScoringServer;
use crate::service::{admin::Admin, metrics, pb, scoring::Scoring, State, SCORING_SERVICE_NAME};

/// Serves on `listener` until `shutdown` completes. Binds the metrics port from the config.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics_listen: cannot bind {addr}"))?,
        ),
        None => None,
    };
    run_with_metrics(listener, metrics_listener, config, shutdown).await
}

/// As [`run`], with the metrics listener given (or none); `config.metrics_listen` is ignored.
pub async fn run_with_metrics(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let limits = config.limits.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(SCORING_SERVICE_NAME, ServingStatus::NotServing)
        .await;
    let audit = if config.audit.enabled {
        let path = config.audit.path.clone();
        let interval = std::time::Duration::from_micros(config.audit.commit_interval_us);
        tokio::task::spawn_blocking(move || AuditLog::open(&path, interval))
            .await
            .context("audit log")??
    } else {
        tracing::warn!("audit log OFF (audit.enabled = false): for benchmarks only");
        AuditLog::disabled()
    };
    let state = Arc::new(State::new(&config, health.clone(), audit));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection (v1)")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("reflection (v1alpha)")?;
    let scoring = CreditScoringServer::new(Scoring::new(state.clone()))
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);
    let admin = AdminServer::new(Admin::new(state.clone()))
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);

    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(l) = metrics_listener {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
        }
        tokio::spawn(metrics::serve(l, state.metrics.clone(), stop_rx.clone()));
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, mode = ?config.mode, "gRPC listening");
    }
    let loader = tokio::spawn(load_then_watch(
        state.clone(),
        config.model_dir.clone(),
        config.rules_dir.clone(),
        config.watch_interval,
        stop_rx.clone(),
    ));
    let prober = tokio::spawn(watch_dependencies(
        state.clone(),
        config.health_probe_interval,
        stop_rx.clone(),
    ));

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; draining in-flight calls");
        let _ = stop_tx.send(true);
    };
    let incoming = TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(|conn| conn.map(OneWriteResponses));
    let mut builder = Server::builder();
    if let Some(tls) = tls_config(&config.tls)? {
        builder = builder
            .tls_config(tls)
            .context("tls: the certificate, key or client CA was refused")?;
    }
    let server = builder
        .timeout(limits.call_timeout)
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(scoring)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::pin!(server);

    let mut stopped = stop_rx.clone();
    let grace = limits.shutdown_grace;
    let result = tokio::select! {
        r = &mut server => r.context("gRPC server"),
        _ = async {
            if stopped.wait_for(|s| *s).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "in-flight calls did not finish in time; stopping anyway");
            Ok(())
        }
    };
    loader.abort();
    prober.abort();
    health
        .set_service_status(SCORING_SERVICE_NAME, ServingStatus::NotServing)
        .await;
    tracing::info!("server stopped");
    result
}

/// Loads the engine, then polls the model and rules directories and reloads what changed.
async fn load_then_watch(
    state: Arc<State>,
    model_dir: PathBuf,
    rules_dir: PathBuf,
    every: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen_models = fingerprint(model_dir.clone()).await;
    let mut seen_rules = fingerprint(rules_dir.clone()).await;
    let _ = state.load_engine().await;
    let Some(every) = every else { return };
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => {}
        }
        // Errors are logged (and counted) by the reloads; what serves keeps serving.
        let models = fingerprint(model_dir.clone()).await;
        if models != seen_models {
            seen_models = models;
            tracing::info!("model directory changed; reloading models");
            let _ = state.reload_models().await;
        }
        let rules = fingerprint(rules_dir.clone()).await;
        if rules != seen_rules {
            seen_rules = rules;
            tracing::info!("rules directory changed; reloading rules");
            let _ = state.reload_rules().await;
        }
    }
}

/// Keeps health honest about what every Score call needs besides the engine. While a shared
/// velocity store (Redis) does not answer, or the audit log takes no writes, every call is
/// refused, so the scoring service is NOT_SERVING and a load balancer sends partners to a server
/// that can answer. Looks every `every`, and at once after a failure while things were fine (at
/// most once per [`MIN_PROBE_GAP`]). Redis is PINGed each time; the audit log is probed only
/// after a write failed (a probe is a durable write).
async fn watch_dependencies(state: Arc<State>, every: Duration, mut stop: watch::Receiver<bool>) {
    const MIN_PROBE_GAP: Duration = Duration::from_millis(50);
    // Loading probes Redis once itself; once loaded, the engine (and its store) stays for good.
    let engine = loop {
        if let Some(engine) = state.engine.load_full() {
            break engine;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every.min(Duration::from_millis(200))) => {}
        }
    };
    let redis = engine.velocity().is_shared();
    if !redis && !state.audit.enabled() {
        return;
    }
    // Whether the audit log took writes at the last look: health changes only when a probe
    // publishes, so a log that recovered through a commit is probed once more to say so.
    let mut audit_seen = true;
    loop {
        let (velocity_up, audit_ok) = (state.velocity_up(), state.audit.writable());
        let failed = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(every) => false,
            // While down, calls keep failing; the timer alone decides when to look again.
            _ = engine.velocity().failed(), if redis && velocity_up => true,
            _ = state.audit.failed(), if audit_ok => true,
        };
        if failed {
            tokio::time::sleep(MIN_PROBE_GAP).await;
        }
        if redis {
            state.probe_velocity(&engine).await;
        }
        if !state.audit.writable() || !audit_seen {
            audit_seen = state.probe_audit().await;
        }
    }
}

/// Names, sizes and modification times of the model directory, two levels deep.
async fn fingerprint(dir: PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut entries = Vec::new();
        collect(&dir, 2, &mut entries);
        entries.sort();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        entries.hash(&mut h);
        h.finish()
    })
    .await
    .unwrap_or(0)
}

fn collect(dir: &Path, depth: u32, out: &mut Vec<(PathBuf, u64, u128)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(md) = e.metadata() else { continue };
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        out.push((e.path(), md.len(), mtime));
        if md.is_dir() && depth > 1 {
            collect(&e.path(), depth - 1, out);
        }
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}

/// `sesame serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (keys as in docs/service.md); SESAME_* variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// gRPC listen address (overrides `listen` / SESAME_LISTEN).
    #[arg(long)]
    pub listen: Option<String>,
}

/// Entry point of `sesame serve`: config, runtime, serve until SIGINT/SIGTERM.
pub fn serve_cli(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(l) = args.listen {
        config.listen = l.parse().map_err(|_| {
            anyhow::anyhow!("--listen: '{l}' is not an address like 127.0.0.1:50051")
        })?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let result = rt.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", config.listen))?;
        run(listener, config, shutdown_signal()).await
    });
    // An engine load still running on the blocking pool must not hold the exit.
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The server's TLS settings read from their files; `None` = plain HTTP/2.
fn tls_config(tls: &crate::config::TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Ok(None);
    };
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("{what}: cannot read {}", path.display()))
    };
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(
        read("tls.cert", cert)?,
        read("tls.key", key)?,
    ));
    if let Some(ca) = &tls.client_ca {
        cfg = cfg
            .client_ca_root(Certificate::from_pem(read("tls.client_ca", ca)?))
            .client_auth_optional(!tls.require_client_cert);
    }
    Ok(Some(cfg))
}

/// A client's TCP connection, presented to HTTP/2 as having no vectored writes.
///
/// Why: with vectored writes, h2 (0.4) sends a DATA payload over 256 bytes as its own buffer
/// without copying it, and must then flush before it can queue the next frame. A Score answer
/// (a ~760-byte message) therefore left in two writes: headers and message, then the gRPC
/// trailers alone (`strace`: ~200 µs apart at one call in flight). The client is woken twice
/// and the call is not over until the second. Told there are no vectored writes, h2 copies
/// payloads up to 1 KiB into its buffer, and headers, message and trailers leave in one write.
/// h2 has no setting for this; larger payloads are still written without a copy. Under TLS the
/// TLS stream sits above this one, so it does not apply there.
struct OneWriteResponses(TcpStream);

impl AsyncRead for OneWriteResponses {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneWriteResponses {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl Connected for OneWriteResponses {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.connect_info()
    }
}
