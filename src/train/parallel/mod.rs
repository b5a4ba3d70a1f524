//! Data parallelism: one model replica per device, each on its own thread
//! (one process per node across nodes), every exchange through
//! burn-collective. The loop (`trainer.rs`) is the same on every replica
//! and meets the others only through its [`GradientExchange`]
//! ([`exchange`]): [`Replicated`] all-reduces the gradients, [`Sharded`]
//! (ZeRO-1) reduces each onto its owner. [`Replica`] is one replica's place
//! and its exchanges; [`launch`] starts the replicas of a stage and turns
//! their results into one.

pub mod devices;
pub mod exchange;
pub mod launch;
pub mod replica;
pub mod replicated;
pub mod rows;
pub mod sharded;
pub mod shards;

pub use devices::{DeviceKind, DeviceList};
pub use exchange::{GradientExchange, MicroBatch, OptimizerView, StepGradients, exchange_for};
pub use launch::{Cluster, NodeSetup, run_stage_parallel};
pub use replica::Replica;
pub use replicated::Replicated;
pub use rows::{Phase, Row};
pub use sharded::Sharded;
pub use shards::OptimizerShards;
