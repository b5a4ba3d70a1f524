//! Hugging Face checkpoints in and out: `config.json` + `model.safetensors`
//! (or shards with `model.safetensors.index.json`), so that what `align`
//! writes loads in transformers, vLLM and llama.cpp's converters unchanged.
//!
//! The module's parameter paths are the checkpoint's tensor names (see
//! `gemma/mod.rs`), so loading is a lookup by name with a shape check and
//! saving is a walk over the parameters; no name map, no transposes.
//! (burn-store's safetensors reader would need its PyTorch adapter only to
//! transpose `[out, in]` weights, which this model keeps in PyTorch layout;
//! reading the files directly lets every error name the file and tensor.)

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::tensor::Dtype as StDtype;

use super::gemma::{ActivationRule, ConfigError, Gemma, GemmaConfig, WeightSource};

/// Files copied next to a saved model so the folder is self-contained.
pub const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
];

#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{dir}: no model.safetensors or model.safetensors.index.json (a Hugging Face model folder is needed)"
    )]
    NoWeights { dir: PathBuf },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tensor {name} not found in {files}")]
    MissingTensor { name: String, files: String },
    #[error("{path}: tensor {name} has shape {found:?}, the config implies {expected:?}")]
    WrongShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{path}: tensor {name} has dtype {dtype}, expected F32, BF16 or F16")]
    UnsupportedDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{path}: unused tensors {names:?} (is this really a Gemma checkpoint?)")]
    UnusedTensors { path: PathBuf, names: Vec<String> },
}

fn file_error(path: &Path, message: impl ToString) -> HfError {
    HfError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Loads a Gemma from a Hugging Face folder, casting weights to `dtype`
/// (default: fp32).
pub fn load_gemma<B: Backend>(
    dir: &Path,
    dtype: DType,
    device: &B::Device,
) -> Result<Gemma<B>, HfError> {
    load_gemma_with_rule(dir, dtype, ActivationRule::Modern, device)
}

/// As [`load_gemma`], with the activation rule of a given transformers release.
pub fn load_gemma_with_rule<B: Backend>(
    dir: &Path,
    dtype: DType,
    rule: ActivationRule,
    device: &B::Device,
) -> Result<Gemma<B>, HfError> {
    let config = GemmaConfig::from_file_with_rule(&dir.join("config.json"), rule)?;
    let mut source = SafetensorsSource::<B>::open(dir, dtype, device.clone())?;
    let model = Gemma::from_source(config, &mut source)?;
    source.check_all_used()?;
    Ok(model)
}

/// One tensor's place in a mapped file.
struct Entry {
    file: usize,
    dtype: StDtype,
    shape: Vec<usize>,
    range: (usize, usize),
}

/// Reads tensors by name from one or several memory-mapped safetensors files.
pub struct SafetensorsSource<B: Backend> {
    files: Vec<(PathBuf, Mmap)>,
    entries: HashMap<String, Entry>,
    used: std::collections::HashSet<String>,
    dtype: DType,
    device: B::Device,
}

impl<B: Backend> SafetensorsSource<B> {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path, dtype: DType, device: B::Device) -> Result<Self, HfError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let paths = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_paths(&index)?
        } else {
            return Err(HfError::NoWeights {
                dir: dir.to_path_buf(),
            });
        };
        let mut source = Self {
            files: Vec::new(),
            entries: HashMap::new(),
            used: Default::default(),
            dtype,
            device,
        };
        for path in paths {
            source.add_file(path)?;
        }
        Ok(source)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<(), HfError> {
        let file = File::open(&path).map_err(|e| file_error(&path, e))?;
        // SAFETY: the file is opened read-only and not modified while mapped
        // (checkpoints are written to a temporary folder and renamed).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| file_error(&path, e))?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| file_error(&path, format!("not a safetensors file: {e:?}")))?;
        let start = 8 + header_len;
        let index = self.files.len();
        for (name, info) in metadata.tensors() {
            let (begin, end) = info.data_offsets;
            if start + end > map.len() {
                return Err(file_error(
                    &path,
                    format!(
                        "truncated: tensor {name} ends at byte {}, the file has {}",
                        start + end,
                        map.len()
                    ),
                ));
            }
            self.entries.insert(
                name,
                Entry {
                    file: index,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range: (start + begin, start + end),
                },
            );
        }
        self.files.push((path, map));
        Ok(())
    }

    /// Every tensor of the files was used: catches loading the wrong architecture.
    pub fn check_all_used(&self) -> Result<(), HfError> {
        let mut unused: Vec<String> = self
            .entries
            .keys()
            .filter(|name| !self.used.contains(*name))
            .cloned()
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        unused.sort();
        let path = self
            .files
            .first()
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        Err(HfError::UnusedTensors {
            path,
            names: unused,
        })
    }

    fn describe_files(&self) -> String {
        let names: Vec<String> = self
            .files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect();
        names.join(", ")
    }
}

fn shard_paths(index: &Path) -> Result<Vec<PathBuf>, HfError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| file_error(index, e))?;
    let parsed: Index = serde_json::from_str(&text).map_err(|e| file_error(index, e))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<&String> = parsed.weight_map.values().collect();
    files.sort();
    files.dedup();
    let paths: Vec<PathBuf> = files.into_iter().map(|f| dir.join(f)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
        return Err(file_error(
            missing,
            "shard listed in model.safetensors.index.json is missing",
        ));
    }
    Ok(paths)
}

impl<B: Backend> WeightSource<B> for SafetensorsSource<B> {
    type Error = HfError;

    fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<B, D>, HfError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| HfError::MissingTensor {
                name: name.to_string(),
                files: self.describe_files(),
            })?;
        let path = &self.files[entry.file].0;
        if entry.shape != shape {
            return Err(HfError::WrongShape {
                path: path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        let file_dtype = match entry.dtype {
            StDtype::F32 => DType::F32,
            StDtype::BF16 => DType::BF16,
            StDtype::F16 => DType::F16,
            other => {
                return Err(HfError::UnsupportedDtype {
                    path: path.clone(),
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let bytes = self.files[entry.file].1[entry.range.0..entry.range.1].to_vec();
        let data = TensorData::from_bytes_vec(bytes, shape, file_dtype).convert_dtype(self.dtype);
        self.used.insert(name.to_string());
        Ok(Tensor::from_data(data, (&self.device, self.dtype)))
    }

    fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }
}

/// The model's parameters as `(checkpoint name, data)`, in module order.
pub fn named_tensors<B: Backend>(model: &Gemma<B>) -> Vec<(String, TensorData)> {
    pending_tensors(model)
        .into_iter()
        .map(|(name, tensor)| (name, tensor.read()))
        .collect()
}

/// The model's parameters as `(checkpoint name, tensor)`, in module order,
/// each read from its device only when asked ([`PendingTensor`]).
pub fn pending_tensors<B: Backend>(model: &Gemma<B>) -> Vec<(String, PendingTensor<'static>)> {
    collect_parameters(model, true)
        .into_iter()
        .map(|p| (p.name, p.tensor.expect("collected with tensors")))
        .collect()
}

/// Each parameter's checkpoint name and its id in this process (optimizer
/// state is keyed by id in memory, by name on disk).
pub fn parameter_ids<B: Backend>(model: &Gemma<B>) -> Vec<(String, ParamId)> {
    collect_parameters(model, false)
        .into_iter()
        .map(|p| (p.name, p.id))
        .collect()
}

struct Parameter {
    name: String,
    id: ParamId,
    tensor: Option<PendingTensor<'static>>,
}

fn collect_parameters<B: Backend>(model: &Gemma<B>, with_tensors: bool) -> Vec<Parameter> {
    let mut collector = NameCollector {
        path: Vec::new(),
        with_tensors,
        parameters: Vec::new(),
    };
    model.visit(&mut collector);
    collector.parameters
}

/// Tracks the module path while visiting, so each parameter gets its full name.
struct NameCollector {
    path: Vec<String>,
    with_tensors: bool,
    parameters: Vec<Parameter>,
}

impl<B: Backend> ModuleVisitor<B> for NameCollector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.path.join(".");
        let name = if path.starts_with("lm_head") {
            path
        } else {
            format!("model.{path}")
        };
        let tensor = self
            .with_tensors
            .then(|| PendingTensor::on_device(param.val()));
        self.parameters.push(Parameter {
            name,
            id: param.id,
            tensor,
        });
    }
}

/// Writes `tensors` to one safetensors file with `metadata`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, TensorData)],
    metadata: HashMap<String, String>,
) -> Result<(), HfError> {
    let pending = tensors
        .iter()
        .map(|(name, data)| (name.clone(), PendingTensor::on_host(data)))
        .collect();
    write_pending(path, pending, metadata)
}

/// Writes `tensors` to one safetensors file with `metadata`, reading each
/// from its device only when the writer reaches it: the host holds one
/// tensor at a time, never the whole model (a 7B model's weights, moments
/// and masters are ~100 GB).
pub fn write_pending(
    path: &Path,
    tensors: Vec<(String, PendingTensor<'_>)>,
    metadata: HashMap<String, String>,
) -> Result<(), HfError> {
    safetensors::serialize_to_file(tensors, &Some(metadata), path)
        .map_err(|e| file_error(path, format!("{e:?}")))
}

/// A tensor of a safetensors file being written: its dtype and shape now,
/// its bytes when the writer asks for them (`safetensors::View::data`,
/// called one tensor at a time while writing).
pub struct PendingTensor<'a> {
    dtype: DType,
    shape: Vec<usize>,
    read: Box<dyn Fn() -> TensorData + 'a>,
}

impl<'a> PendingTensor<'a> {
    /// A tensor on its backend's device, read back when written.
    pub fn on_device<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> PendingTensor<'static> {
        PendingTensor {
            dtype: tensor.dtype(),
            shape: tensor.dims().to_vec(),
            read: Box::new(move || tensor.to_data()),
        }
    }

    /// Data already on the host.
    pub fn on_host(data: &'a TensorData) -> Self {
        PendingTensor {
            dtype: data.dtype,
            shape: data.shape.to_vec(),
            read: Box::new(move || data.clone()),
        }
    }

    /// The tensor's data, on the host.
    pub fn read(&self) -> TensorData {
        (self.read)()
    }
}

impl safetensors::View for PendingTensor<'_> {
    fn dtype(&self) -> StDtype {
        safetensors_dtype(self.dtype)
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(self.read().into_bytes().to_vec())
    }

    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// A safetensors file's metadata and tensors by name.
pub type SafetensorsContents = (HashMap<String, String>, HashMap<String, TensorData>);

/// Every tensor of one safetensors file (f32/bf16/f16) and its metadata;
/// a truncated or corrupt file is an error naming it.
pub fn read_safetensors(path: &Path) -> Result<SafetensorsContents, HfError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| file_error(path, format!("not a safetensors file: {e:?}")))?;
    let parsed = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| file_error(path, format!("truncated or corrupt: {e:?}")))?;
    let mut tensors = HashMap::new();
    for (name, view) in parsed.tensors() {
        let dtype = match view.dtype() {
            StDtype::F32 => DType::F32,
            StDtype::BF16 => DType::BF16,
            StDtype::F16 => DType::F16,
            other => return Err(file_error(path, format!("tensor {name}: dtype {other:?}"))),
        };
        let data = TensorData::from_bytes_vec(view.data().to_vec(), view.shape().to_vec(), dtype);
        tensors.insert(name, data);
    }
    Ok((metadata.metadata().clone().unwrap_or_default(), tensors))
}

/// Writes `config.json`, `model.safetensors` (metadata `format: pt`, which
/// transformers requires) and `generation_config.json` into `dir`, and copies
/// the tokenizer files from `tokenizer_dir` when given.
pub fn save_gemma<B: Backend>(
    model: &Gemma<B>,
    dir: &Path,
    tokenizer_dir: Option<&Path>,
) -> Result<(), HfError> {
    std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
    let tensors = pending_tensors(model);
    let dtype = tensors
        .first()
        .map_or(DType::F32, |(_, tensor)| tensor.dtype);
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_pending(&dir.join("model.safetensors"), tensors, metadata)?;

    let mut config = model.config().clone();
    config.torch_dtype = Some(torch_dtype_name(dtype).to_string());
    write_json(&dir.join("config.json"), &config.to_json())?;

    let generation = tokenizer_dir
        .map(|d| d.join("generation_config.json"))
        .filter(|p| p.is_file());
    match generation {
        Some(path) => copy(&path, &dir.join("generation_config.json"))?,
        None => write_json(
            &dir.join("generation_config.json"),
            &generation_config(model.config()),
        )?,
    }
    if let Some(source) = tokenizer_dir {
        for name in TOKENIZER_FILES {
            let path = source.join(name);
            if path.is_file() {
                copy(&path, &dir.join(name))?;
            }
        }
    }
    Ok(())
}

fn generation_config(config: &GemmaConfig) -> serde_json::Value {
    let mut value = serde_json::json!({ "_from_model_config": true });
    for (key, id) in [
        ("bos_token_id", config.bos_token_id),
        ("eos_token_id", config.eos_token_id),
        ("pad_token_id", config.pad_token_id),
    ] {
        if let Some(id) = id {
            value[key] = id.into();
        }
    }
    value
}

fn copy(from: &Path, to: &Path) -> Result<(), HfError> {
    if from == to {
        return Ok(());
    }
    std::fs::copy(from, to)
        .map_err(|e| file_error(from, format!("copying to {}: {e}", to.display())))?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), HfError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| file_error(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| file_error(path, e))
}

fn safetensors_dtype(dtype: DType) -> StDtype {
    match dtype {
        DType::BF16 => StDtype::BF16,
        DType::F16 => StDtype::F16,
        DType::F64 => StDtype::F64,
        _ => StDtype::F32,
    }
}

/// transformers' name for a dtype in `config.json`.
pub fn torch_dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// Parses transformers' dtype names (`torch_dtype` in configs and recipes).
pub fn parse_torch_dtype(name: &str) -> Option<DType> {
    match name {
        "float32" | "fp32" => Some(DType::F32),
        "bfloat16" | "bf16" => Some(DType::BF16),
        "float16" | "fp16" | "half" => Some(DType::F16),
        _ => None,
    }
}
