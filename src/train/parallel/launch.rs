//! Starting the replicas of a stage and making one result of theirs.
//!
//! Each local device gets a thread that registers with burn-collective
//! (peer id = global rank) and runs the whole stage as a replica: the same
//! data preparation, model loading and loop as on one device, so nothing
//! but the exchanges of [`Replica`] differs. Rank 0 alone logs, writes
//! checkpoints and saves the model.
//!
//! A replica that fails outside the exchanges (an error in a hook, a panic
//! while loading) resets the collective, which wakes the peers waiting in
//! an all-reduce with an error; the coordinating thread then waits at most
//! `stop_grace` for the others and reports the first failure that is not a
//! consequence of another.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use burn::tensor::backend::Backend;
use burn_collective::{
    AllReduceStrategy, CollectiveConfig, PeerId, finish_collective, register, reset_collective,
};

use super::replica::{Replica, panic_message};
use crate::recipe::StageConfig;
use crate::train::TrainBackend;
use crate::train::stage::{RunOptions, StageError, StageOutcome, run_stage_replica};

/// burn-collective keeps one local server per backend per process: one
/// data-parallel run at a time.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// burn-collective's global mode: this process is one node of several.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSetup {
    pub num_nodes: u32,
    /// 0..num_nodes; with the same number of devices on every node, the
    /// global rank of local device `i` is `node_rank x devices + i`.
    pub node_rank: usize,
    /// The orchestrator (`align orchestrator --port P`), `ws://HOST:P`.
    pub global_address: String,
    /// This node as the others reach it, `ws://HOST:PORT`.
    pub node_address: String,
    /// Port of this node's tensor data service (the port of `node_address`).
    pub data_service_port: u16,
}

/// The devices of a run on this node, and the other nodes if any.
#[derive(Clone, Debug)]
pub struct Cluster<D> {
    /// One replica per device (the CPU backend's one device may repeat).
    pub devices: Vec<D>,
    /// How errors name each local device (`cpu:1`, `cuda:3`).
    pub names: Vec<String>,
    pub nodes: Option<NodeSetup>,
    /// Test hook: `(global rank, optimizer step)` at which that replica
    /// panics mid-step.
    pub fail: Option<(usize, usize)>,
    /// How long the others may take to stop after a replica failed.
    pub stop_grace: Duration,
}

impl<D: Clone> Cluster<D> {
    /// One device, no peers.
    pub fn single(device: D) -> Self {
        Self::local(vec![device], vec!["the device".into()])
    }

    /// Several devices of this process.
    pub fn local(devices: Vec<D>, names: Vec<String>) -> Self {
        Self {
            devices,
            names,
            nodes: None,
            fail: None,
            stop_grace: Duration::from_secs(120),
        }
    }

    /// Replicas over all nodes.
    pub fn world(&self) -> usize {
        self.devices.len() * self.nodes.as_ref().map_or(1, |n| n.num_nodes as usize)
    }

    fn first_rank(&self) -> usize {
        self.nodes.as_ref().map_or(0, |n| n.node_rank) * self.devices.len()
    }

    /// Every global rank's name: `node N` prefixed across nodes.
    fn global_names(&self) -> Vec<String> {
        match &self.nodes {
            None => self.names.clone(),
            Some(nodes) => (0..nodes.num_nodes)
                .flat_map(|node| {
                    self.names
                        .iter()
                        .map(move |name| format!("node {node} {name}"))
                })
                .collect(),
        }
    }

    fn collective_config(&self) -> Result<CollectiveConfig, StageError> {
        let config = CollectiveConfig::default().with_num_devices(self.devices.len());
        let Some(nodes) = &self.nodes else {
            return Ok(config);
        };
        let address = |text: &str| {
            text.parse()
                .map_err(|e| StageError::Parallel(format!("address {text}: {e}")))
        };
        // Ring (the default) cannot split tensors smaller than the node
        // count: the one-number status exchange and small gradients.
        Ok(config
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2))
            .with_num_nodes(nodes.num_nodes)
            .with_global_address(address(&nodes.global_address)?)
            .with_node_address(address(&nodes.node_address)?)
            .with_data_service_port(nodes.data_service_port))
    }
}

/// Runs `stage` with one replica per device of `cluster`; the outcome is
/// that of this node's first replica (rank 0's on the first node).
pub fn run_stage_parallel<A: TrainBackend>(
    stage: &StageConfig,
    options: &RunOptions,
    cluster: &Cluster<A::Device>,
) -> Result<StageOutcome, StageError> {
    let stage = stage.clone();
    let options = options.clone();
    run_replicas::<A::InnerBackend, _>(cluster, move |mut replica, device| {
        replica.shard_optimizer = stage.ext.shard_optimizer_state;
        let mut options = options.clone();
        options.quiet |= !replica.is_primary();
        run_stage_replica::<A>(&stage, &options, &device, &replica)
    })
}

type Report<T> = (usize, Result<T, StageError>);

/// Starts one thread per local device running `job`, and waits for them.
pub fn run_replicas<B: Backend, T: Send + 'static>(
    cluster: &Cluster<B::Device>,
    job: impl Fn(Replica, B::Device) -> Result<T, StageError> + Send + Sync + 'static,
) -> Result<T, StageError> {
    let _one_run = ONE_RUN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let config = cluster.collective_config()?;
    let names = Arc::new(cluster.global_names());
    let job = Arc::new(job);
    let (sender, receiver) = mpsc::channel::<Report<T>>();
    let local = cluster.devices.len();
    let mut threads = Vec::with_capacity(local);
    for (index, device) in cluster.devices.iter().enumerate() {
        let rank = cluster.first_rank() + index;
        let replica = Replica {
            rank,
            world: cluster.world(),
            names: names.clone(),
            fail_at_step: cluster.fail.filter(|&(r, _)| r == rank).map(|(_, s)| s),
            shard_optimizer: false,
        };
        let (device, config, job, sender) =
            (device.clone(), config.clone(), job.clone(), sender.clone());
        let thread = std::thread::Builder::new()
            .name(format!("replica-{rank}"))
            .stack_size(64 << 20)
            .spawn(move || {
                let result = run_replica::<B, T>(replica, device, config, job.as_ref());
                let _ = sender.send((index, result));
            })
            .map_err(|e| StageError::Parallel(format!("starting a replica thread: {e}")))?;
        threads.push(thread);
    }
    drop(sender);
    let mut results: Vec<Option<Result<T, StageError>>> = (0..local).map(|_| None).collect();
    let mut deadline: Option<Instant> = None;
    let mut received = 0;
    while received < local {
        let report = match deadline {
            None => receiver.recv().ok(),
            Some(at) => receiver
                .recv_timeout(at.saturating_duration_since(Instant::now()))
                .ok(),
        };
        let Some((index, result)) = report else {
            break;
        };
        if result.is_err() && deadline.is_none() {
            deadline = Some(Instant::now() + cluster.stop_grace);
        }
        results[index] = Some(result);
        received += 1;
    }
    if received == local {
        for thread in threads {
            let _ = thread.join();
        }
    }
    let missing: Vec<&str> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .map(|(i, _)| cluster.names[i].as_str())
        .collect();
    let missing = missing.join(", ");
    let mut errors = Vec::new();
    let mut first = None;
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Some(Ok(outcome)) if first.is_none() && index == 0 => first = Some(outcome),
            Some(Ok(_)) | None => {}
            Some(Err(error)) => errors.push(error),
        }
    }
    if let Some(root) = root_cause(errors) {
        if missing.is_empty() {
            return Err(root);
        }
        return Err(StageError::Parallel(format!(
            "{root}; {missing} did not stop within {}s and were left running",
            cluster.stop_grace.as_secs()
        )));
    }
    first.ok_or_else(|| {
        StageError::Parallel(format!("{missing}: the replica ended without a result"))
    })
}

/// One replica's thread: register, run, then leave the collective (or
/// reset it on failure, which wakes the peers waiting in an exchange).
fn run_replica<B: Backend, T>(
    replica: Replica,
    device: B::Device,
    config: CollectiveConfig,
    job: &(dyn Fn(Replica, B::Device) -> Result<T, StageError> + Send + Sync),
) -> Result<T, StageError> {
    let peer = PeerId(replica.rank as u32);
    let name = replica.name(replica.rank).to_string();
    if let Err(error) = register::<B>(peer, device.clone(), config) {
        reset_collective::<B>();
        return Err(StageError::Parallel(format!(
            "device {name}: registering with burn-collective: {error:?}"
        )));
    }
    let result =
        catch_unwind(AssertUnwindSafe(|| job(replica, device))).unwrap_or_else(|payload| {
            Err(StageError::Parallel(format!(
                "device {name} {}",
                panic_message(payload.as_ref())
            )))
        });
    match &result {
        Ok(_) => {
            let _ = finish_collective::<B>(peer);
        }
        Err(_) => reset_collective::<B>(),
    }
    result.map_err(|error| match error {
        error @ (StageError::Train(_) | StageError::Parallel(_)) => error,
        other => StageError::Device {
            device: name,
            error: Box::new(other),
        },
    })
}

/// The first error that is not only a consequence of another replica's.
fn root_cause(errors: Vec<StageError>) -> Option<StageError> {
    let index = errors.iter().position(|e| !e.is_secondary()).unwrap_or(0);
    errors.into_iter().nth(index)
}
