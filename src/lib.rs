//! The `emostream` service: the command line over the dataflows in `emostream-dataflows`.
//!
//! `main.rs` only parses arguments and reports errors; each command lives in its own module so
//! integration tests can run it in-process.

pub mod cli;
pub mod replay_cmd;
