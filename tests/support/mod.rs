//! What the integration tests share: the real server (`server::run_with_metrics`) on
//! 127.0.0.1:0, a real tonic channel to it, waiting for the engine, and a graceful stop.
// Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sesame::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

pub const SCORING: &str = "sesame.v1.CreditScoring";
pub const SERVING: ServingStatus = ServingStatus::Serving;
pub const NOT_SERVING: ServingStatus = ServingStatus::NotServing;

/// A server started by a test; [`Spawned::shutdown`] stops it as SIGTERM would.
pub struct Spawned {
    pub addr: SocketAddr,
    /// The Prometheus listener, when asked for.
    pub metrics_addr: Option<SocketAddr>,
    pub channel: Channel,
    pub stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<anyhow::Result<()>>,
}

impl Spawned {
    pub async fn start(config: Config, with_metrics: bool) -> Spawned {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let metrics = match with_metrics {
            true => Some(
                TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind metrics"),
            ),
            false => None,
        };
        let metrics_addr = metrics
            .as_ref()
            .map(|m| m.local_addr().expect("metrics addr"));
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(sesame::server::run_with_metrics(
            listener,
            metrics,
            config,
            async move {
                let _ = rx.await;
            },
        ));
        // The listener is bound already: connecting needs no wait.
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        Spawned {
            addr,
            metrics_addr,
            channel,
            stop: Some(tx),
            handle,
        }
    }

    /// Triggers shutdown and waits for `run` to return (30 s at most).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("server stops within 30 s")
            .expect("server task did not panic")
    }
}

/// Polls the scoring service's health until SERVING; fails after `timeout`.
pub async fn wait_serving(channel: Channel, timeout: Duration) {
    assert!(
        wait_health(channel, ServingStatus::Serving, timeout).await,
        "engine not SERVING in time"
    );
}

/// The scoring service's health status now.
pub async fn health_status(channel: Channel) -> Option<ServingStatus> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: SCORING.into(),
        })
        .await
        .ok()
        .and_then(|r| ServingStatus::try_from(r.into_inner().status).ok())
}

/// Polls until the scoring service's health is `want`; false if it is not within `timeout`.
pub async fn wait_health(channel: Channel, want: ServingStatus, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if health_status(channel.clone()).await == Some(want) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain HTTP/1.1 GET (the metrics listener), whole response with headers.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out
}
