//! `sesame bench`: a load generator. Closed loop by default: N connections, each with a few
//! calls in flight, for a fixed time; reports throughput and p50/p99 of Score and of Ping (the
//! no-op baseline: transport + auth only) measured by the same client against the same server.
//! With `--rate`, open loop: calls start on a fixed schedule whatever the answers, which is how a
//! partner's traffic arrives and the honest way to read latency at a given load (a closed loop
//! slows down when the server does, and hides the queueing).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use super::pb::credit_scoring_client::CreditScoringClient;
use super::pb::{score_stream_item::Item, PingRequest, ScoreRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    Score,
    Ping,
    /// Ping, then Score, then the ratio.
    Both,
    /// ScoreStream, as a batch client uses it: one stream per connection, `--inflight`
    /// requests sent ahead of their answers. Reports answers/s and each item's latency.
    Stream,
}

/// How the open loop spaces its calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Arrivals {
    /// All calls due in a millisecond start together on tokio's 1 ms timer tick: bursts of
    /// rate/1000 calls (17 at once at 17k calls/s). Latency runs from each call's real start.
    /// The default, so figures compare with earlier runs.
    #[default]
    Ticks,
    /// Independent arrivals, as from many partners' users: exponential gaps at the mean rate
    /// (seeded), timed by a pacer thread to a few µs. Latency runs from each call's scheduled
    /// time, so a client that falls behind counts against the result, not for it. The pacer's
    /// wake-ups cost the client CPU, which matters when it shares the server's cores.
    Poisson,
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
    /// Open loop: start calls at this rate, calls/s over all connections (e.g. `5000`), or at a
    /// share of the throughput the closed loop just measured for the same RPC (e.g. `50%`).
    #[arg(long)]
    pub rate: Option<Rate>,
    /// How the open loop spaces its calls (with `--rate`).
    #[arg(long, value_enum, default_value_t = Arrivals::Ticks)]
    pub arrivals: Arrivals,
    /// Process id of the server when it runs on this machine: its CPU time per call is reported
    /// too (read from /proc). CPU per call moves far less than throughput when the host is noisy.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Client threads, like h2load's `-t`. One keeps the client's own CPU per call lowest, and
    /// on a machine it shares with the server more threads mostly take cores from the server;
    /// raise it when the server is elsewhere and one thread cannot keep it busy.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// `--rate`: a fixed rate or a share of the measured maximum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    ShareOfMax(f64),
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad =
            || format!("'{s}' is not a rate: give calls/s (5000) or a share of the maximum (50%)");
        let (num, pct) = match s.trim().strip_suffix('%') {
            Some(n) => (n.trim(), true),
            None => (s.trim(), false),
        };
        let v: f64 = num.parse().map_err(|_| bad())?;
        match pct {
            true if v > 0.0 && v <= 100.0 => Ok(Rate::ShareOfMax(v / 100.0)),
            false if v > 0.0 && v <= 1e7 => Ok(Rate::PerSecond(v)),
            _ => Err(bad()),
        }
    }
}

/// Result of one RPC's run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub rpc: &'static str,
    /// Open loop: the rate the calls were started at, calls/s.
    pub offered: Option<f64>,
    pub ok: u64,
    pub errors: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// Latency of successful calls, µs.
    pub p50_us: u64,
    /// p90 and p99.9 too: whether a bad p99 is many calls a little late or a few stalls.
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// CPU time (user + system) this client process spent per successful call, µs.
    pub client_cpu_us: Option<f64>,
    /// The same for the server process (`--server-pid`).
    pub server_cpu_us: Option<f64>,
}

impl BenchReport {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(rate) = self.offered {
            write!(f, "{:<5} (open loop at {rate:.0} calls/s)", self.rpc)?;
        } else {
            write!(f, "{:<5}", self.rpc)?;
        }
        write!(
            f,
            ": {} ok in {:.1} s = {:.0} calls/s, p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
            self.ok,
            self.elapsed.as_secs_f64(),
            self.per_second(),
            self.p50_us as f64 / 1000.0,
            self.p90_us as f64 / 1000.0,
            self.p99_us as f64 / 1000.0,
            self.p999_us as f64 / 1000.0
        )?;
        if self.errors.is_empty() {
            write!(f, ", 0 errors")?;
        } else {
            write!(f, ", errors {:?}", self.errors)?;
        }
        if let Some(c) = self.client_cpu_us {
            write!(f, "; CPU per call: client {c:.1} µs")?;
            if let Some(s) = self.server_cpu_us {
                write!(f, ", server {s:.1} µs")?;
            }
        }
        Ok(())
    }
}

/// CPU time (user + system) of this process, or of `pid` from `/proc/<pid>/stat`.
mod cpu {
    use std::time::Duration;

    pub fn own() -> Option<Duration> {
        // SAFETY: rusage is plain C data (all-zero is valid); getrusage only writes into it.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
            return None;
        }
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Some(tv(u.ru_utime) + tv(u.ru_stime))
    }

    pub fn of_pid(pid: u32) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| {
            anyhow::anyhow!("--server-pid {pid}: cannot read /proc/{pid}/stat: {e}")
        })?;
        // utime and stime are fields 14 and 15; the command name (field 2) may hold spaces,
        // so count from its closing parenthesis.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
        let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
            anyhow::bail!("--server-pid {pid}: unexpected /proc/{pid}/stat format");
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(Duration::from_secs_f64((utime + stime) as f64 / hz))
    }
}

/// Runs `f` and adds the CPU time per successful call of this process and of the server.
async fn with_cpu(
    server_pid: Option<u32>,
    f: impl std::future::Future<Output = anyhow::Result<BenchReport>>,
) -> anyhow::Result<BenchReport> {
    let own0 = cpu::own();
    let server0 = server_pid.map(cpu::of_pid).transpose()?;
    let mut r = f.await?;
    let own1 = cpu::own();
    let server1 = server_pid.map(cpu::of_pid).transpose()?;
    let per_call = |d: Duration| d.as_secs_f64() * 1e6 / r.ok.max(1) as f64;
    r.client_cpu_us = own0.zip(own1).map(|(a, b)| per_call(b.saturating_sub(a)));
    r.server_cpu_us = server0
        .zip(server1)
        .map(|(a, b)| per_call(b.saturating_sub(a)));
    Ok(r)
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as u64
}

/// The `authorization` header value for an API key.
fn bearer(key: &str) -> anyhow::Result<MetadataValue<tonic::metadata::Ascii>> {
    format!("Bearer {key}")
        .parse()
        .context("--key: not a valid header value")
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
    let auth = bearer(key)?;
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
                    let r = call(&mut client, rpc, &auth, &template, n).await;
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
    Ok(report(rpc, None, all, errors, start.elapsed()))
}

/// ScoreStream closed loop: one stream per channel, up to `window` requests unanswered on each,
/// new requests sent as answers come back, until `duration`; then the stream is closed and the
/// remaining answers read. Answers come in request order, so each one's latency runs from the
/// oldest send time still waiting.
pub async fn measure_stream(
    channels: &[Channel],
    window: usize,
    duration: Duration,
    key: &str,
    template: ScoreRequest,
) -> anyhow::Result<BenchReport> {
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    let auth = bearer(key)?;
    let window = window.max(1);
    let deadline = Instant::now() + duration;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for ch in channels {
        let mut client = CreditScoringClient::new(ch.clone());
        let auth = auth.clone();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let (to_server, requests) = tokio::sync::mpsc::channel::<ScoreRequest>(window);
            let permits = Arc::new(tokio::sync::Semaphore::new(window));
            let sent_at: Arc<Mutex<VecDeque<Instant>>> = Arc::default();
            let sender = {
                let (permits, sent_at) = (permits.clone(), sent_at.clone());
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let Ok(permit) = permits.acquire().await else {
                            break;
                        };
                        permit.forget();
                        let mut msg = template.clone();
                        msg.request_id = format!("bench-{n}");
                        n += 1;
                        sent_at
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push_back(Instant::now());
                        if to_server.send(msg).await.is_err() {
                            break;
                        }
                    }
                })
            };
            let mut req = Request::new(tokio_stream::wrappers::ReceiverStream::new(requests));
            req.metadata_mut().insert("authorization", auth);
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 14);
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let read = async {
                let mut answers = client.score_stream(req).await?.into_inner();
                while let Some(item) = answers.message().await? {
                    let sent = sent_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop_front();
                    permits.add_permits(1);
                    match item.item {
                        Some(Item::Response(_)) => {
                            let t = sent.map(|t| t.elapsed().as_micros()).unwrap_or(0);
                            lat.push(t.min(u32::MAX as u128) as u32)
                        }
                        Some(Item::Error(e)) => {
                            let code = tonic::Code::from_i32(e.code);
                            *errors.entry(format!("{code:?}")).or_default() += 1
                        }
                        None => *errors.entry("empty item".into()).or_default() += 1,
                    }
                }
                Ok::<_, tonic::Status>(())
            };
            let result = read.await;
            permits.close(); // wakes the sender if it waits for answers that will not come
            let _ = sender.await;
            result.map(|()| (lat, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        match t.await.context("bench stream task")? {
            Ok((lat, errs)) => {
                all.extend(lat);
                for (k, v) in errs {
                    *errors.entry(k).or_default() += v;
                }
            }
            Err(s) => *errors.entry(format!("stream {:?}", s.code())).or_default() += 1,
        }
    }
    Ok(report(Rpc::Stream, None, all, errors, start.elapsed()))
}

/// One call; the request id is unique per call of a client task.
async fn call(
    client: &mut CreditScoringClient<Channel>,
    rpc: Rpc,
    auth: &MetadataValue<tonic::metadata::Ascii>,
    template: &ScoreRequest,
    n: u64,
) -> Result<(), tonic::Status> {
    if rpc == Rpc::Ping {
        let mut req = Request::new(PingRequest {});
        req.metadata_mut().insert("authorization", auth.clone());
        client.ping(req).await.map(|_| ())
    } else {
        let mut msg = template.clone();
        msg.request_id = format!("bench-{n}");
        let mut req = Request::new(msg);
        req.metadata_mut().insert("authorization", auth.clone());
        client.score(req).await.map(|_| ())
    }
}

/// Calls still unanswered beyond which the open loop stops: the server is not keeping up.
const OPEN_LOOP_BACKLOG: usize = 20_000;

/// Open loop: starts `rate` calls/s spread over `channels` for `duration`, each call in its own
/// task, whatever the answers, spaced as `arrivals` says.
pub async fn measure_open(
    channels: &[Channel],
    rate: f64,
    duration: Duration,
    rpc: Rpc,
    key: &str,
    template: ScoreRequest,
    arrivals: Arrivals,
) -> anyhow::Result<BenchReport> {
    let auth = bearer(key)?;
    anyhow::ensure!(!channels.is_empty(), "no connection");
    let clients: Vec<_> = channels
        .iter()
        .map(|c| CreditScoringClient::new(c.clone()))
        .collect();
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let start = Instant::now();
    let mut schedule = Schedule::new(arrivals, rate, total, start);
    let mut running = tokio::task::JoinSet::new();
    // Capped: --rate 1e7 for an hour would otherwise reserve 144 GB before the first call.
    let mut all = Vec::with_capacity(total.min(1 << 20) as usize);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let collect = |r: Result<Result<u32, tonic::Code>, tokio::task::JoinError>,
                   all: &mut Vec<u32>,
                   errors: &mut BTreeMap<String, u64>| match r {
        Ok(Ok(us)) => all.push(us),
        Ok(Err(code)) => *errors.entry(format!("{code:?}")).or_default() += 1,
        Err(e) => *errors.entry(format!("task: {e}")).or_default() += 1,
    };
    let mut started = 0u64;
    while let Some(due) = schedule.next_batch().await {
        for scheduled in due {
            let mut client = clients[started as usize % clients.len()].clone();
            let (auth, template, n) = (auth.clone(), template.clone(), started);
            running.spawn(async move {
                // Ticks time each call from when it really starts; Poisson from its slot.
                let t = scheduled.unwrap_or_else(Instant::now);
                call(&mut client, rpc, &auth, &template, n)
                    .await
                    .map(|()| t.elapsed().as_micros().min(u32::MAX as u128) as u32)
                    .map_err(|s| s.code())
            });
            started += 1;
        }
        while let Some(r) = running.try_join_next() {
            collect(r, &mut all, &mut errors);
        }
        if running.len() > OPEN_LOOP_BACKLOG {
            *errors
                .entry("not started: server fell behind".into())
                .or_default() += total - started;
            break;
        }
    }
    drop(schedule); // stops the pacer thread if the loop broke off
    while let Some(r) = running.join_next().await {
        collect(r, &mut all, &mut errors);
    }
    Ok(report(rpc, Some(rate), all, errors, start.elapsed()))
}

/// When the open loop's calls are due: batches of call slots (`Some(scheduled time)` for
/// Poisson arrivals, `None` for ticks, timed from their real start).
enum Schedule {
    Ticks {
        tick: tokio::time::Interval,
        rate: f64,
        total: u64,
        issued: u64,
        start: Instant,
    },
    Poisson(tokio::sync::mpsc::UnboundedReceiver<Instant>),
}

impl Schedule {
    fn new(arrivals: Arrivals, rate: f64, total: u64, start: Instant) -> Schedule {
        match arrivals {
            Arrivals::Ticks => {
                let mut tick = tokio::time::interval(Duration::from_millis(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                Schedule::Ticks {
                    tick,
                    rate,
                    total,
                    issued: 0,
                    start,
                }
            }
            Arrivals::Poisson => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                // Its own thread because tokio's timers have 1 ms resolution and arrivals at
                // 17k/s are ~60 µs apart; it sleeps between them (no spinning: the cores are
                // shared with the server).
                std::thread::spawn(move || pace_poisson(rate, total, start, tx));
                Schedule::Poisson(rx)
            }
        }
    }

    async fn next_batch(&mut self) -> Option<Vec<Option<Instant>>> {
        match self {
            Schedule::Ticks {
                tick,
                rate,
                total,
                issued,
                start,
            } => {
                if *issued >= *total {
                    return None;
                }
                tick.tick().await;
                let due = ((start.elapsed().as_secs_f64() * *rate).floor() as u64 + 1).min(*total);
                let n = due.saturating_sub(*issued);
                *issued += n;
                Some(vec![None; n as usize])
            }
            Schedule::Poisson(rx) => {
                let first = rx.recv().await?;
                let mut batch = vec![Some(first)];
                while let Ok(t) = rx.try_recv() {
                    batch.push(Some(t));
                }
                Some(batch)
            }
        }
    }
}

/// Sends `total` arrival times, exponential gaps at `rate` per second (fixed seed, so runs
/// compare), each when it is due.
fn pace_poisson(
    rate: f64,
    total: u64,
    start: Instant,
    tx: tokio::sync::mpsc::UnboundedSender<Instant>,
) {
    use rand::SeedableRng;
    use rand_distr::Distribution;
    // Sleeps end up to 50 µs late by default (the kernel's timer slack); ask for 1 µs.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only sets this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
    let Ok(gaps) = rand_distr::Exp::new(rate) else {
        return;
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut at = start;
    for _ in 0..total {
        at += Duration::from_secs_f64(gaps.sample(&mut rng));
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if tx.send(at).is_err() {
            return; // the loop stopped
        }
    }
}

fn report(
    rpc: Rpc,
    offered: Option<f64>,
    mut all: Vec<u32>,
    errors: BTreeMap<String, u64>,
    elapsed: Duration,
) -> BenchReport {
    all.sort_unstable();
    BenchReport {
        rpc: match rpc {
            Rpc::Ping => "ping",
            Rpc::Stream => "stream",
            Rpc::Score | Rpc::Both => "score",
        },
        offered,
        ok: all.len() as u64,
        errors,
        elapsed,
        p50_us: percentile(&all, 0.50),
        p90_us: percentile(&all, 0.90),
        p99_us: percentile(&all, 0.99),
        p999_us: percentile(&all, 0.999),
        client_cpu_us: None,
        server_cpu_us: None,
    }
}

/// Connects and runs the RPCs the arguments ask for.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Vec<BenchReport>> {
    if args.connections == 0 || !(args.seconds > 0.0) || args.seconds > 3600.0 {
        anyhow::bail!("--connections must be > 0 and --seconds in (0, 3600]");
    }
    let wants_score = matches!(args.rpc, Rpc::Score | Rpc::Both | Rpc::Stream);
    if args.rpc == Rpc::Stream && args.rate.is_some() {
        anyhow::bail!(
            "--rate: the open loop sends unary calls; ScoreStream is measured closed-loop"
        );
    }
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
    for rpc in [Rpc::Ping, Rpc::Score, Rpc::Stream] {
        let both = args.rpc == Rpc::Both && rpc != Rpc::Stream;
        if args.rpc != rpc && !both {
            continue;
        }
        if rpc == Rpc::Stream {
            let streamed = |d| {
                let m = measure_stream(&channels, args.inflight, d, &args.key, template.clone());
                with_cpu(args.server_pid, m)
            };
            streamed(Duration::from_millis(300).min(duration)).await?;
            reports.push(streamed(duration).await?);
            continue;
        }
        let closed = |d| {
            with_cpu(
                args.server_pid,
                measure(
                    &channels,
                    args.inflight,
                    d,
                    rpc,
                    &args.key,
                    template.clone(),
                ),
            )
        };
        // Warm up connections and the server's code paths before measuring.
        closed(Duration::from_millis(300).min(duration)).await?;
        let rate = match args.rate {
            None => {
                reports.push(closed(duration).await?);
                continue;
            }
            Some(Rate::PerSecond(r)) => r,
            Some(Rate::ShareOfMax(share)) => {
                let max = closed(duration).await?;
                let r = max.per_second() * share;
                reports.push(max);
                r
            }
        };
        let open = measure_open(
            &channels,
            rate,
            duration,
            rpc,
            &args.key,
            template.clone(),
            args.arrivals,
        );
        reports.push(with_cpu(args.server_pid, open).await?);
    }
    Ok(reports)
}

/// Entry point of `sesame bench`.
pub fn bench_cli(args: BenchArgs) -> anyhow::Result<()> {
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads.into());
        b
    };
    let rt = builder.enable_all().build().context("tokio runtime")?;
    let reports = rt.block_on(run(&args))?;
    let open = match args.rate {
        None => String::new(),
        Some(Rate::PerSecond(r)) => format!(
            ", then open loop at {r} calls/s ({} arrivals)",
            format!("{:?}", args.arrivals).to_lowercase()
        ),
        Some(Rate::ShareOfMax(s)) => format!(
            ", then open loop at {}% of that ({} arrivals)",
            s * 100.0,
            format!("{:?}", args.arrivals).to_lowercase()
        ),
    };
    println!(
        "sesame bench: {} connections x {} in flight, {} s per rpc{open}, {} client thread{}, {}",
        args.connections,
        args.inflight,
        args.seconds,
        args.threads,
        if args.threads == 1 { "" } else { "s" },
        args.addr
    );
    for r in &reports {
        println!("{r}");
    }
    let closed = |rpc: &str| reports.iter().find(|r| r.rpc == rpc && r.offered.is_none());
    if let (Some(p), Some(s)) = (closed("ping"), closed("score")) {
        let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
        println!(
            "score/ping: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
            ratio(s.per_second(), p.per_second()),
            ratio(s.p50_us as f64, p.p50_us as f64),
            ratio(s.p99_us as f64, p.p99_us as f64)
        );
        // Throughput on a shared machine follows the CPU both processes spend per call.
        let total = |r: &BenchReport| Some(r.client_cpu_us? + r.server_cpu_us?);
        if let (Some(pc), Some(sc)) = (total(p), total(s)) {
            println!(
                "score/ping: CPU per call (client + server) {sc:.1} / {pc:.1} µs = {:.2}x",
                ratio(sc, pc)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{BenchArgs, Rate};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn one_client_thread_unless_told_and_never_zero() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["bench"], args].concat());
        let cli = parse(&[]).expect("defaults parse");
        assert_eq!(cli.bench.threads, 1);
        assert_eq!(
            parse(&["--threads", "4"]).expect("4 threads").bench.threads,
            4
        );
        for bad in ["0", "-1", "many", "257"] {
            let arg = format!("--threads={bad}");
            let e = parse(&[&arg]).err().expect("refused");
            assert!(e.to_string().contains("--threads"), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn poisson_arrivals_come_at_the_mean_rate_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let start = std::time::Instant::now();
        let (rate, total) = (1_000_000.0, 5_000u64);
        std::thread::spawn(move || super::pace_poisson(rate, total, start, tx));
        let mut times = Vec::new();
        while let Some(t) = rx.recv().await {
            times.push(t);
        }
        assert_eq!(times.len() as u64, total);
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "in order");
        let span = (times[times.len() - 1] - start).as_secs_f64();
        let mean_gap = span / total as f64;
        assert!(
            (mean_gap * rate - 1.0).abs() < 0.05,
            "mean gap {mean_gap:e} s"
        );
        // Exponential gaps: about 37 % longer than the mean, not all equal.
        let long = times
            .windows(2)
            .filter(|w| (w[1] - w[0]).as_secs_f64() > mean_gap)
            .count() as f64
            / total as f64;
        assert!(
            (0.32..0.42).contains(&long),
            "share of gaps above the mean {long}"
        );
    }

    #[test]
    fn report_gives_the_percentiles_of_the_latencies() {
        // 1..=1000 µs, shuffled: the report sorts them.
        let latencies: Vec<u32> = (1..=1000u32).map(|i| (i * 7919) % 1000 + 1).collect();
        let r = super::report(
            super::Rpc::Score,
            None,
            latencies,
            Default::default(),
            std::time::Duration::from_secs(1),
        );
        assert_eq!(
            (r.ok, r.p50_us, r.p90_us, r.p99_us, r.p999_us),
            (1000, 501, 900, 990, 999)
        );
        assert!(
            r.to_string()
                .contains("p90 0.900 ms, p99 0.990 ms, p99.9 0.999 ms"),
            "{r}"
        );
    }

    #[test]
    fn rate_is_calls_per_second_or_a_share_of_the_maximum() {
        assert_eq!("5000".parse::<Rate>(), Ok(Rate::PerSecond(5000.0)));
        assert_eq!(" 50% ".parse::<Rate>(), Ok(Rate::ShareOfMax(0.5)));
        assert_eq!("100%".parse::<Rate>(), Ok(Rate::ShareOfMax(1.0)));
        for bad in ["", "0", "-5", "0%", "150%", "fast", "NaN", "inf", "1e9"] {
            let err = bad.parse::<Rate>().unwrap_err();
            assert!(err.contains("not a rate"), "{bad}: {err}");
        }
    }
}
