//! `--devices` lists: `cpu:0,cpu:1`, `cuda:0,1,2,3`, `cuda:0,cuda:1`,
//! `cuda:all`. The CPU backend has one device; `cpu:0,cpu:1` runs two
//! replicas on it (threads), which is how data parallelism is tested.

use std::fmt;

use crate::recipe::{BackendKind, Devices};

/// CPU or CUDA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    Cpu,
    Cuda,
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        })
    }
}

/// A parsed `--devices` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceList {
    pub kind: DeviceKind,
    /// Device indices in the order given (duplicates removed); `None`:
    /// every visible device (`cuda:all`).
    pub indices: Option<Vec<usize>>,
}

#[derive(Debug, thiserror::Error)]
#[error("--devices {spec}: {why} (expected e.g. cpu:0,cpu:1, cuda:0,1,2,3 or cuda:all)")]
pub struct DeviceListError {
    spec: String,
    why: String,
}

impl DeviceList {
    pub fn parse(spec: &str) -> Result<Self, DeviceListError> {
        let invalid = |why: String| DeviceListError {
            spec: spec.to_string(),
            why,
        };
        let mut kind = None;
        let mut indices: Vec<usize> = Vec::new();
        let mut all = false;
        for item in spec.split(',').map(str::trim) {
            let (prefix, index) = match item.split_once(':') {
                Some((prefix, index)) => (Some(prefix), index),
                None if item.parse::<usize>().is_ok() => (None, item),
                None => (Some(item), "all"),
            };
            if let Some(prefix) = prefix {
                let this = match prefix {
                    "cuda" | "gpu" => DeviceKind::Cuda,
                    "cpu" => DeviceKind::Cpu,
                    other => return Err(invalid(format!("unknown device kind `{other}`"))),
                };
                if kind.is_some_and(|k| k != this) {
                    return Err(invalid("mixes CPU and CUDA devices".into()));
                }
                kind = Some(this);
            }
            match index {
                "all" | "" => all = true,
                index => {
                    let index = index
                        .parse::<usize>()
                        .map_err(|_| invalid(format!("`{item}` is not a device index")))?;
                    if !indices.contains(&index) {
                        indices.push(index);
                    }
                }
            }
        }
        let kind = kind.ok_or_else(|| invalid("no device kind (cuda: or cpu:)".into()))?;
        if all && !indices.is_empty() {
            return Err(invalid("`all` with device indices".into()));
        }
        Ok(DeviceList {
            kind,
            indices: (!all).then_some(indices),
        })
    }

    /// The indices, with `all` resolved against the number of visible devices.
    pub fn resolve(&self, visible: usize) -> Vec<usize> {
        match &self.indices {
            Some(indices) => indices.clone(),
            None => (0..visible).collect(),
        }
    }

    /// How errors name device `index`: `cpu:1`, `cuda:3`.
    pub fn name(&self, index: usize) -> String {
        format!("{}:{index}", self.kind)
    }
}

impl fmt::Display for DeviceList {
    /// The `--devices` spelling: `cuda:0,1`, `cuda:all`, `cpu:0,cpu:1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.indices {
            None => write!(f, "{}:all", self.kind),
            Some(indices) => {
                let names: Vec<String> = indices.iter().map(|&i| self.name(i)).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

impl DeviceList {
    /// The recipe's `devices` key on the kind of its `backend` key (`None`
    /// there: CUDA when built with it, else the CPU); `None` without a
    /// `devices` key. The CPU has one device, so `devices: all` on it is one.
    pub fn from_recipe(backend: Option<BackendKind>, devices: Option<&Devices>) -> Option<Self> {
        let kind = match backend {
            Some(BackendKind::Cuda) => DeviceKind::Cuda,
            Some(BackendKind::Cpu) => DeviceKind::Cpu,
            None if cfg!(feature = "cuda") => DeviceKind::Cuda,
            None => DeviceKind::Cpu,
        };
        let indices = match (devices?, kind) {
            (Devices::List(list), _) => {
                let mut unique = Vec::new();
                for &index in list {
                    if !unique.contains(&index) {
                        unique.push(index);
                    }
                }
                Some(unique)
            }
            (Devices::All, DeviceKind::Cuda) => None,
            (Devices::All, DeviceKind::Cpu) => Some(vec![0]),
        };
        Some(DeviceList { kind, indices })
    }

    /// The devices of backend `B` this list names, with their names: the
    /// CPU backend's one device once per entry (the replicas are threads
    /// sharing it), a GPU backend's device of each index (`all`: every
    /// visible one).
    pub fn devices<B: burn::tensor::backend::Backend>(&self) -> (Vec<B::Device>, Vec<String>) {
        use burn::prelude::DeviceOps as _;
        use burn::tensor::backend::DeviceId;
        use burn::tensor::backend::DeviceOps as _;
        let reference = B::Device::default();
        let type_id = reference.id().type_id;
        let indices = self.resolve(B::device_count(type_id));
        let devices = indices
            .iter()
            .map(|&index| match self.kind {
                DeviceKind::Cpu => reference.clone(),
                DeviceKind::Cuda => B::Device::from_id(DeviceId::new(type_id, index as u16)),
            })
            .collect();
        let names = indices.iter().map(|&index| self.name(index)).collect();
        (devices, names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_or_without_repeated_kinds() {
        let cpu = DeviceList::parse("cpu:0,cpu:1").unwrap();
        assert_eq!(cpu.kind, DeviceKind::Cpu);
        assert_eq!(cpu.indices, Some(vec![0, 1]));
        assert_eq!(
            DeviceList::parse("cuda:0,1,2,3").unwrap().indices,
            Some(vec![0, 1, 2, 3])
        );
        assert_eq!(
            DeviceList::parse("cuda:all").unwrap().resolve(4),
            [0, 1, 2, 3]
        );
        assert_eq!(DeviceList::parse("cuda").unwrap().indices, None);
        assert_eq!(cpu.name(1), "cpu:1");
        assert_eq!(cpu.to_string(), "cpu:0,cpu:1");
        assert_eq!(
            DeviceList::parse("cuda:all").unwrap().to_string(),
            "cuda:all"
        );
        for bad in ["cuda:0,cpu:1", "tpu:0", "cuda:x", "0,1", "cuda:all,1"] {
            assert!(DeviceList::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_recipe_keys_name_the_same_lists_as_the_flag() {
        let list = |backend, devices: Devices| {
            DeviceList::from_recipe(Some(backend), Some(&devices)).map(|l| l.to_string())
        };
        use BackendKind::{Cpu, Cuda};
        assert_eq!(
            list(Cuda, Devices::List(vec![0, 1, 1])).unwrap(),
            "cuda:0,cuda:1"
        );
        assert_eq!(list(Cuda, Devices::All).unwrap(), "cuda:all");
        assert_eq!(list(Cpu, Devices::List(vec![0, 1])).unwrap(), "cpu:0,cpu:1");
        assert_eq!(list(Cpu, Devices::All).unwrap(), "cpu:0");
        assert_eq!(DeviceList::from_recipe(Some(Cuda), None), None);
        let spec = list(Cuda, Devices::List(vec![2, 3])).unwrap();
        assert_eq!(DeviceList::parse(&spec).unwrap().indices, Some(vec![2, 3]));
    }
}
