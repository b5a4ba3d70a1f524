//! Which devices a plan is for, how many, and how much memory each has.
//!
//! `--devices` (or the recipe's `backend`/`devices` keys) names the data
//! parallel devices: `cuda:0,1,2`, `cuda:0,cuda:1`, `cpu:0,cpu:1`,
//! `cuda:all`. A dry run needs no GPU, so `cuda:all` cannot be counted: it
//! is taken as 8 (the handbook's machine) and the plan says so.

use serde::Serialize;

use crate::recipe::{BackendKind, Devices, StageConfig};

use super::error::PlanError;

/// Devices assumed for `cuda:all` when no GPU can be asked.
pub const ASSUMED_ALL_CUDA: usize = 8;
/// Memory of one GPU when not given: an 80 GB H100 (decimal GB, the
/// conservative reading of "80 GB").
pub const DEFAULT_CUDA_BYTES: u64 = 80_000_000_000;

/// CPU or CUDA: the kinds `--devices` names (parsed once, for training and plans alike).
pub use crate::train::parallel::devices::DeviceKind;
use crate::train::parallel::devices::DeviceList;

/// The devices of a plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceSet {
    pub kind: DeviceKind,
    pub count: usize,
    /// Memory of one device, when known.
    pub memory_bytes: Option<u64>,
    /// Where `memory_bytes` comes from.
    pub memory_source: String,
    pub notes: Vec<String>,
}

/// What the command line says about devices.
#[derive(Clone, Debug, Default)]
pub struct DeviceRequest {
    /// `--devices`.
    pub devices: Option<String>,
    /// `--backend`.
    pub backend: Option<String>,
    /// `--device-memory`, in bytes.
    pub memory_bytes: Option<u64>,
}

impl DeviceRequest {
    /// The devices `stage` would run on: `--devices`, else `--backend` and
    /// the recipe's `backend`/`devices`, else one CPU.
    pub fn resolve(&self, stage: &StageConfig) -> Result<DeviceSet, PlanError> {
        let mut notes = Vec::new();
        let (kind, count) = match &self.devices {
            Some(spec) => parse_devices(spec)?,
            None => (self.backend_kind(stage)?, recipe_count(stage)),
        };
        let count = match (kind, count) {
            (_, Some(n)) => n,
            (DeviceKind::Cpu, None) => 1,
            (DeviceKind::Cuda, None) => {
                notes.push(format!(
                    "every visible GPU: cannot count them without a GPU, assuming {ASSUMED_ALL_CUDA} (pass --devices cuda:0,1,... to be exact)"
                ));
                ASSUMED_ALL_CUDA
            }
        };
        let (memory_bytes, memory_source) = match (self.memory_bytes, kind) {
            (Some(bytes), _) => (Some(bytes), "--device-memory".to_string()),
            (None, DeviceKind::Cuda) => (
                Some(DEFAULT_CUDA_BYTES),
                "assumed: an 80 GB H100; --device-memory changes it".to_string(),
            ),
            (None, DeviceKind::Cpu) => match machine_ram() {
                Some(bytes) => (Some(bytes), "this machine's RAM, /proc/meminfo".into()),
                None => (None, "unknown (no /proc/meminfo)".into()),
            },
        };
        Ok(DeviceSet {
            kind,
            count,
            memory_bytes,
            memory_source,
            notes,
        })
    }

    fn backend_kind(&self, stage: &StageConfig) -> Result<DeviceKind, PlanError> {
        match self.backend.as_deref() {
            Some("cuda") => Ok(DeviceKind::Cuda),
            Some("flex" | "cpu" | "ndarray") => Ok(DeviceKind::Cpu),
            Some(other) => Err(PlanError::Devices(format!(
                "--backend {other}: expected flex (CPU) or cuda"
            ))),
            None => Ok(match stage.ext.backend {
                Some(BackendKind::Cuda) => DeviceKind::Cuda,
                // `None` means CUDA only when built with it and a GPU is present.
                Some(BackendKind::Cpu) | None => DeviceKind::Cpu,
            }),
        }
    }
}

fn recipe_count(stage: &StageConfig) -> Option<usize> {
    match &stage.ext.devices {
        Some(Devices::List(list)) => Some(distinct(list)),
        Some(Devices::All) | None => None,
    }
}

fn distinct(indices: &[usize]) -> usize {
    let mut sorted = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len()
}

/// `cuda:0,1` / `cuda:0,cuda:1` / `cpu:0,cpu:1` / `cuda:all` / `cuda` to
/// the kind and the count (`None`: all of them, uncounted; the CPU backend
/// has one device, so `cpu:all` is one).
pub fn parse_devices(spec: &str) -> Result<(DeviceKind, Option<usize>), PlanError> {
    let list = DeviceList::parse(spec).map_err(|error| PlanError::Devices(error.to_string()))?;
    let count = match (&list.indices, list.kind) {
        (Some(indices), _) => Some(indices.len()),
        (None, DeviceKind::Cuda) => None,
        (None, DeviceKind::Cpu) => Some(1),
    };
    Ok((list.kind, count))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn machine_ram() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// `80GB`, `80e9`, `141 GiB`, `85899345920` to bytes (`--device-memory`).
pub fn parse_bytes(text: &str) -> Result<u64, PlanError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|ch: char| ch.is_ascii_alphabetic() && ch != 'e' && ch != 'E')
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        other => {
            return Err(PlanError::Devices(format!(
                "--device-memory {text}: unknown unit `{other}` (B, GB, GiB, ...)"
            )));
        }
    };
    match number.trim().parse::<f64>() {
        Ok(value) if value > 0.0 && value.is_finite() => Ok((value * scale) as u64),
        _ => Err(PlanError::Devices(format!(
            "--device-memory {text}: expected a positive size such as 80GB"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_count_distinct_indices() {
        assert_eq!(
            parse_devices("cuda:0,1,2,3,4,5,6,7").unwrap(),
            (DeviceKind::Cuda, Some(8))
        );
        assert_eq!(
            parse_devices("cuda:0,cuda:1").unwrap(),
            (DeviceKind::Cuda, Some(2))
        );
        assert_eq!(
            parse_devices("cpu:0,cpu:1").unwrap(),
            (DeviceKind::Cpu, Some(2))
        );
        assert_eq!(parse_devices("cuda:all").unwrap(), (DeviceKind::Cuda, None));
        assert_eq!(parse_devices("cuda").unwrap(), (DeviceKind::Cuda, None));
        assert!(parse_devices("cuda:0,cpu:1").is_err());
        assert!(parse_devices("tpu:0").is_err());
        assert!(parse_devices("cuda:x").is_err());
    }

    #[test]
    fn sizes_take_decimal_and_binary_units() {
        assert_eq!(parse_bytes("80GB").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("80e9").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("1 GiB").unwrap(), 1 << 30);
        assert!(parse_bytes("80 parsecs").is_err());
        assert!(parse_bytes("-1GB").is_err());
    }
}
