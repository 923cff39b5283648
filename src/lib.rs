//! kbg: blue/green replacement of Kubernetes worker pools.

pub mod clock;
pub mod skew;
pub mod version;
