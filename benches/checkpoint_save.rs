//! Peak host memory of writing a model's weights: streamed (each tensor
//! read back from its device when the safetensors writer reaches it, as
//! `save_gemma` and checkpoints do) against every tensor gathered on the
//! host first. One mode per process:
//!
//! ```sh
//! ALIGN_SAVE_MODE=streamed cargo bench --profile dev --bench checkpoint_save
//! ALIGN_SAVE_MODE=gathered cargo bench --profile dev --bench checkpoint_save
//! ```
//!
//! Prints one JSON line: the model's bytes, resident memory before the
//! save and the peak during it (`VmHWM`, reset just before through
//! `/proc/self/clear_refs`), so `peak_increase_bytes` is what the save
//! added. Linux only. The model is a random fp32 Gemma of about 670 MB.

use std::collections::HashMap;

use align::backend::{Cpu, cpu_device};
use align::model::gemma::{Gemma, GemmaConfig, RandomInit};
use align::model::hf::{named_tensors, pending_tensors, save_gemma, write_safetensors};
use burn::tensor::DType;
use safetensors::View;

const CONFIG: &str = r#"{
  "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
  "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 8,
  "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 128,
  "vocab_size": 32000, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
  "rope_theta": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
  "tie_word_embeddings": true, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
}"#;

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kb * 1024
}

fn main() {
    let mode = std::env::var("ALIGN_SAVE_MODE").unwrap_or_else(|_| "streamed".into());
    let config = GemmaConfig::from_json(CONFIG).expect("bench config");
    let mut init = RandomInit::<Cpu> {
        std: 0.02,
        dtype: DType::F32,
        device: cpu_device(),
    };
    let Ok(model) = Gemma::from_source(config, &mut init);
    let model_bytes: u64 = pending_tensors(&model)
        .iter()
        .map(|(_, tensor)| tensor.data_len() as u64)
        .sum();
    let dir = tempfile::tempdir().expect("temporary folder");
    // Reset the peak to the current resident size (Linux >= 4.0).
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM");
    let before = status_bytes("VmRSS:");
    match mode.as_str() {
        "streamed" => save_gemma(&model, dir.path(), None).expect("save"),
        "gathered" => {
            let tensors = named_tensors(&model);
            let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
            write_safetensors(&dir.path().join("model.safetensors"), &tensors, metadata)
                .expect("save")
        }
        other => panic!("ALIGN_SAVE_MODE={other}: expected streamed or gathered"),
    }
    let peak = status_bytes("VmHWM:");
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "model_bytes": model_bytes,
            "rss_before_bytes": before,
            "peak_bytes": peak,
            "peak_increase_bytes": peak.saturating_sub(before),
        })
    );
}
