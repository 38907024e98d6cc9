//! What the audit log records of a Score call or ScoreStream item, and the rule that a call is
//! answered only once its record is durable (a record that cannot be written fails the call
//! with UNAVAILABLE instead).

use tonic::{Code, Status};

use super::error::to_status;
use super::metrics::Method;
use super::{pb, State};
use crate::audit::{user_ref, AuditRecord};

/// Partner of a call whose key did not identify one.
pub const UNKNOWN_PARTNER: &str = "unknown";
/// Longest request id or scenario recorded, bytes (longer ones were refused as invalid).
const MAX_FIELD_BYTES: usize = 128;

fn clip(s: &str) -> String {
    let s = s.trim();
    let mut end = s.len().min(MAX_FIELD_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The record of a call in progress: what the request asked, who asked. Not `Debug`: it holds
/// the raw user id until the record is written, and must never reach a log line.
#[derive(Clone)]
pub struct Draft {
    method: Method,
    partner: String,
    /// The id as asked; hashed into the record's opaque `user_ref` only when a record is
    /// written (a SHA-256 per call saved when the audit is off).
    user_id: String,
    scenario: String,
    request_id: String,
}

impl Draft {
    pub fn new(method: Method, req: &pb::ScoreRequest) -> Draft {
        Draft {
            method,
            partner: UNKNOWN_PARTNER.to_string(),
            user_id: req.user_id.trim().to_string(),
            scenario: clip(&req.scenario),
            request_id: clip(&req.request_id),
        }
    }

    /// A ScoreStream refused before any request was read.
    pub fn stream_refused() -> Draft {
        Draft::new(Method::ScoreStream, &pb::ScoreRequest::default())
    }

    pub fn set_partner(&mut self, id: &str) {
        self.partner = id.to_string();
    }

    fn finish(self, outcome: Result<&pb::ScoreResponse, Code>) -> AuditRecord {
        let (decision, model_version, code) = match outcome {
            Ok(resp) => (
                pb::Decision::try_from(resp.decision)
                    .map(|d| {
                        d.as_str_name()
                            .trim_start_matches("DECISION_")
                            .to_ascii_lowercase()
                    })
                    .unwrap_or_default(),
                resp.model_version.clone(),
                Code::Ok,
            ),
            Err(code) => (String::new(), String::new(), code),
        };
        AuditRecord {
            ts_ms: chrono::Utc::now().timestamp_millis(),
            method: self.method.as_str().to_string(),
            partner: self.partner,
            user_ref: if self.user_id.is_empty() {
                String::new()
            } else {
                user_ref(&self.user_id)
            },
            scenario: self.scenario,
            request_id: self.request_id,
            decision,
            model_version,
            code: code_name(code).to_string(),
        }
    }
}

/// gRPC code names as in the spec (`PERMISSION_DENIED`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Records the call, then hands back its result; if the record cannot be written the call fails
/// with UNAVAILABLE (never answered unrecorded).
pub async fn recorded<T: std::borrow::Borrow<pb::ScoreResponse>>(
    state: &State,
    draft: Draft,
    result: Result<T, Status>,
) -> Result<T, Status> {
    if !state.audit.enabled() {
        return result;
    }
    let record = draft.finish(match &result {
        Ok(r) => Ok(r.borrow()),
        Err(s) => Err(s.code()),
    });
    match state.audit.record(record).await {
        Ok(()) => result,
        Err(e) => Err(to_status(e)),
    }
}
