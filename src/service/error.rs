//! The one place where errors become gRPC status codes.

use tonic::{Code, Status};

use crate::scoring::ScoringError;

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
        ];
        for (e, code) in cases {
            let s = to_status(e);
            assert_eq!(s.code(), code);
            assert!(!s.message().contains("secret"));
        }
        let s = to_status(ScoringError::invalid("user_id", "must not be empty"));
        assert_eq!(s.message(), "user_id: must not be empty");
    }
}
