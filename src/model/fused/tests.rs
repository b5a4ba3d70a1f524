//! The fused token log-probs against the composed log-softmax and gather
//! (the path every other backend takes).

use burn::tensor::{Tensor, TensorData};

use super::*;
use crate::backend::testing::{assert_close, floats, leaf, values};

#[test]
fn token_logps_match_the_composed_log_softmax() {
    let (rows, vocab) = (5, 37);
    let targets: Vec<usize> = (0..rows).map(|r| r * 7 % vocab).collect();
    let ids: Vec<i64> = targets.iter().map(|&t| t as i64).collect();
    let run = |fused: bool| {
        let logits = leaf([rows, vocab], 1);
        let picked = if fused {
            token_logps(&logits, &targets).expect("Flex fuses").0
        } else {
            let ids = Tensor::<CpuTrain, 2, burn::tensor::Int>::from_data(
                TensorData::new(ids.clone(), [rows, 1]),
                &Default::default(),
            );
            crate::model::ops::log_softmax(logits.clone(), 1)
                .gather(1, ids)
                .reshape([rows])
        };
        let weights = Tensor::<CpuTrain, 1>::from_data(
            TensorData::new(values(rows, 9), [rows]),
            &Default::default(),
        );
        let grads = (picked.clone() * weights).sum().backward();
        (
            floats(picked),
            floats(logits.grad(&grads).expect("a gradient")),
        )
    };
    let ((fused, fused_grad), (composed, composed_grad)) = (run(true), run(false));
    assert_close(fused, composed, 1e-5, "log-probs");
    assert_close(fused_grad, composed_grad, 1e-5, "gradient of the logits");
    let logits = leaf([rows, vocab], 1);
    let train = floats(token_logps(&logits, &targets).expect("Flex fuses").0);
    let inner = floats(
        token_logps(&logits.inner(), &targets)
            .expect("Flex fuses")
            .0,
    );
    assert_eq!(train, inner, "policy and reference bits");
}
