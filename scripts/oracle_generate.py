"""Greedy generation truth for tests/generate_parity.rs.

Run with the oracle venv (transformers + torch), from the repository root:
    /opt/trl-venv/bin/python scripts/oracle_generate.py
Writes tests/fixtures/generation/greedy.json: for each prompt, the prompt ids
(chat template with the generation prompt, no extra special tokens) and the
ids transformers' `generate` gives greedily, stopping at <eos> or <|im_end|>.
"""

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL = "tests/fixtures/tiny-gemma/model"
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about gradient descent.",
]
MAX_NEW_TOKENS = 24

tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.float32).eval()
stops = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
cases = []
for prompt in PROMPTS:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(
            ids,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tokenizer.pad_token_id,
        )
    cases.append(
        {
            "prompt": prompt,
            "prompt_ids": ids[0].tolist(),
            "generated_ids": out[0, ids.shape[1]:].tolist(),
            "max_new_tokens": MAX_NEW_TOKENS,
        }
    )
with open("tests/fixtures/generation/greedy.json", "w") as f:
    json.dump({"model": MODEL, "stop_ids": stops, "cases": cases}, f, indent=1)
    f.write("\n")
print(json.dumps(cases))
