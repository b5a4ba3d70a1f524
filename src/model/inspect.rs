//! `align inspect`: a quick look at a Hugging Face Gemma folder — its shape,
//! parameter count, and the language-model loss of one forward pass.

use std::fmt;
use std::path::Path;

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::gemma::ForwardInput;
use super::hf::{HfError, load_gemma};
use crate::backend::{Cpu, cpu_device};

const SAMPLE_TEXT: &str = "<bos><|im_start|>user\nHow much is 2 plus 3?<|im_end|>\n<|im_start|>assistant\n2 plus 3 equals 5.<|im_end|>\n<eos>";

/// What `align inspect` prints.
#[derive(Debug)]
pub struct InspectReport {
    pub layers: usize,
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub parameters: usize,
    pub tokens: usize,
    /// Mean next-token negative log-likelihood over the text.
    pub loss: f64,
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "gemma: {} layers, hidden {}, {} heads ({} kv), head_dim {}, vocab {}",
            self.layers,
            self.hidden_size,
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.vocab_size
        )?;
        writeln!(f, "parameters: {}", self.parameters)?;
        write!(f, "loss over {} tokens: {:.6}", self.tokens, self.loss)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Model(#[from] HfError),
    #[error("{path}: {message}")]
    Tokenizer { path: String, message: String },
    #[error("the text has fewer than two tokens: nothing to predict")]
    TooShort,
}

/// Loads `dir` on the CPU in fp32 and scores `text` (default: a short chat).
pub fn inspect(dir: &Path, text: Option<&str>) -> Result<InspectReport, InspectError> {
    let device = cpu_device();
    let model = load_gemma::<Cpu>(dir, DType::F32, &device)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer =
        tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|e| InspectError::Tokenizer {
            path: tokenizer_path.display().to_string(),
            message: e.to_string(),
        })?;
    let encoding = tokenizer
        .encode(text.unwrap_or(SAMPLE_TEXT), false)
        .map_err(|e| InspectError::Tokenizer {
            path: tokenizer_path.display().to_string(),
            message: e.to_string(),
        })?;
    let ids: Vec<i64> = encoding.get_ids().iter().map(|&id| id as i64).collect();
    let n = ids.len();
    if n < 2 {
        return Err(InspectError::TooShort);
    }
    let input = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(ids.clone(), [1, n]), &device);
    let logits = model.forward(ForwardInput::new(input, None));
    let logps = log_softmax(logits.narrow(1, 0, n - 1), 2);
    let targets = Tensor::<Cpu, 3, Int>::from_data(
        TensorData::new(ids[1..].to_vec(), [1, n - 1, 1]),
        &device,
    );
    let picked = logps
        .gather(2, targets)
        .into_data()
        .to_vec::<f32>()
        .unwrap_or_default();
    let loss = -picked.iter().map(|&v| v as f64).sum::<f64>() / (n - 1) as f64;
    let config = model.config();
    Ok(InspectReport {
        layers: config.num_hidden_layers,
        hidden_size: config.hidden_size,
        heads: config.num_attention_heads,
        kv_heads: config.num_key_value_heads,
        head_dim: config.head_dim,
        vocab_size: config.vocab_size,
        parameters: config.num_parameters(),
        tokens: n,
        loss,
    })
}
