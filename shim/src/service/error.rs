//! The one place where failures become ttrpc status codes.
//!
//! Every Task RPC returns `Result<_, ServiceError>`; `into_ttrpc` maps the variant to the code
//! containerd expects (it turns NotFound / AlreadyExists / FailedPrecondition into its own
//! errdefs, which `ctr` and the CRI plugin rely on), keeping the message for the user.

use ttrpc::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0}")]
    Internal(String),
}

pub type ServiceResult<T> = std::result::Result<T, ServiceError>;

impl ServiceError {
    pub fn code(&self) -> Code {
        match self {
            ServiceError::NotFound(_) => Code::NOT_FOUND,
            ServiceError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ServiceError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ServiceError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ServiceError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ServiceError::Internal(_) => Code::UNKNOWN,
        }
    }

    pub fn into_ttrpc(self) -> ttrpc::Error {
        let mut status = Status::new();
        status.set_code(self.code());
        status.set_message(self.to_string());
        ttrpc::Error::RpcStatus(status)
    }
}

impl From<runtime_native::Error> for ServiceError {
    fn from(e: runtime_native::Error) -> Self {
        match e {
            runtime_native::Error::InvalidSpec { .. } => {
                ServiceError::InvalidArgument(e.to_string())
            }
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_maps_to_its_code_and_keeps_the_message() {
        let cases = [
            (
                ServiceError::NotFound("task t1".into()),
                Code::NOT_FOUND,
                "task t1: not found",
            ),
            (
                ServiceError::AlreadyExists("exec e1".into()),
                Code::ALREADY_EXISTS,
                "exec e1: already exists",
            ),
            (
                ServiceError::FailedPrecondition("running".into()),
                Code::FAILED_PRECONDITION,
                "running",
            ),
            (
                ServiceError::InvalidArgument("bad".into()),
                Code::INVALID_ARGUMENT,
                "bad",
            ),
            (
                ServiceError::Unimplemented("no".into()),
                Code::UNIMPLEMENTED,
                "no",
            ),
            (ServiceError::Internal("boom".into()), Code::UNKNOWN, "boom"),
        ];
        for (err, code, msg) in cases {
            match err.into_ttrpc() {
                ttrpc::Error::RpcStatus(s) => {
                    assert_eq!(s.code(), code);
                    assert_eq!(s.message(), msg);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_spec_is_invalid_argument() {
        let e: ServiceError = runtime_native::Error::InvalidSpec {
            path: "/b/config.json".into(),
            reason: "process.args is empty".into(),
        }
        .into();
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("/b/config.json"));
    }
}
