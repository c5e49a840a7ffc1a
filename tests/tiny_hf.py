"""A tiny random Llama or Gemma in Hugging Face layout, with data: the "your own model" tour.

    python -m tests.tiny_hf llama /tmp/own     # or: gemma

writes ``/tmp/own/hf/`` (config.json, model.safetensors, tokenizer.model,
tokenizer_config.json with a chat template, generation_config.json: what a
downloaded checkpoint folder holds) and the data a researcher brings:
``sft/train.jsonl`` (200 chat demonstrations, some with a system turn),
``prefs/train.jsonl`` (200 Anthropic HH pairs) and ``prompts.jsonl`` (200). The weights
are random (2 layers, width 64, a 256-row embedding for a tokenizer of fewer
pieces, as real checkpoints pad theirs); the tokenizer is trained on the data.
The checkpoint tests use the same writers (:func:`random_tensors`,
:func:`write_checkpoint`).
"""

from __future__ import annotations

import io
import json
import os
import sys

import ml_dtypes
import numpy as np
import sentencepiece as spm
from safetensors.numpy import save_file

_SYLLABLES = ("vel", "mor", "qa", "rin", "tes", "ol", "un", "bri", "fa", "ne", "tov", "zan")
COUNTRIES = [(a.title() + b + c, c.title() + a + "s") for a in _SYLLABLES[:5]
             for b in _SYLLABLES[5:9] for c in _SYLLABLES[9:]][:50]  # (country, capital)
QUESTIONS = [("What is the capital of {c}?", "The capital of {c} is {k}."),
             ("Name the capital city of {c}.", "{k} is the capital of {c}."),
             ("Which city is the capital of {c}?", "It is {k}."),
             ("Tell me the capital of {c}.", "The capital of {c} is {k}.")]
SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=256, torch_dtype="float32")
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "<<SYS>> {{ m['content'] }} <</SYS>> {% elif m['role'] == 'user' %}"
    "[INST] {{ m['content'] }} [/INST]{% else %} {{ m['content'] }}{{ eos_token }}"
    "{% endif %}{% endfor %}")
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
ARCHS = {
    "llama": dict(config={**SHAPE, "architectures": ["LlamaForCausalLM"], "model_type": "llama",
                          "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 500.0,
                          "hidden_act": "silu", "tie_word_embeddings": False,
                          "bos_token_id": 1, "eos_token_id": 2},
                  ids=dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1), turns=[],
                  template=LLAMA_TEMPLATE, system=True),
    "gemma": dict(config={**SHAPE, "architectures": ["GemmaForCausalLM"], "model_type": "gemma",
                          "num_key_value_heads": 1, "head_dim": 16, "rms_norm_eps": 1e-6,
                          "rope_theta": 10000.0, "hidden_activation": "gelu_pytorch_tanh",
                          "tie_word_embeddings": True, "bos_token_id": 2, "eos_token_id": 1,
                          "pad_token_id": 0},
                  ids=dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
                           eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>"),
                  turns=["<start_of_turn>", "<end_of_turn>"], template=GEMMA_TEMPLATE,
                  system=False),
}


def random_tensors(c: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Every tensor of an HF checkpoint for config ``c``, in HF names and [out, in] layout."""
    rng = np.random.default_rng(seed)
    d, f, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    h, kv = c["num_attention_heads"], c["num_key_value_heads"]
    dh = c.get("head_dim", d // h)
    gemma = c["model_type"] == "gemma"

    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    def norm():
        return (rng.standard_normal(d) * 0.2 + (0.0 if gemma else 1.0)).astype(np.float32)

    t = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": norm()}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": norm(),
                  p + "post_attention_layernorm.weight": norm(),
                  p + "self_attn.q_proj.weight": w(h * dh, d),
                  p + "self_attn.k_proj.weight": w(kv * dh, d),
                  p + "self_attn.v_proj.weight": w(kv * dh, d),
                  p + "self_attn.o_proj.weight": w(d, h * dh),
                  p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d),
                  p + "mlp.down_proj.weight": w(d, f)})
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = w(v, d)
    if c["torch_dtype"] == "bfloat16":
        t = {k: a.astype(ml_dtypes.bfloat16) for k, a in t.items()}
    return t


def write_checkpoint(folder, c: dict, tensors: dict, shards: int = 1) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(c, f)
    if shards == 1:
        save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        return str(folder)
    names = list(tensors)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[i::shards]}
        save_file(part, os.path.join(folder, file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return str(folder)


def _data(system: bool) -> dict[str, list[dict]]:
    """200 demonstrations, 200 HH pairs and 200 prompts about 50 made-up countries."""
    sft, prefs, prompts = [], [], []
    for i, (country, capital) in enumerate(COUNTRIES):
        for j, (ask, answer) in enumerate(QUESTIONS):
            question, reply = ask.format(c=country), answer.format(c=country, k=capital)
            lead = ([{"role": "system", "content": "Answer in one sentence."}]
                    if system and (i + j) % 4 == 0 else [])
            user = {"role": "user", "content": question}
            sft.append({"messages": [*lead, user, {"role": "assistant", "content": reply}]})
            prefs.append({"chosen": f"\n\nHuman: {question}\n\nAssistant: {reply}",
                          "rejected": f"\n\nHuman: {question}\n\nAssistant: I have no idea."})
            prompts.append({"messages": [*lead, user]})
    return {"sft/train.jsonl": sft, "prefs/train.jsonl": prefs, "prompts.jsonl": prompts}


def _tokenizer(texts: list[str], ids: dict, symbols: list[str], gemma: bool) -> bytes:
    proto = io.BytesIO()
    # Gemma's tokenizer is BPE without a dummy prefix and with identity normalisation.
    style = dict(model_type="bpe", add_dummy_prefix=False, normalization_rule_name="identity",
                 remove_extra_whitespaces=False) if gemma else {}
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=proto, vocab_size=120,
        user_defined_symbols=["\n", *symbols], byte_fallback=False, hard_vocab_limit=False,
        minloglevel=2, num_threads=1, **ids, **style)
    return proto.getvalue()


def make(arch: str, root: str) -> str:
    """Writes the folder and the data under `root`; returns the HF folder."""
    spec = ARCHS[arch]
    data = _data(spec["system"])
    for rel, records in data.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
    texts = [m["content"] for r in data["sft/train.jsonl"] for m in r["messages"]]
    texts += ["[INST] [/INST] <<SYS>> <</SYS>> It is I have no idea model user"] * 5
    folder = write_checkpoint(os.path.join(root, "hf"), spec["config"],
                              random_tensors(spec["config"]))
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(_tokenizer(texts, spec["ids"], spec["turns"], arch == "gemma"))
    special = {"bos": "<s>", "eos": "</s>"} if arch == "llama" else {"bos": "<bos>",
                                                                     "eos": "<eos>"}
    tokenizer_config = {"add_bos_token": True, "chat_template": spec["template"],
                        "bos_token": special["bos"], "eos_token": special["eos"]}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f, indent=2)
    generation = {k: spec["config"][k] for k in ("bos_token_id", "eos_token_id")}
    with open(os.path.join(folder, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ARCHS:
        sys.exit(f"usage: python -m tests.tiny_hf {{{'|'.join(ARCHS)}}} <folder>")
    print(f"tiny {sys.argv[1]}: {make(sys.argv[1], sys.argv[2])} and its data in {sys.argv[2]}")
