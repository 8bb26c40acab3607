//! Why `emostream run` could not start or had to stop, classified by who must act, and the one
//! mapping from that class to the process's exit status.
//!
//! Lower layers keep their own small errors ([`crate::kafka::BrokerError`],
//! [`crate::cli::ConfigError`]); they become a [`RunError`] where the lifecycle meets them.
//! Supervisors branch on the exit status: a configuration error needs a person, a lost peer
//! or an unreachable broker may clear on a restart.

/// The exit statuses of `emostream run`, as README.md documents them.
pub mod exit {
    /// Stopped on request, after a clean drain.
    pub const OK: u8 = 0;
    /// An internal failure: a dataflow worker failed, a stop did not finish in time.
    pub const INTERNAL: u8 = 1;
    /// A flag, variable or file must be fixed (clap's own usage errors exit 2 as well).
    pub const CONFIG: u8 = 2;
    /// Another process of the deployment did not connect in time, or was lost.
    pub const PEER: u8 = 3;
    /// The Kafka brokers could not be reached or used.
    pub const BROKER: u8 = 4;
    /// The HTTP address could not be bound (in use, or not ours).
    pub const BIND: u8 = 5;
}

/// A failed start or run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag or file must be fixed.
    #[error(transparent)]
    Config(#[from] crate::cli::ConfigError),
    /// The Kafka brokers could not be reached or used.
    #[error(transparent)]
    Broker(#[from] crate::kafka::BrokerError),
    /// An address of this process (`--http`, its hostfile line) could not be bound.
    #[error("{0}")]
    Bind(String),
    /// Another process of the deployment is missing or was lost.
    #[error("{0}")]
    Peer(String),
    /// The dataflow failed, or did not stop in time.
    #[error("{0}")]
    Dataflow(String),
    /// Anything else (the runtime, a thread that could not start).
    #[error("{0}")]
    Internal(String),
}

impl RunError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => exit::CONFIG,
            RunError::Broker(_) => exit::BROKER,
            RunError::Bind(_) => exit::BIND,
            RunError::Peer(_) => exit::PEER,
            RunError::Dataflow(_) | RunError::Internal(_) => exit::INTERNAL,
        }
    }
}

impl From<dataflows::deployment::StartError> for RunError {
    fn from(e: dataflows::deployment::StartError) -> Self {
        use dataflows::deployment::StartError;
        match e {
            StartError::Peers(message) => RunError::Peer(message),
            StartError::Listen(message) => RunError::Bind(format!(
                "{message}; give this process a free address in the hostfile"
            )),
            StartError::Local(message) => RunError::Dataflow(message),
        }
    }
}

impl From<crate::system::Fault> for RunError {
    fn from(fault: crate::system::Fault) -> Self {
        use crate::system::Component;
        let message = fault.to_string();
        match fault.component {
            Component::Peers => RunError::Peer(message),
            Component::Broker => RunError::Broker(crate::kafka::BrokerError(message)),
            Component::Dataflow | Component::Worker | Component::WindowsProducer => {
                RunError::Dataflow(message)
            }
            Component::Task(_) => RunError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_has_its_own_status() {
        let errors = [
            RunError::Config(crate::cli::ConfigError("x".into())),
            RunError::Broker(crate::kafka::BrokerError("x".into())),
            RunError::Bind("x".into()),
            RunError::Peer("x".into()),
            RunError::Internal("x".into()),
        ];
        let codes: Vec<u8> = errors.iter().map(RunError::exit_code).collect();
        assert_eq!(
            codes,
            [
                exit::CONFIG,
                exit::BROKER,
                exit::BIND,
                exit::PEER,
                exit::INTERNAL
            ]
        );
    }
}
