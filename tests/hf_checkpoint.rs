//! Hugging Face checkpoints in and out: a saved model reloads bit-identically
//! and has the input file's tensor names, shapes and dtypes; bad folders give
//! one-line errors naming the file and tensor.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use align::backend::{Cpu, cpu_device};
use align::model::gemma::GemmaConfig;
use align::model::hf::{load_gemma, named_tensors, save_gemma};
use burn::tensor::DType;
use common::fixture;
use safetensors::SafeTensors;

/// name -> (dtype, shape, bytes) of a safetensors file, plus its metadata.
type Header = (
    BTreeMap<String, (String, Vec<usize>, Vec<u8>)>,
    Option<std::collections::HashMap<String, String>>,
);

fn read_safetensors(path: &Path) -> Header {
    let bytes = std::fs::read(path).unwrap();
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let map = tensors
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                (
                    format!("{:?}", view.dtype()),
                    view.shape().to_vec(),
                    view.data().to_vec(),
                ),
            )
        })
        .collect();
    (map, metadata.metadata().clone())
}

#[test]
fn save_then_reload_is_bit_identical_and_keeps_the_hf_layout() {
    let source = fixture("tiny-gemma/model");
    let device = cpu_device();
    let model = load_gemma::<Cpu>(&source, DType::F32, &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_gemma(&model, out.path(), Some(&source)).unwrap();

    // Same tensor names, shapes ([out, in] for linear weights), dtypes and bytes as the input file.
    let (original, _) = read_safetensors(&source.join("model.safetensors"));
    let (saved, metadata) = read_safetensors(&out.path().join("model.safetensors"));
    assert_eq!(
        original.keys().collect::<Vec<_>>(),
        saved.keys().collect::<Vec<_>>()
    );
    for (name, (dtype, shape, bytes)) in &original {
        let (saved_dtype, saved_shape, saved_bytes) = &saved[name];
        assert_eq!((dtype, shape), (saved_dtype, saved_shape), "{name}");
        assert!(bytes == saved_bytes, "{name}: bytes differ");
    }
    assert!(
        !saved.contains_key("lm_head.weight"),
        "tied embeddings: no lm_head.weight"
    );
    assert_eq!(metadata.unwrap()["format"], "pt");

    // Reloading gives the same tensors bit for bit.
    let reloaded = load_gemma::<Cpu>(out.path(), DType::F32, &device).unwrap();
    for ((name_a, a), (name_b, b)) in named_tensors(&model)
        .iter()
        .zip(named_tensors(&reloaded).iter())
    {
        assert_eq!(name_a, name_b);
        assert_eq!(a.as_bytes(), b.as_bytes(), "{name_a}");
    }

    // config.json carries the same architecture; tokenizer files come along.
    let read_config = |dir: &Path| GemmaConfig::from_file(&dir.join("config.json")).unwrap();
    let (before, after) = (read_config(&source), read_config(out.path()));
    assert_eq!(
        (
            before.vocab_size,
            before.hidden_size,
            before.intermediate_size,
            before.num_hidden_layers
        ),
        (
            after.vocab_size,
            after.hidden_size,
            after.intermediate_size,
            after.num_hidden_layers
        )
    );
    assert_eq!(
        (
            before.num_attention_heads,
            before.num_key_value_heads,
            before.head_dim,
            before.activation
        ),
        (
            after.num_attention_heads,
            after.num_key_value_heads,
            after.head_dim,
            after.activation
        )
    );
    assert_eq!(
        (before.rope_theta, before.rms_norm_eps),
        (after.rope_theta, after.rms_norm_eps)
    );
    assert_eq!(before.tie_word_embeddings, after.tie_word_embeddings);
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ] {
        assert_eq!(
            std::fs::read(source.join(file)).unwrap(),
            std::fs::read(out.path().join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn bf16_checkpoints_load_cast_to_the_compute_dtype() {
    let source = fixture("tiny-gemma/model");
    let device = cpu_device();
    let model = load_gemma::<Cpu>(&source, DType::BF16, &device).unwrap();
    let out = tempfile::tempdir().unwrap();
    save_gemma(&model, out.path(), Some(&source)).unwrap();
    let (saved, _) = read_safetensors(&out.path().join("model.safetensors"));
    assert!(saved.values().all(|(dtype, _, _)| dtype == "BF16"));
    let config = std::fs::read_to_string(out.path().join("config.json")).unwrap();
    assert!(config.contains("\"torch_dtype\": \"bfloat16\""), "{config}");

    // Loading the bf16 file in fp32 gives exactly the bf16 values widened.
    let widened = load_gemma::<Cpu>(out.path(), DType::F32, &device).unwrap();
    let original = load_gemma::<Cpu>(&source, DType::F32, &device).unwrap();
    for ((name, a), (_, b)) in named_tensors(&widened)
        .iter()
        .zip(named_tensors(&original).iter())
    {
        let a = a.to_vec::<f32>().unwrap();
        let b = b.to_vec::<f32>().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(*x, half::bf16::from_f32(*y).to_f32(), "{name}");
        }
    }
}

/// A copy of the fixture model folder, to break in one way.
fn broken_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("tiny-gemma/model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn load_error(dir: &Path) -> String {
    load_gemma::<Cpu>(dir, DType::F32, &cpu_device())
        .unwrap_err()
        .to_string()
}

/// Rewrites model.safetensors through `edit` (name -> (shape, f32 values)).
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, (Vec<usize>, Vec<u8>)>)) {
    let path = dir.join("model.safetensors");
    let (tensors, _) = read_safetensors(&path);
    let mut map: BTreeMap<String, (Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (_, shape, bytes))| (name, (shape, bytes)))
        .collect();
    edit(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(name, (shape, bytes))| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, &None, &path).unwrap();
}

#[test]
fn missing_config_names_the_file() {
    let dir = broken_copy();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("config.json") && err.contains("cannot read"),
        "{err}"
    );
}

#[test]
fn missing_weights_names_the_folder() {
    let dir = broken_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = load_error(dir.path());
    assert!(err.contains("no model.safetensors"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = broken_copy();
    rewrite_weights(dir.path(), |map| {
        map.remove("model.layers.1.mlp.up_proj.weight");
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("tensor model.layers.1.mlp.up_proj.weight not found"),
        "{err}"
    );
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let dir = broken_copy();
    rewrite_weights(dir.path(), |map| {
        let entry = map
            .get_mut("model.layers.0.self_attn.k_proj.weight")
            .unwrap();
        entry.0 = vec![64, 24]; // transposed
    });
    let err = load_error(dir.path());
    assert!(
        err.contains("model.layers.0.self_attn.k_proj.weight"),
        "{err}"
    );
    assert!(
        err.contains("[64, 24]") && err.contains("[24, 64]"),
        "{err}"
    );
}

#[test]
fn unsupported_model_type_is_refused() {
    let dir = broken_copy();
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"gemma\"", "\"llama\"");
    std::fs::write(&path, text).unwrap();
    let err = load_error(dir.path());
    assert!(
        err.contains("unsupported model_type \"llama\"") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn sharded_checkpoints_load() {
    let dir = broken_copy();
    let (tensors, _) = read_safetensors(&dir.path().join("model.safetensors"));
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let mut weight_map = serde_json::Map::new();
    let names: Vec<&String> = tensors.keys().collect();
    for (shard, chunk) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", shard + 1);
        let views: Vec<(String, safetensors::tensor::TensorView)> = chunk
            .iter()
            .map(|name| {
                let (_, shape, bytes) = &tensors[*name];
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    bytes,
                )
                .unwrap();
                ((*name).clone(), view)
            })
            .collect();
        safetensors::serialize_to_file(views, &None, &dir.path().join(&file)).unwrap();
        for name in chunk {
            weight_map.insert((*name).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let sharded = load_gemma::<Cpu>(dir.path(), DType::F32, &cpu_device()).unwrap();
    let whole = load_gemma::<Cpu>(&fixture("tiny-gemma/model"), DType::F32, &cpu_device()).unwrap();
    for ((name, a), (_, b)) in named_tensors(&sharded)
        .iter()
        .zip(named_tensors(&whole).iter())
    {
        assert_eq!(a.as_bytes(), b.as_bytes(), "{name}");
    }
}
