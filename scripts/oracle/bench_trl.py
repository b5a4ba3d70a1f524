#!/usr/bin/env python3
"""Time TRL's DPOTrainer on CPU for the "bench" configuration and print the result as JSON.

Bench configuration: random Gemma v1 (hidden 256, intermediate 1024, 4 layers, 4 heads, 4 KV heads, head_dim 64,
vocab = size of the fixture tokenizer), fp32, every chosen/rejected sequence exactly `--seq-len` (256) tokens
(prompt ~100 tokens + a long completion, truncated by DPOConfig.max_length), per-device batch 4 pairs, gradient
accumulation 1, sigmoid loss, a separate reference model, torch.set_num_threads(2), sequential sampler.
3 warm-up optimizer steps, then 10 timed optimizer steps; the time of a step is the wall-clock time between the
ends of two consecutive optimizer steps (data loading, policy forward+backward on 2*batch sequences, reference
forward, optimizer step, logging bookkeeping).

tokens/s counts the tokens of the policy batch (2 * batch * seq_len per step: chosen and rejected rows); the
reference forward over the same tokens is included in the time but not counted again.

    /opt/oracle-venv/bin/python bench_trl.py [--tokenizer DIR] [--threads 2]
"""

# Copied unchanged (but for the default tokenizer path) from the oracle
# that made the fixtures, so that a clone of align alone can rerun the TRL
# side of the CPU comparison: scripts/bench-trl.sh.

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TOKENIZER = os.path.join(HERE, "..", "..", "tests", "fixtures", "tiny-gemma", "model")

FILLER = [
    "Sunlight contains all the colors of visible light, and the atmosphere scatters the short blue wavelengths "
    "much more strongly than the long red ones.",
    "Plants take in carbon dioxide from the air and water from the soil, and use the energy of sunlight to turn "
    "them into sugar.",
    "The axis of the Earth is tilted, so during the year first one half and then the other half leans toward "
    "the Sun.",
    "Tides are caused mainly by the gravity of the Moon, which pulls the oceans into two bulges on opposite sides "
    "of the Earth.",
    "A vaccine trains the immune system to recognize a germ without causing the disease, so the body can react "
    "quickly later.",
]


def text_with_tokens(tok, n_tokens, offset):
    parts, i = [], offset
    while True:
        parts.append(FILLER[i % len(FILLER)])
        i += 1
        s = " ".join(parts)
        if len(tok(s, add_special_tokens=False)["input_ids"]) >= n_tokens:
            return s


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--timed-steps", type=int, default=10)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    import datasets
    import transformers
    import trl
    from transformers import AutoTokenizer, GemmaConfig, GemmaForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    n_steps = a.warmup_steps + a.timed_steps
    n_rows = n_steps * a.batch_size
    rows = []
    for i in range(n_rows):
        prompt = text_with_tokens(tok, 100, i)
        chosen = text_with_tokens(tok, a.seq_len, i + 1)
        rejected = text_with_tokens(tok, a.seq_len, i + 2)
        rows.append({
            "chosen": [{"content": prompt, "role": "user"}, {"content": chosen, "role": "assistant"}],
            "rejected": [{"content": prompt, "role": "user"}, {"content": rejected, "role": "assistant"}],
        })
    ds = datasets.Dataset.from_list(rows)

    cfg = GemmaConfig(
        vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=4, head_dim=64, hidden_act="gelu_pytorch_tanh", max_position_embeddings=1024,
        rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, pad_token_id=0,
        eos_token_id=1, bos_token_id=2, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    policy = GemmaForCausalLM(cfg).float()
    torch.manual_seed(0)
    ref = GemmaForCausalLM(cfg).float()
    ref.load_state_dict(policy.state_dict())

    class Timer(TrainerCallback):
        def __init__(self):
            self.ends = []

            self.cpu_ends = []

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            self.c0 = time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

    timer = Timer()
    args = DPOConfig(
        output_dir="/tmp/oracle/bench_out", per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
        learning_rate=1e-6, max_steps=n_steps, max_length=a.seq_len, beta=0.1, bf16=False, fp16=False,
        gradient_checkpointing=False, logging_steps=1000, save_strategy="no", eval_strategy="no", report_to=[],
        train_sampling_strategy="sequential", use_cpu=True, dataloader_num_workers=0, seed=42,
    )
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok,
                         callbacks=[timer])
    # every sequence must be exactly seq_len tokens after the collator's truncation
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(a.batch_size)])
    assert tuple(batch["input_ids"].shape) == (2 * a.batch_size, a.seq_len), batch["input_ids"].shape
    assert bool(batch["attention_mask"].all())
    # keep stdout for the JSON result: the Trainer prints its log dicts to stdout
    with contextlib.redirect_stdout(sys.stderr):
        trainer.train()

    ends = [timer.t0] + timer.ends
    durations = [ends[i + 1] - ends[i] for i in range(len(ends) - 1)]
    timed = durations[a.warmup_steps:]
    cpu_ends = [timer.c0] + timer.cpu_ends
    cpu_timed = [cpu_ends[i + 1] - cpu_ends[i] for i in range(len(cpu_ends) - 1)][a.warmup_steps:]
    load_after = os.getloadavg()
    tokens_per_step = 2 * a.batch_size * a.seq_len
    mean = statistics.mean(timed)
    n_params = sum(p.numel() for p in trainer.model.parameters())
    out = {
        "what": "TRL DPOTrainer optimizer steps on CPU (policy fwd+bwd on chosen+rejected, ref fwd, AdamW)",
        "config": {"hidden_size": 256, "intermediate_size": 1024, "num_layers": 4, "num_heads": 4, "num_kv_heads": 4,
                   "head_dim": 64, "vocab_size": len(tok), "params": n_params, "seq_len": a.seq_len,
                   "batch_pairs": a.batch_size, "grad_accum": 1, "dtype": "float32", "threads": a.threads,
                   "attn_implementation": trainer.model.config._attn_implementation},
        "warmup_steps": a.warmup_steps,
        "timed_steps": len(timed),
        "seconds_per_step_mean": mean,
        "seconds_per_step_median": statistics.median(timed),
        "seconds_per_step_min": min(timed),
        "seconds_per_step_max": max(timed),
        "tokens_per_step": tokens_per_step,
        "tokens_per_second": tokens_per_step / mean,
        "per_step_seconds": [round(x, 4) for x in timed],
        # CPU seconds used by this process (all threads) per timed step: less sensitive to other load on the machine
        "process_cpu_seconds_per_step_mean": statistics.mean(cpu_timed),
        "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
                     "python": sys.version.split()[0]},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count()},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
