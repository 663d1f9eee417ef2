//! This layer's errors, and the one conversion to a gRPC status.

use tonic::{Code, Status};

use crate::engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// A request that can never succeed as it is.
    #[error("{0}")]
    Invalid(String),

    /// A volume of that name exists, not as asked.
    #[error("{0}")]
    Conflict(String),

    /// A capacity range rbdvol cannot meet.
    #[error("{0}")]
    OutOfRange(String),

    /// A pagination token this server did not give.
    #[error("{0}")]
    BadToken(String),

    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// The gRPC status of an error of a call on `volume`: Swarm retries what
/// is not final. dockerd logs only the message: a refusal of the request
/// itself names the volume (the engine's errors already do).
pub fn status(call: &str, volume: &str, e: CsiError) -> Status {
    let code = match &e {
        CsiError::Invalid(_) => Code::InvalidArgument,
        CsiError::Conflict(_) => Code::AlreadyExists,
        CsiError::BadToken(_) => Code::Aborted,
        CsiError::OutOfRange(_) => Code::OutOfRange,
        CsiError::Engine(e) => engine_code(e),
    };
    let message = match &e {
        CsiError::Invalid(m) | CsiError::OutOfRange(m) if !volume.is_empty() && !m.contains(&format!("'{volume}'")) => format!("volume '{volume}': {m}"),
        _ => e.to_string(),
    };
    tracing::warn!("csi {call}: {message}");
    Status::new(code, message)
}

fn engine_code(e: &EngineError) -> Code {
    use EngineError::*;
    match e {
        InvalidName { .. } | UnknownOption { .. } | InvalidOption { .. } | NoSuchSnapshot { .. } | CannotAdopt { .. } => Code::InvalidArgument,
        NotFound(_) | NotFoundAsOf { .. } => Code::NotFound,
        NotOurs { .. } => Code::AlreadyExists,
        MountedElsewhere { .. } | StillWatched { .. } | DuplicateHostId { .. } | ReadOnlyHolders { .. } | ReadersUnknown { .. } | NotForReadOnly { .. } => Code::FailedPrecondition,
        HasSnapshots { .. } | HasClones { .. } | InUseHere { .. } | NotStaged { .. } | NotAdopted { .. } | RefusedRecord { .. } => Code::FailedPrecondition,
        HolderDying { .. } | TakingBack { .. } | ClusterUnreachable { .. } | Connect { .. } | Config(_) => Code::Unavailable,
        _ => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_get_the_codes_swarm_acts_on() {
        let s = status("t", "v", CsiError::Invalid("use --type mount".into()));
        assert_eq!((s.code(), s.message()), (Code::InvalidArgument, "volume 'v': use --type mount"));
        assert_eq!(status("t", "v", EngineError::NotFound("v".into()).into()).code(), Code::NotFound);
        let busy = EngineError::MountedElsewhere { name: "v".into(), host: "h".into(), since: "now".into() };
        let s = status("t", "v", busy.into());
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("volume 'v' is mounted on host 'h'"), "{}", s.message());
        assert_eq!(status("t", "v", EngineError::ClusterUnreachable { detail: "down".into() }.into()).code(), Code::Unavailable);
    }
}
