//! The CreditScoring service.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};

use super::audit::{recorded, Draft};
use super::auth::{client_cert, Caller};
use super::error::{to_status, AuthError, ServiceError};
use super::metrics::{Method, Metrics};
use super::pb::{self, score_stream_item::Item};
use super::{blocking, convert, user_ref, State};
use crate::scoring::{ScoreOutcome, ScoringError};
use crate::security::consent::unix_now;

#[derive(Clone)]
pub struct Scoring {
    state: Arc<State>,
}

/// Runs a handler body and records its code and latency.
///
/// A plain function returning `body` mapped, not an `async fn`: an async fn keeps its future
/// argument and the awaited copy side by side, which doubled the Score call's future (to 5 KB,
/// copied at every await level; `memmove` was 9 % of the server's CPU under Score).
pub(crate) fn observed<'a, T>(
    metrics: &'a Metrics,
    method: Method,
    body: impl Future<Output = Result<T, Status>> + 'a,
) -> impl Future<Output = Result<T, Status>> + 'a {
    let start = Instant::now();
    body.map(move |r| {
        let code = match &r {
            Ok(_) => Code::Ok,
            Err(s) => s.code(),
        };
        metrics.observe(method, code, start.elapsed());
        r
    })
}

impl Scoring {
    pub fn new(state: Arc<State>) -> Scoring {
        Scoring { state }
    }

    /// One request, start to end, recorded in the audit log before it is answered: the
    /// partner's key (`partner`), its rate limit, then [`Scoring::score_one`].
    async fn audited(
        &self,
        method: Method,
        partner: Result<usize, AuthError>,
        req: pb::ScoreRequest,
    ) -> Result<pb::ScoreResponse, Status> {
        let mut draft = Draft::new(method, &req);
        let result = match partner {
            Ok(p) => {
                draft.set_partner(self.state.auth.partner_id(p));
                match self.state.auth.check_rate(p) {
                    Ok(()) => self.score_one(p, req).await,
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        };
        recorded(&self.state, draft, result.map_err(to_status)).await
    }

    /// One ScoreStream item, start to end: its answer, or its error as an item (the stream
    /// goes on), recorded in the audit log and the metrics like a Score call.
    async fn stream_item(&self, partner: usize, req: pb::ScoreRequest) -> pb::ScoreStreamItem {
        let start = Instant::now();
        let request_id = req.request_id.clone();
        let metrics = &self.state.metrics;
        let item = match self.audited(Method::ScoreStream, Ok(partner), req).await {
            Ok(resp) => {
                metrics.observe(Method::ScoreStream, Code::Ok, start.elapsed());
                Item::Response(resp)
            }
            Err(s) => {
                metrics.observe(Method::ScoreStream, s.code(), start.elapsed());
                Item::Error(pb::ItemError {
                    code: s.code() as i32,
                    message: s.message().to_string(),
                    request_id,
                })
            }
        };
        pb::ScoreStreamItem { item: Some(item) }
    }

    /// One request of an authenticated partner, start to end. Order of checks: the request's own
    /// validity, the engine's presence, the scenario's existence, the partner's permission, then
    /// the user's consent.
    async fn score_one(
        &self,
        partner: usize,
        mut req: pb::ScoreRequest,
    ) -> Result<pb::ScoreResponse, ServiceError> {
        let state = &self.state;
        let request_id = req.request_id.clone();
        let consent_token = std::mem::take(&mut req.consent_token);
        let input = convert::score_input(req, state.auth.partner_id(partner))?;
        let engine = state.engine()?;
        convert::check_scenario(&engine, &input.scenario)?;
        state.auth.check_scenario(partner, &input.scenario)?;
        state.consent.verify(
            &consent_token,
            &input.user_id,
            &input.partner_id,
            &input.scenario,
            unix_now(),
        )?;
        // Hashing the id for the log line costs a SHA-256; skip it when debug logs are off.
        let who = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (user_ref(&input.user_id), input.scenario.clone()));
        // A stored user costs ~13 µs of CPU: handing that to the blocking pool (two thread
        // wake-ups) cost more than the work itself, so it runs here, and a shared velocity
        // store (Redis) is awaited, not blocked on. An inline applicant runs the polars
        // pipeline (milliseconds), which must not stall the async workers.
        let on_async_worker = state.inline_scoring || input.applicant.is_none();
        let outcome: Result<ScoreOutcome, ScoringError> = if on_async_worker {
            AssertUnwindSafe(engine.score_async(&input))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    Err(ScoringError::Internal("the scoring engine panicked".into()))
                })
        } else {
            let _permit = state
                .score_permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ScoringError::Unavailable("server shutting down".into()))?;
            blocking(move || engine.score(&input)).await
        };
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                if let Some((user, scenario)) = &who {
                    tracing::debug!(%user, %scenario, error = %e, "score refused");
                }
                return Err(e.into());
            }
        };
        state
            .metrics
            .observe_outcome(&outcome.model_version, outcome.score, outcome.decision);
        if let Some((user, scenario)) = &who {
            tracing::debug!(%user, %scenario, score = outcome.score,
                decision = outcome.decision.as_str(), "scored");
        }
        let mut resp = convert::score_response(outcome);
        resp.request_id = request_id;
        Ok(resp)
    }
}

#[tonic::async_trait]
impl pb::credit_scoring_server::CreditScoring for Scoring {
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        observed(&self.state.metrics, Method::Score, async {
            let partner = self
                .state
                .auth
                .partner(request.metadata(), client_cert(&request));
            // On the heap: the call's state (~2 KB) is then built in one place instead of
            // being copied through every wrapper above it (tonic's box, `observed`).
            let resp = Box::pin(self.audited(Method::Score, partner, request.into_inner())).await?;
            Ok(Response::new(resp))
        })
        .await
    }

    type ScoreStreamStream = ReceiverStream<Result<pb::ScoreStreamItem, Status>>;

    async fn score_stream(
        &self,
        request: Request<Streaming<pb::ScoreRequest>>,
    ) -> Result<Response<Self::ScoreStreamStream>, Status> {
        let partner = match self
            .state
            .auth
            .partner(request.metadata(), client_cert(&request))
        {
            Ok(p) => p,
            Err(e) => {
                let s = to_status(e);
                let s = match recorded::<pb::ScoreResponse>(
                    &self.state,
                    Draft::stream_refused(),
                    Err(s),
                )
                .await
                {
                    Err(s) => s,
                    Ok(_) => Status::unauthenticated("refused"),
                };
                self.state
                    .metrics
                    .observe(Method::ScoreStream, s.code(), Default::default());
                return Err(s);
            }
        };
        let inbound = request.into_inner();
        // Bounded: when the caller stops reading answers, we stop reading requests.
        let (tx, rx) = mpsc::channel(self.state.stream_buffer);
        let this = self.clone();
        let concurrency = self.state.stream_concurrency;
        tokio::spawn(async move {
            // Up to `concurrency` items scored at once, answered in request order. One at a time,
            // each item waited for its own audit commit, and a stream ran at a quarter of the
            // unary calls' rate; at once, a stream's items share the group commits.
            let mut answers = inbound
                .map(move |next| {
                    let this = this.clone();
                    async move {
                        match next {
                            Ok(req) => Ok(this.stream_item(partner, req).await),
                            Err(status) => Err(status),
                        }
                    }
                })
                .buffered(concurrency);
            loop {
                let next = tokio::select! {
                    a = answers.next() => a,
                    _ = tx.closed() => break,
                };
                match next {
                    None => break,
                    Some(Ok(item)) => {
                        if tx.send(Ok(item)).await.is_err() {
                            break;
                        }
                    }
                    // A transport or decoding error: the stream cannot go on.
                    Some(Err(status)) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_model_info(
        &self,
        request: Request<pb::GetModelInfoRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        observed(&self.state.metrics, Method::GetModelInfo, async {
            self.state
                .auth
                .partner(request.metadata(), client_cert(&request))
                .map_err(to_status)?;
            let engine = self.state.engine().map_err(to_status)?;
            let version = request.into_inner().model_version;
            let version = Some(version.trim().to_string()).filter(|v| !v.is_empty());
            let info = std::panic::catch_unwind(AssertUnwindSafe(|| {
                engine.model_info(version.as_deref())
            }))
            .unwrap_or_else(|_| Err(ScoringError::Internal("model_info panicked".into())))
            .map_err(to_status)?;
            Ok(Response::new(convert::model_info(info)))
        })
        .await
    }

    async fn ping(
        &self,
        request: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        observed(&self.state.metrics, Method::Ping, async {
            let caller = self
                .state
                .auth
                .identify(request.metadata(), client_cert(&request))
                .map_err(to_status)?;
            let partner_id = match caller {
                Caller::Partner(i) => self.state.auth.partner_id(i).to_string(),
                Caller::Admin => "admin".to_string(),
            };
            Ok(Response::new(pb::PingResponse {
                partner_id,
                engine_ready: self.state.engine.load().is_some(),
            }))
        })
        .await
    }
}
