#!/usr/bin/env python3
"""Reference numbers for `src/train/dpo/`, computed by TRL's own DPO loss code.

Runs `trl.DPOTrainer._compute_loss` (trl 1.16.0) unchanged on a stub trainer and a
stub model, so that every loss formula, weighting and reward definition is TRL's,
and prints the inputs and results as JSON: `tests/fixtures/trl-dpo-losses/cases.json`,
which the tests of `src/train/dpo/` read.

How the stubs feed exact numbers through TRL's code:

* `precompute_ref_logps = True`, so the reference log-probs come straight from
  `inputs["ref_chosen_logps"]` / `inputs["ref_rejected_logps"]` (no ref model).
* The stub model returns `log_probs` that are zero everywhere except at the first
  completion position of each row, which holds the whole summed log-prob of that
  completion. TRL sums over the sequence, so `chosen_logps` is exactly the input,
  and the `sft` term's per-token mean is `-sum(chosen logps) / chosen tokens`.
* Each row of `completion_mask` is one prompt token followed by `n` completion
  tokens, so both the unshifted mask (used by `ipo`, `sigmoid_norm`) and the shifted
  one (used by `sft`) count `n` tokens.
* `accelerator.gather` records its argument: TRL's first two calls gather the
  per-pair chosen and rejected rewards, which are printed as well.
* `log_probs` is a leaf with `requires_grad`, so `loss.backward()` gives TRL's
  gradient of the loss with respect to the policy log-probs of each completion.

Usage (PyPI only; torch from PyPI is large):
    python3 -m venv /opt/trl-venv
    /opt/trl-venv/bin/pip install 'torch==2.*' trl==1.16.0 transformers
    /opt/trl-venv/bin/python scripts/trl_loss_values.py > tests/fixtures/trl-dpo-losses/cases.json
"""

import json
import re
import sys
from collections import defaultdict
from types import SimpleNamespace

import torch
import trl
from trl import DPOTrainer

# Fixed inputs: summed completion log-probs and completion token counts per pair.
INPUTS = [
    dict(
        policy_chosen=[-12.5, -30.25, -7.75, -45.0],
        policy_rejected=[-14.0, -28.5, -11.25, -44.0],
        ref_chosen=[-13.0, -29.0, -9.5, -46.5],
        ref_rejected=[-13.5, -29.75, -10.0, -43.25],
        chosen_tokens=[5, 12, 3, 20],
        rejected_tokens=[6, 10, 4, 18],
    ),
    dict(
        policy_chosen=[-3.125, -60.5, -21.0],
        policy_rejected=[-9.5, -58.0, -20.25],
        ref_chosen=[-4.0, -61.75, -19.5],
        ref_rejected=[-8.0, -57.5, -22.0],
        chosen_tokens=[2, 31, 9],
        rejected_tokens=[7, 25, 1],
    ),
]

# (loss types, loss weights, beta, label smoothing, discopop tau, inputs index)
CASES = [
    (["sigmoid"], None, 0.1, 0.0, 0.05, 0),
    (["sigmoid"], None, 0.5, 0.0, 0.05, 1),
    # TRL 1.16's sigmoid term ignores label smoothing: same loss as above.
    (["sigmoid"], None, 0.5, 0.3, 0.05, 1),
    (["robust"], None, 0.1, 0.0, 0.05, 0),
    (["robust"], None, 0.1, 0.2, 0.05, 0),
    (["robust"], None, 0.5, 0.1, 0.05, 1),
    (["hinge"], None, 0.1, 0.0, 0.05, 0),
    (["hinge"], None, 0.5, 0.0, 0.05, 1),
    (["ipo"], None, 0.1, 0.0, 0.05, 0),
    (["ipo"], None, 0.5, 0.0, 0.05, 1),
    (["exo_pair"], None, 0.1, 1e-3, 0.05, 0),
    (["exo_pair"], None, 0.5, 0.2, 0.05, 1),
    (["nca_pair"], None, 0.1, 0.0, 0.05, 0),
    (["nca_pair"], None, 0.5, 0.0, 0.05, 1),
    (["sppo_hard"], None, 0.1, 0.0, 0.05, 0),
    (["sppo_hard"], None, 0.5, 0.0, 0.05, 1),
    (["bco_pair"], None, 0.1, 0.0, 0.05, 0),
    (["bco_pair"], None, 0.5, 0.0, 0.05, 1),
    (["aot"], None, 0.1, 0.0, 0.05, 0),
    (["aot"], None, 0.5, 0.1, 0.05, 1),
    (["aot_unpaired"], None, 0.1, 0.0, 0.05, 0),
    (["aot_unpaired"], None, 0.5, 0.1, 0.05, 1),
    (["apo_zero"], None, 0.1, 0.0, 0.05, 0),
    (["apo_zero"], None, 0.5, 0.0, 0.05, 1),
    (["apo_down"], None, 0.1, 0.0, 0.05, 0),
    (["apo_down"], None, 0.5, 0.0, 0.05, 1),
    (["discopop"], None, 0.1, 0.0, 0.05, 0),
    (["discopop"], None, 0.5, 0.0, 0.05, 1),
    (["discopop"], None, 0.1, 0.0, 0.3, 1),
    (["sft"], None, 0.1, 0.0, 0.05, 0),
    (["sft"], None, 0.5, 0.0, 0.05, 1),
    (["sigmoid_norm"], None, 0.1, 0.0, 0.05, 0),
    (["sigmoid_norm"], None, 0.5, 0.0, 0.05, 1),
    # MPO-style mixture (TRL docs' example weights) and an unweighted mixture.
    (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], 0.1, 0.0, 0.05, 0),
    (["ipo", "hinge", "aot"], None, 0.5, 0.1, 0.05, 1),
]


def trl_numbers(loss_types, loss_weights, beta, label_smoothing, discopop_tau, inp):
    pairs = len(inp["policy_chosen"])
    tokens = inp["chosen_tokens"] + inp["rejected_tokens"]  # rows: [chosen..., rejected...]
    width = 1 + max(tokens) + 1  # one prompt token, completions, one pad column
    completion_mask = torch.zeros(2 * pairs, width, dtype=torch.long)
    for row, n in enumerate(tokens):
        completion_mask[row, 1 : 1 + n] = 1
    seq_len = width - 1

    policy = torch.tensor(inp["policy_chosen"] + inp["policy_rejected"], dtype=torch.float32)
    log_probs = torch.zeros(2 * pairs, seq_len, dtype=torch.float32)
    log_probs[:, 0] = policy  # shifted position 0 predicts the first completion token
    log_probs.requires_grad_(True)

    def model(**_kwargs):
        shape = (2 * pairs, seq_len)
        return SimpleNamespace(
            log_probs=log_probs,
            entropy=torch.zeros(shape),
            mean_logits=torch.zeros(shape),
            is_top1=torch.zeros(shape, dtype=torch.bool),
        )

    model.training = True
    gathered = []

    def gather(t):
        gathered.append(t.detach().clone())
        return t

    stub = SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather=gather, gather_for_metrics=lambda t: t),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        f_alpha_divergence_coef=0.5,
        loss_types=list(loss_types),
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        args=SimpleNamespace(discopop_tau=discopop_tau, gradient_checkpointing_kwargs=None),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.ones(2 * pairs, width, dtype=torch.long),
        "attention_mask": torch.ones(2 * pairs, width, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": torch.tensor(inp["ref_chosen"], dtype=torch.float32),
        "ref_rejected_logps": torch.tensor(inp["ref_rejected"], dtype=torch.float32),
    }
    loss = DPOTrainer._compute_loss(stub, model, inputs, return_outputs=False)
    loss.backward()
    grad = log_probs.grad[:, 0]
    return dict(
        loss=loss.item(),
        chosen_rewards=gathered[0].tolist(),
        rejected_rewards=gathered[1].tolist(),
        grad_chosen=grad[:pairs].tolist(),
        grad_rejected=grad[pairs:].tolist(),
    )


def dump(document):
    """JSON with one line per list of numbers."""
    text = json.dumps(document, indent=1)
    collapse = lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]"
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", collapse, text) + "\n"


def main():
    assert trl.__version__ == "1.16.0", trl.__version__
    cases = []
    for loss_types, loss_weights, beta, ls, tau, idx in CASES:
        out = trl_numbers(loss_types, loss_weights, beta, ls, tau, INPUTS[idx])
        cases.append(
            dict(
                kinds=loss_types,
                weights=loss_weights,
                beta=beta,
                label_smoothing=ls,
                discopop_tau=tau,
                inputs=idx,
                loss=out["loss"],
                chosen_rewards=out["chosen_rewards"],
                rejected_rewards=out["rejected_rewards"],
                grad_chosen=out["grad_chosen"],
                grad_rejected=out["grad_rejected"],
            )
        )
    inputs = [
        {key: [float(x) for x in values] for key, values in inp.items()} for inp in INPUTS
    ]
    generated_by = f"scripts/trl_loss_values.py with trl {trl.__version__}, torch {torch.__version__}."
    sys.stdout.write(dump(dict(generated_by=generated_by, inputs=inputs, cases=cases)))


if __name__ == "__main__":
    main()
