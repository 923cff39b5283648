//! kbg: blue/green replacement of Kubernetes worker pools.
//!
//! The library behind the `kbg` command: configuration ([`config`], [`settings`]), the
//! cluster client ([`client`], [`retry`], [`wait`]), state and locking ([`state`],
//! [`lock`]), pools and cordons ([`pool`], [`cordon`]), providers ([`providers`]),
//! Events ([`events`]), output ([`ui`]) and the commands ([`commands`]). The drain engine
//! ([`drain`], [`preflight`], [`plan`]) evicts pods without breaking PDBs. Masters are
//! upgraded in place ([`control_plane`]) under the version skew policy ([`skew`]).

pub mod cli;
pub mod client;
pub mod clock;
pub mod commands;
pub mod config;
pub mod control_plane;
pub mod cordon;
pub mod drain;
pub mod duration;
pub mod error;
pub mod events;
pub mod hand_over;
pub mod lock;
pub mod plan;
pub mod pool;
pub mod preflight;
pub mod providers;
pub mod retry;
pub mod selector;
pub mod settings;
pub mod skew;
pub mod state;
pub mod ui;
pub mod version;
pub mod wait;
pub mod workloads;
