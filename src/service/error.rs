//! The one place where errors become gRPC status codes.

use tonic::{Code, Status};

use crate::audit::AuditError;
use crate::scoring::ScoringError;
use crate::security::consent::ConsentError;
use crate::security::ratelimit::RateLimited;

/// Why authentication or authorisation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No key, a malformed header, or an unknown key.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A valid key that may not do this.
    #[error("{0}")]
    PermissionDenied(String),
}

/// Every error a handler can end with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Scoring(#[from] ScoringError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Consent(#[from] ConsentError),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Maps an error to the status the caller sees. INTERNAL details stay in the server log.
pub fn to_status(err: impl Into<ServiceError>) -> Status {
    match err.into() {
        ServiceError::Scoring(e) => match e {
            ScoringError::InvalidArgument { field, message } => {
                Status::new(Code::InvalidArgument, format!("{field}: {message}"))
            }
            ScoringError::NotFound(m) => Status::new(Code::NotFound, m),
            ScoringError::Unavailable(m) => Status::new(Code::Unavailable, m),
            ScoringError::Internal(m) => {
                tracing::error!(error = %m, "internal error");
                Status::new(Code::Internal, "internal error (logged on the server)")
            }
        },
        ServiceError::Auth(AuthError::Unauthenticated(m)) => Status::new(Code::Unauthenticated, m),
        ServiceError::Auth(AuthError::PermissionDenied(m)) => {
            Status::new(Code::PermissionDenied, m)
        }
        ServiceError::Consent(e) => Status::new(Code::PermissionDenied, e.to_string()),
        ServiceError::RateLimited(e) => {
            // The message says when to retry; so do `retry-after` (whole seconds, as in HTTP)
            // and `retry-after-ms`.
            let ms = e.retry_after.as_millis().max(1);
            let mut s = Status::new(Code::ResourceExhausted, e.to_string());
            if let Ok(v) = ms.div_ceil(1000).to_string().parse() {
                s.metadata_mut().insert("retry-after", v);
            }
            if let Ok(v) = ms.to_string().parse() {
                s.metadata_mut().insert("retry-after-ms", v);
            }
            s
        }
        ServiceError::Audit(e) => {
            tracing::error!(error = %e, "call refused: the audit log cannot record it");
            Status::new(
                Code::Unavailable,
                "the audit log cannot record this call, so it is not answered; retry later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code() {
        let cases: Vec<(ServiceError, Code)> = vec![
            (
                ScoringError::invalid("user_id", "empty").into(),
                Code::InvalidArgument,
            ),
            (ScoringError::NotFound("x".into()).into(), Code::NotFound),
            (
                ScoringError::Unavailable("x".into()).into(),
                Code::Unavailable,
            ),
            (
                ScoringError::Internal("secret".into()).into(),
                Code::Internal,
            ),
            (
                AuthError::Unauthenticated("x").into(),
                Code::Unauthenticated,
            ),
            (
                AuthError::PermissionDenied("x".into()).into(),
                Code::PermissionDenied,
            ),
            (ConsentError::WrongUser.into(), Code::PermissionDenied),
            (AuditError::Write("secret".into()).into(), Code::Unavailable),
        ];
        for (e, code) in cases {
            let s = to_status(e);
            assert_eq!(s.code(), code);
            assert!(!s.message().contains("secret"));
        }
        let s = to_status(RateLimited {
            partner: "p".into(),
            rate_per_sec: 1,
            burst: 1,
            retry_after: std::time::Duration::from_millis(1500),
        });
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert!(
            s.message().contains("retry after 1500 ms"),
            "{}",
            s.message()
        );
        assert_eq!(
            s.metadata().get("retry-after").map(|v| v.to_str().ok()),
            Some(Some("2"))
        );
        let s = to_status(ScoringError::invalid("user_id", "must not be empty"));
        assert_eq!(s.message(), "user_id: must not be empty");
    }
}
