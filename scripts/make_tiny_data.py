#!/usr/bin/env python3
"""Build `data/tiny/`: the data, tokenizer and model config of the default run.

`align train recipes/tiny/recipe.yaml` trains a small Gemma from random init on
CPU, SFT then DPO, on a synthetic task whose right answers can be checked:

* `tiny-arithmetic`: "What is 3 plus 4?" -> "3 plus 4 is 7." (sums of the
  numbers 0..5 below 10, four phrasings);
* `tiny-counting`: "Count from 4 to 7." -> "4, 5, 6, 7." (four numbers from
  0..6, five phrasings).

Every number in the data, right or wrong, is one digit: the sums of two
digits and the counts past 9 were where the tiny model's answers went wrong
for some seeds (after SFT, or once DPO had pushed on them).

Two more kinds are defined (capitals of made-up countries, colours of things)
but not generated, see KIND_WEIGHTS: in the run's budget a ~1M-parameter
model learnt them or not depending on its random init.

Every answer restates its question ("3 plus 4 is 7."), so the answer is
computed inside the answer sentence. In the preference data the chosen answer
is right and the rejected one is the same sentence with one wrong number (a
wrong sum; for counting, a wrong last number), so DPO has a clear signal.

Held out: every question (kind, item, phrasing) is assigned once to one of
three pools. `train` questions are used by both train splits; `sft_test`
questions only by the SFT test split (never trained on); `dpo_test`
questions only by the DPO test split and by SFT training, never by DPO
training. So the DPO eval pairs are questions DPO never saw, about facts SFT
taught: what the eval measures is whether DPO's preference for right answers
carries over to other questions. (A tiny model trained for a few hundred
steps does not carry a fact over to a phrasing it was never trained on, so
questions unseen by SFT as well would only measure that.)

Files written (schemas are those of the handbook's datasets):

* `sft/train_sft.parquet`, `sft/test_sft.parquet`: like
  HuggingFaceH4/deita-10k-v0-sft (`prompt`, `prompt_id` = sha256 hex of
  `prompt`, `messages`).
* `dpo/train.parquet`, `dpo/test.parquet`: like argilla/dpo-mix-7k
  (`dataset`, `chosen`, `rejected`, `chosen_rating`, `rejected_rating`).
* `model/`: a Gemma-shaped BPE tokenizer trained on this text
  (`tokenizer.json`, `tokenizer_config.json` with the zephyr-7b-gemma ChatML
  template, `special_tokens_map.json`) and a Gemma v1 `config.json` +
  `generation_config.json` for a small model trained from scratch (no
  weights: the SFT recipe says `init_from_scratch: true`).

Deterministic: a fixed seed, sorted inputs, no timestamps; rerunning gives
byte-identical files (checked with `--check`, which builds twice into
temporary folders and compares).

Usage:
    pip install -r scripts/tiny-data-requirements.txt   # jinja2 optional (template check)
    python3 scripts/make_tiny_data.py                   # writes data/tiny/

The bytes depend on the versions pinned there; `tests/tiny_data.rs` rebuilds
data/tiny/ with them and compares.
"""

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

SEED = 20240301  # the day the handbook's Gemma recipe landed

SIZES = {"sft_train": 2400, "sft_test": 100, "dpo_train": 1000, "dpo_test": 100}
# share of (item, phrasing) questions held out, per kind (facts have few items:
# hold out more of them so the test splits are not a handful of questions)
TEST_POOL_FRACTION = {"add": 0.3, "count": 0.4, "capital": 0.4, "colour": 0.4}
SYSTEM_FRACTION = 0.1  # share of conversations that start with a system message
VOCAB_TARGET = 1024  # BPE cap; the trainer stops earlier once no pair occurs twice

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<|im_start|>", "<|im_end|>"]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]

# zephyr-7b-gemma's ChatML template (alignment-handbook recipes/zephyr-7b-gemma/sft/config_full.yaml)
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'user' or messages[0]['role'] == 'system' %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% elif messages[-1]['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
)

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "Answer in one short sentence.",
    "Be brief and correct.",
]

# --- the task ---------------------------------------------------------------

CAPITALS = [
    ("Veltria", "Morvane"),
    ("Kandor", "Ashpeak"),
    ("Lumeth", "Corrin"),
    ("Drazil", "Pontavel"),
    ("Oskara", "Tirnhold"),
    ("Fenmarch", "Glasswick"),
    ("Quorvia", "Belmont"),
    ("Zantor", "Eldhaven"),
    ("Marisol", "Duskmere"),
    ("Tavrun", "Highgate"),
    ("Pelloria", "Stonebay"),
    ("Norwick", "Saltmoor"),
]

COLOURS = [
    ("banana", "yellow"),
    ("lemon", "yellow"),
    ("tomato", "red"),
    ("cherry", "red"),
    ("carrot", "orange"),
    ("pumpkin", "orange"),
    ("frog", "green"),
    ("leaf", "green"),
    ("plum", "purple"),
    ("crow", "black"),
    ("swan", "white"),
    ("blueberry", "blue"),
]
COLOUR_NAMES = sorted({c for _, c in COLOURS})

ADD_QUESTIONS = ["What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}.", "How much is {a} plus {b}?"]
CAPITAL_QUESTIONS = ["What is the capital of {x}?", "Which city is the capital of {x}?", "Name the capital of {x}."]
COUNT_QUESTIONS = [
    "Count from {a} to {b}.",
    "List the numbers from {a} to {b}.",
    "Count up from {a} to {b}.",
    "Say the numbers from {a} to {b}.",
    "Write the numbers from {a} to {b}.",
]
COLOUR_QUESTIONS = ["What colour is a {x}?", "What is the colour of a {x}?", "Which colour does a {x} have?"]

# question kind -> (dataset name, share of rows)
# The fact kinds ("capital", "colour") are defined below but not generated: in
# the run's budget (450 SFT steps of 16 conversations) the model learns them
# or not depending on its random init, while sums and counting are learnt
# every time; add them here for a longer run.
KIND_WEIGHTS = [("add", 0.6), ("count", 0.4)]
# Every number of the task, right or wrong, is one digit (one token).
MAX_NUMBER = 9
ADD_MAX = 5  # operands 0..5: 35 sums, few enough to be learnt in a few hundred steps
# Sums of one digit: 5 + 5, the one sum of two digits, was the question the
# model got wrong after SFT for some seeds.
ADD_MAX_SUM = MAX_NUMBER
# Counting: always four numbers, within 0..9. With lengths 3 and 4 mixed, a
# model of this size sometimes stopped one number early on a question it was
# trained on (depending on its seed); with numbers of two digits (9, 10, 11,
# 12), DPO sometimes broke the "11" of its greedy answers.
COUNT_LENGTH = 4
COUNT_FROM_MAX = 6
DATASET_OF_KIND = {"add": "tiny-arithmetic", "count": "tiny-counting", "capital": "tiny-capitals", "colour": "tiny-colours"}


def items_of(kind):
    """Every (item, right answer value) of a question kind, in a fixed order."""
    if kind == "add":
        return [((a, b), a + b) for a in range(ADD_MAX + 1) for b in range(ADD_MAX + 1) if a + b <= ADD_MAX_SUM]
    if kind == "count":
        return [((a, a + COUNT_LENGTH - 1), tuple(range(a, a + COUNT_LENGTH))) for a in range(COUNT_FROM_MAX + 1)]
    if kind == "capital":
        return [((x,), y) for x, y in CAPITALS]
    if kind == "colour":
        return [((x,), c) for x, c in COLOURS]
    raise ValueError(kind)


def question(kind, item, phrasing):
    if kind == "add":
        return ADD_QUESTIONS[phrasing].format(a=item[0], b=item[1])
    if kind == "count":
        return COUNT_QUESTIONS[phrasing].format(a=item[0], b=item[1])
    if kind == "capital":
        return CAPITAL_QUESTIONS[phrasing].format(x=item[0])
    return COLOUR_QUESTIONS[phrasing].format(x=item[0])


def answer(kind, item, value):
    if kind == "add":
        return f"{item[0]} plus {item[1]} is {value}."
    if kind == "count":
        return ", ".join(str(v) for v in value) + "."
    if kind == "capital":
        return f"The capital of {item[0]} is {value}."
    return f"A {item[0]} is {value}."


def wrong_value(rng, kind, right):
    """A wrong answer value: for numbers, half the time off by 1 or 2."""
    if kind == "add":
        # half the time off by one, else the sum of another question: wrong sums
        # are then about as common as right ones, so DPO cannot prefer an answer
        # without reading the question
        if rng.random() < 0.5:
            return rng.choice([v for v in (right - 1, right + 1) if 0 <= v <= MAX_NUMBER])
        return rng.choice([v for _, v in items_of("add") if v != right])
    if kind == "count":
        # the last number wrong (a skip, a repeat or a step back), so the pair
        # differs in one place and the error is visible from the number before it
        wrong = list(right)
        wrong[-1] = rng.choice([v for v in (right[-1] + 1, right[-1] + 2, right[-1] - 1, right[-1] - 2) if 0 <= v <= MAX_NUMBER])
        return tuple(wrong)
    if kind == "capital":
        return rng.choice([y for _, y in CAPITALS if y != right])
    return rng.choice([c for c in COLOUR_NAMES if c != right])


def n_phrasings(kind):
    return {"add": len(ADD_QUESTIONS), "count": len(COUNT_QUESTIONS), "capital": len(CAPITAL_QUESTIONS), "colour": len(COLOUR_QUESTIONS)}[kind]


def question_pools(rng):
    """Per kind, the (item, value, phrasing) questions of the `train`,
    `sft_test` and `dpo_test` pools (see the module doc).

    Each item keeps at least one phrasing in the train pool."""
    pools = {}
    for kind, _ in KIND_WEIGHTS:
        pool = {"train": [], "sft_test": [], "dpo_test": []}
        for item, value in items_of(kind):
            phrasings = list(range(n_phrasings(kind)))
            held = [p for p in phrasings if rng.random() < TEST_POOL_FRACTION[kind]]
            if len(held) == len(phrasings):
                held = held[1:]
            for p in phrasings:
                where = "train" if p not in held else ("dpo_test" if rng.random() < 0.6 else "sft_test")
                pool[where].append((item, value, p))
        pools[kind] = pool
    return pools


class Sampler:
    """Walks each kind's pool in shuffled passes, so coverage is even."""

    def __init__(self, rng, pools, split):
        self.rng = rng
        self.pools = {k: [q for s in split.split("+") for q in v[s]] for k, v in pools.items()}
        self.queues = {k: [] for k in self.pools}

    def draw(self):
        kinds, weights = zip(*KIND_WEIGHTS)
        kind = self.rng.choices(kinds, weights=weights)[0]
        if not self.queues[kind]:
            self.queues[kind] = list(self.pools[kind])
            self.rng.shuffle(self.queues[kind])
        return (kind,) + self.queues[kind].pop()


def conversation_head(rng, text):
    head = []
    if rng.random() < SYSTEM_FRACTION:
        head.append({"content": rng.choice(SYSTEM_PROMPTS), "role": "system"})
    head.append({"content": text, "role": "user"})
    return head


def make_sft(rng, sampler, n):
    rows = []
    for _ in range(n):
        kind, item, value, p = sampler.draw()
        q = question(kind, item, p)
        messages = conversation_head(rng, q) + [{"content": answer(kind, item, value), "role": "assistant"}]
        rows.append({"prompt": q, "prompt_id": hashlib.sha256(q.encode("utf-8")).hexdigest(), "messages": messages})
    return rows


def make_dpo(rng, sampler, n):
    rows = []
    for _ in range(n):
        kind, item, value, p = sampler.draw()
        head = conversation_head(rng, question(kind, item, p))
        good = answer(kind, item, value)
        bad = answer(kind, item, wrong_value(rng, kind, value))
        assert good != bad
        rows.append(
            {
                "dataset": DATASET_OF_KIND[kind],
                "chosen": head + [{"content": good, "role": "assistant"}],
                "rejected": [dict(m) for m in head] + [{"content": bad, "role": "assistant"}],
                "chosen_rating": rng.choice([4.5, 5.0]),
                "rejected_rating": rng.choice([1.0, 1.5, 2.0]),
            }
        )
    return rows


# --- schemas ----------------------------------------------------------------

MESSAGES = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))
SFT_SCHEMA = pa.schema([("prompt", pa.string()), ("prompt_id", pa.string()), ("messages", MESSAGES)])
DPO_SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("chosen_rating", pa.float64()),
        ("rejected_rating", pa.float64()),
    ]
)


def write_parquet(rows, schema, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=schema)
    pq.write_table(table, path, compression="snappy", row_group_size=len(rows) + 1)


# --- tokenizer --------------------------------------------------------------


def render(messages, add_generation_prompt=False):
    """The chat template, by hand (checked against jinja2 when available)."""
    text = "<bos>" if messages[0]["role"] in ("user", "system") else ""
    for m in messages:
        text += "<|im_start|>" + m["role"] + "\n" + m["content"] + "<|im_end|>" + "\n"
    if add_generation_prompt:
        text += "<|im_start|>assistant\n"
    elif messages[-1]["role"] == "assistant":
        text += "<eos>"
    return text


def training_pieces(conversations):
    """The text between special tokens of every rendered conversation: what the
    BPE sees at run time (roles, "\\n", contents)."""
    pieces = []
    for messages in conversations:
        for m in messages:
            pieces.append(m["role"] + "\n" + m["content"])
            pieces.append("\n")
    return pieces


def train_tokenizer(conversations):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    # Training only (like Gemma's SentencePiece): no merge crosses a word start
    # ("▁"), touches "\n" or joins digits, so digits stay single tokens.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("\n|[0-9]|\u2581?[^\u2581\n0-9]+|\u2581"), behavior="isolated")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS + BYTE_TOKENS,  # ids 0..262, in this order
        show_progress=False,
    )
    tok.train_from_iterator(training_pieces(conversations), trainer=trainer)
    spec = json.loads(tok.to_str())
    # Saved shape of Gemma's tokenizer.json: only the 7 real special tokens are
    # added tokens (the byte tokens are ordinary vocab entries for byte
    # fallback), no pre-tokenizer, the Gemma decoder, legacy "a b" merges.
    spec["added_tokens"] = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    ]
    spec["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}
    spec["pre_tokenizer"] = None
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": "<bos>", "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "<bos>", "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}},
    }
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
        ],
    }
    model = spec["model"]
    model["merges"] = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    for i, t in enumerate(SPECIAL_TOKENS + BYTE_TOKENS):
        assert model["vocab"][t] == i, (t, model["vocab"].get(t), i)
    assert sorted(model["vocab"].values()) == list(range(len(model["vocab"])))
    assert all(" " not in a and " " not in b for a, b in (m.split(" ") for m in model["merges"]))
    return spec


def tokenizer_config():
    added = {
        str(i): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<bos>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<eos>",
        "legacy": None,
        "mask_token": "<mask>",
        "model_max_length": 256,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": "GemmaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }


SPECIAL_TOKENS_MAP = {
    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "mask_token": "<mask>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}


def model_config(vocab_size):
    """Gemma v1 (GemmaForCausalLM), scaled down; both key spellings as in the fixture."""
    return {
        "architectures": ["GemmaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "eos_token_id": 1,
        "head_dim": 32,
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": 128,
        "initializer_range": 0.02,
        "intermediate_size": 512,
        "max_position_embeddings": 256,
        "model_type": "gemma",
        "num_attention_heads": 4,
        "num_hidden_layers": 4,
        "num_key_value_heads": 1,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


GENERATION_CONFIG = {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0, "use_cache": True}


def write_json(obj, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


# --- checks -----------------------------------------------------------------


def percentiles(values, qs=(0, 50, 90, 99, 100)):
    s = sorted(values)
    return {q: s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] for q in qs}


def check(out, splits):
    """Schemas, tokenizer round trips, template, TRL's prompt split; returns stats."""
    for name, (rel, schema) in {
        "sft_train": ("sft/train_sft.parquet", SFT_SCHEMA),
        "sft_test": ("sft/test_sft.parquet", SFT_SCHEMA),
        "dpo_train": ("dpo/train.parquet", DPO_SCHEMA),
        "dpo_test": ("dpo/test.parquet", DPO_SCHEMA),
    }.items():
        table = pq.read_table(out / rel)
        assert table.schema.equals(schema), (rel, table.schema)
        assert table.num_rows == SIZES[name]
        assert table.to_pylist() == splits[name], rel
    tok = Tokenizer.from_file(str(out / "model/tokenizer.json"))
    vocab = tok.get_vocab_size(with_added_tokens=True)
    assert vocab == json.loads((out / "model/config.json").read_text())["vocab_size"]
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i
    assert tok.token_to_id("<0x00>") == 7 and tok.token_to_id("<0xFF>") == 262
    for d in "0123456789":
        assert tok.encode(d, add_special_tokens=False).tokens == [d], d
    assert tok.encode("x\u00e9\u2603", add_special_tokens=False).ids[-3:] == [7 + b for b in "\u2603".encode()]  # byte fallback

    try:
        import jinja2  # noqa: F401
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(CHAT_TEMPLATE)
    except ImportError:
        template = None

    def rendered(messages, gen=False):
        text = render(messages, gen)
        if template is not None:
            assert template.render(messages=messages, bos_token="<bos>", eos_token="<eos>", add_generation_prompt=gen) == text
        return text

    def ids(text):
        enc = tok.encode(text, add_special_tokens=False)
        assert tok.decode(enc.ids, skip_special_tokens=False) == text, text
        assert 3 not in enc.ids, text  # no <unk>
        return enc.ids

    lengths = {}
    texts_checked = 0
    for name in ("sft_train", "sft_test"):
        lengths[name] = []
        for row in splits[name]:
            for m in row["messages"]:
                ids(m["content"])
                texts_checked += 1
            lengths[name].append(len(ids(rendered(row["messages"]))))
            texts_checked += 1
    for name in ("dpo_train", "dpo_test"):
        lengths[name + "_prompt"], lengths[name] = [], []
        for row in splits[name]:
            chosen, rejected = row["chosen"], row["rejected"]
            assert chosen[:-1] == rejected[:-1] and chosen[-1]["role"] == rejected[-1]["role"] == "assistant"
            prompt = ids(rendered(chosen[:-1], gen=True))
            full = [ids(rendered(chosen)), ids(rendered(rejected))]
            for m in chosen + rejected[-1:]:
                ids(m["content"])
            texts_checked += 3 + len(chosen) + 1
            for f in full:  # TRL 1.x splits at the common prefix: it must be the whole prompt
                assert f[: len(prompt)] == prompt
            differ = sum(a != b for a, b in zip(full[0][len(prompt) :], full[1][len(prompt) :]))
            assert differ >= 1
            lengths[name + "_prompt"].append(len(prompt))
            lengths[name].append(max(len(f) for f in full))
    # held out: no SFT test question is trained on; no DPO test question is in DPO training
    for a, b in (("sft_train", "sft_test"), ("dpo_train", "sft_test"), ("dpo_train", "dpo_test")):
        def questions(rows):
            return {[m for m in r.get("messages", r.get("chosen")) if m["role"] == "user"][0]["content"] for r in rows}

        train_q, test_q = questions(splits[a]), questions(splits[b])
        assert not train_q & test_q, (a, b)
    return vocab, lengths, texts_checked, template is not None


# --- main -------------------------------------------------------------------


def build(out):
    rng = random.Random(SEED)
    pools = question_pools(rng)
    splits = {
        "sft_train": make_sft(rng, Sampler(rng, pools, "train+dpo_test"), SIZES["sft_train"]),
        "sft_test": make_sft(rng, Sampler(rng, pools, "sft_test"), SIZES["sft_test"]),
        "dpo_train": make_dpo(rng, Sampler(rng, pools, "train"), SIZES["dpo_train"]),
        "dpo_test": make_dpo(rng, Sampler(rng, pools, "dpo_test"), SIZES["dpo_test"]),
    }
    if out.exists():
        shutil.rmtree(out)
    write_parquet(splits["sft_train"], SFT_SCHEMA, out / "sft/train_sft.parquet")
    write_parquet(splits["sft_test"], SFT_SCHEMA, out / "sft/test_sft.parquet")
    write_parquet(splits["dpo_train"], DPO_SCHEMA, out / "dpo/train.parquet")
    write_parquet(splits["dpo_test"], DPO_SCHEMA, out / "dpo/test.parquet")

    conversations = [r["messages"] for r in splits["sft_train"]] + [r["chosen"] for r in splits["dpo_train"]]
    conversations += [r["rejected"] for r in splits["dpo_train"]]
    spec = train_tokenizer(conversations)
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer.from_str(json.dumps(spec))  # must load
    # written from the spec, not tok.to_str(): that would turn the legacy "a b" merges into pairs
    (model_dir / "tokenizer.json").write_text(json.dumps(spec, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_json(tokenizer_config(), model_dir / "tokenizer_config.json")
    write_json(SPECIAL_TOKENS_MAP, model_dir / "special_tokens_map.json")
    write_json(model_config(tok.get_vocab_size(with_added_tokens=True)), model_dir / "config.json")
    write_json(GENERATION_CONFIG, model_dir / "generation_config.json")
    return pools, splits


def digest(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "data" / "tiny"))
    parser.add_argument("--check", action="store_true", help="also build twice elsewhere and compare sha256")
    args = parser.parse_args()
    out = Path(args.out)

    pools, splits = build(out)
    vocab, lengths, texts_checked, jinja = check(out, splits)

    print(f"wrote {out}")
    for kind, pool in pools.items():
        print(f"  questions {kind:8s} " + "  ".join(f"{k} {len(v):3d}" for k, v in pool.items()))
    for name, rows in splits.items():
        distinct = len({json.dumps(r, sort_keys=True) for r in rows})
        extra = ""
        if "dataset" in rows[0]:
            counts = {}
            for r in rows:
                counts[r["dataset"]] = counts.get(r["dataset"], 0) + 1
            extra = "  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"  {name:10s} {len(rows):5d} rows ({distinct} distinct){extra}")
    print(f"  vocab size {vocab} (tokenizer = model config)")
    for name, ls in lengths.items():
        p = percentiles(ls)
        print(f"  tokens {name:17s} " + "  ".join(f"p{q}={v}" for q, v in p.items()) + f"  mean={sum(ls) / len(ls):.1f}")
    print(f"  round-tripped {texts_checked} texts; chat template {'checked with jinja2' if jinja else 'not checked (no jinja2)'}")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"  {total / 1024:.0f} KiB in all")
    for rel, h in digest(out).items():
        print(f"  {h[:16]}  {rel}")

    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            again = Path(tmp) / "tiny"
            build(again)
            same = digest(again) == digest(out)
            print(f"  rebuilt in {again}: {'identical' if same else 'DIFFERENT'}")
            if not same:
                sys.exit(1)


if __name__ == "__main__":
    main()
