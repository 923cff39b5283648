//! kbg: blue/green replacement of Kubernetes worker pools.

pub mod clock;
pub mod drain;
pub mod plan;
pub mod preflight;
pub mod skew;
pub mod version;
