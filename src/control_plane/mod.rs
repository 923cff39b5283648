//! Masters, upgraded in place: the one place kbg does not go blue/green.
//!
//! Workers are replaced pool by pool; the control plane is upgraded where it runs, as
//! kubeadm, Charmed Kubernetes and StarlingX do it, one minor version at a time and one
//! master at a time, with the kubelets after every API server (see the seeds summarised
//! in DESIGN.md, "The three commands" and "Version skew"). The parts point one way:
//!
//! - [`facts`] reads the cluster: each master's static pods (their images carry the
//!   version) and kubelet, `/version`, the kubelets of each pool;
//! - [`planner`] is pure: the hops, the pools to replace before a hop, the masters in
//!   order (`kbg plan`);
//! - [`stage`] is StarlingX's persisted state machine (`upgrading-second-master-failed`);
//! - [`methods`] renders and runs the scripts of the three methods (kubeadm, static-pod
//!   manifests, Juju charm) through a provider;
//! - [`upgrade`] drives it all (`kbg upgrade-control-plane`).

pub mod facts;
pub mod methods;
pub mod planner;
pub mod stage;
pub mod upgrade;

pub use facts::{Facts, MasterFacts, PoolFacts};
pub use methods::{ScriptSettings, ScriptStep, Upgrader};
pub use planner::{Plan, plan};
pub use stage::{Stage, UpgradeState};
