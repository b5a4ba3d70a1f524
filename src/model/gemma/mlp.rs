//! Gemma's gated MLP (GeGLU): `down(act(gate(x)) * up(x))`.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::gelu;
use burn::tensor::backend::Backend;

use super::Activation;
use super::linear::Linear;
use super::ops::GemmaBackend;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    #[module(skip)]
    activation: Activation,
}

impl<B: Backend> Mlp<B> {
    pub fn new(
        gate_proj: Linear<B>,
        up_proj: Linear<B>,
        down_proj: Linear<B>,
        activation: Activation,
    ) -> Self {
        Self {
            gate_proj,
            up_proj,
            down_proj,
            activation,
        }
    }
}

impl<B: GemmaBackend> Mlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = self.gate_proj.forward(x.clone());
        let up = self.up_proj.forward(x);
        let hidden = match self.activation {
            Activation::GeluExact => gelu(gate) * up,
            Activation::GeluTanh => B::gelu_tanh_gated(gate, up),
        };
        self.down_proj.forward(hidden)
    }
}
