//! `sesame bench`: a closed-loop load generator. N connections, each with a few calls in
//! flight, for a fixed time; reports throughput and p50/p99 of Score and of Ping (the no-op
//! baseline: transport + auth only) measured by the same client against the same server.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use super::pb::credit_scoring_client::CreditScoringClient;
use super::pb::{PingRequest, ScoreRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    Score,
    Ping,
    /// Ping, then Score, then the ratio.
    Both,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// TCP (HTTP/2) connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Calls in flight per connection.
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    /// Seconds per RPC measured.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, value_enum, default_value_t = Rpc::Both)]
    pub rpc: Rpc,
    /// User to score (a user id in the server's store); needed for score.
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long, default_value = "cash_loan")]
    pub scenario: String,
    /// API key.
    #[arg(long, env = "SESAME_API_KEY", default_value = crate::config::DEMO_PARTNER_KEY, hide_env_values = true)]
    pub key: String,
    /// Partner id the key belongs to (the consent token is minted for it).
    #[arg(long, default_value = crate::config::DEMO_PARTNER_ID)]
    pub partner: String,
    /// The server's consent-signing secret: the bench mints a valid consent token for --user
    /// (default: the demo secret, which a demo-mode server uses).
    #[arg(long, env = "SESAME_CONSENT_SECRET", default_value = crate::config::DEMO_CONSENT_SECRET, hide_env_values = true, hide_default_value = true)]
    pub consent_secret: String,
}

/// Result of one RPC's run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub rpc: &'static str,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// Latency of successful calls, µs.
    pub p50_us: u64,
    pub p99_us: u64,
}

impl BenchReport {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<5}: {} ok in {:.1} s = {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms",
            self.rpc,
            self.ok,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.p50_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0
        )?;
        if self.errors.is_empty() {
            write!(f, ", 0 errors")
        } else {
            write!(f, ", errors {:?}", self.errors)
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as u64
}

/// Runs one RPC against `channels` for `duration`.
pub async fn measure(
    channels: &[Channel],
    inflight: usize,
    duration: Duration,
    rpc: Rpc,
    key: &str,
    template: ScoreRequest,
) -> anyhow::Result<BenchReport> {
    let auth: MetadataValue<_> = format!("Bearer {key}")
        .parse()
        .context("--key: not a valid header value")?;
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for ch in channels {
        for _ in 0..inflight.max(1) {
            let mut client = CreditScoringClient::new(ch.clone());
            let auth = auth.clone();
            let template = template.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat: Vec<u32> = Vec::with_capacity(1 << 14);
                let mut errors: BTreeMap<String, u64> = BTreeMap::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let r = if rpc == Rpc::Ping {
                        let mut req = Request::new(PingRequest {});
                        req.metadata_mut().insert("authorization", auth.clone());
                        client.ping(req).await.map(|_| ())
                    } else {
                        let mut msg = template.clone();
                        msg.request_id = format!("bench-{n}");
                        let mut req = Request::new(msg);
                        req.metadata_mut().insert("authorization", auth.clone());
                        client.score(req).await.map(|_| ())
                    };
                    n += 1;
                    match r {
                        Ok(()) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(s) => *errors.entry(format!("{:?}", s.code())).or_default() += 1,
                    }
                }
                (lat, errors)
            }));
        }
    }
    let mut all = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (lat, errs) = t.await.context("bench task")?;
        all.extend(lat);
        for (k, v) in errs {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    Ok(BenchReport {
        rpc: if rpc == Rpc::Ping { "ping" } else { "score" },
        ok: all.len() as u64,
        errors,
        elapsed,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
    })
}

/// Connects and runs the RPCs the arguments ask for.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchReport>> {
    if args.connections == 0 || !(args.seconds > 0.0) || args.seconds > 3600.0 {
        anyhow::bail!("--connections must be > 0 and --seconds in (0, 3600]");
    }
    let wants_score = matches!(args.rpc, Rpc::Score | Rpc::Both);
    if wants_score && args.user.is_none() {
        anyhow::bail!("--user is required to bench score (a user id the server's store holds)");
    }
    let endpoint = Endpoint::from_shared(args.addr.clone())
        .with_context(|| {
            format!(
                "--addr: '{}' is not a URL like http://127.0.0.1:50051",
                args.addr
            )
        })?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", args.addr))?,
        );
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let user_id = args.user.clone().unwrap_or_default();
    // A real consent token, as a partner would hold after the user's authorisation.
    let consent_token = crate::security::consent::ConsentKey::new(args.consent_secret.as_bytes())
        .issue(
            &user_id,
            &args.partner,
            &args.scenario,
            crate::security::consent::unix_now(),
            3 * args.seconds.ceil() as i64 + 3600,
        );
    let template = ScoreRequest {
        request_id: String::new(),
        user_id,
        scenario: args.scenario.clone(),
        consent_token,
        model_version: None,
        applicant: None,
    };
    let mut reports = Vec::new();
    for rpc in [Rpc::Ping, Rpc::Score] {
        if args.rpc == rpc || args.rpc == Rpc::Both {
            // Warm up connections and the server's code paths before measuring.
            let warm = Duration::from_millis(300).min(duration);
            measure(
                &channels,
                args.inflight,
                warm,
                rpc,
                &args.key,
                template.clone(),
            )
            .await?;
            reports.push(
                measure(
                    &channels,
                    args.inflight,
                    duration,
                    rpc,
                    &args.key,
                    template.clone(),
                )
                .await?,
            );
        }
    }
    Ok(reports)
}

/// Entry point of `sesame bench`.
pub fn bench_cli(args: BenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let reports = rt.block_on(run(&args))?;
    println!(
        "sesame bench: {} connections x {} in flight, {} s per rpc, {}",
        args.connections, args.inflight, args.seconds, args.addr
    );
    for r in &reports {
        println!("{r}");
    }
    if let (Some(p), Some(s)) = (
        reports.iter().find(|r| r.rpc == "ping"),
        reports.iter().find(|r| r.rpc == "score"),
    ) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!(
            "score/ping: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
            ratio(s.per_second(), p.per_second()),
            ratio(s.p50_us as f64, p.p50_us as f64),
            ratio(s.p99_us as f64, p.p99_us as f64)
        );
    }
    Ok(())
}
