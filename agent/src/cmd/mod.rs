//! The `gtc` commands, one module each, every one with its flags (`Args`,
//! whose doc comments are its help) and its `run`. `main.rs` declares the
//! commands and dispatches to these.

pub mod agent;
pub mod cp;
pub mod device;
pub mod exit;
pub mod get;
pub mod progress;
pub mod put;
pub mod status;
