//! Data parallelism: one model replica per device, each on its own thread
//! (one process per node across nodes), every exchange through
//! burn-collective. The loop (`trainer.rs`) is the same on every replica:
//! it asks its [`Replica`] which micro-batches of a step are its own and
//! exchanges status, metrics and gradients through it; [`launch`] starts
//! the replicas of a stage and turns their results into one.

pub mod devices;
pub mod launch;
pub mod replica;
pub mod shards;

pub use devices::{DeviceKind, DeviceList};
pub use launch::{Cluster, NodeSetup, run_stage_parallel};
pub use replica::Replica;
pub use shards::OptimizerShards;
