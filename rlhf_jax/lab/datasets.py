"""The lab's TFDS datasets: corpus, SFT demonstrations, prompts (array_record, no TF).

Every dataset of one lab config lives under ``<data_dir>/lab_<fingerprint>/``
where the fingerprint hashes the lab config, so changing a knob builds a new
set instead of reading a stale one. Labelled preferences are written by the
reward phase (they need SFT samples); see ``preferences_dataset``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax

from rlhf_jax import runtime
from rlhf_jax.data import tfds_builders
from rlhf_jax.lab import corpus
from rlhf_jax.lab import prompts as prompts_lib
from rlhf_jax.lab import world as world_lib
from rlhf_jax.lab.types import Prompt

VERSION = "1.0.0"
PROMPT_FEATURES = {"id": "text", "family": "text", "prompt_json": "text"}
DEMO_FEATURES = {"id": "text", "prompt_json": "text", "response": "text", "style": "text"}
PREFERENCE_FEATURES = {
    "id": "text", "prompt_json": "text", "response_a": "text", "response_b": "text",
    "source_a": "text", "source_b": "text", "choice": "int32", "annotator": "int32",
    "p_a": "float32", "gold_a": "float32", "gold_b": "float32",
}  # fmt: skip


def data_fields(lab_cfg) -> dict:
    """What the lab's data depends on: every lab field but the sampling protocol."""
    fields = {k: v for k, v in lab_cfg.to_dict().items() if k != "protocol"}
    return json.loads(json.dumps(fields, default=str))


def fingerprint(lab_cfg) -> str:
    """Hash of :func:`data_fields`: the name of the lab data's folder."""
    text = json.dumps(data_fields(lab_cfg), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def lab_dir(lab_cfg, data_dir: str) -> str:
    return os.path.join(data_dir, f"lab_{fingerprint(lab_cfg)}")


def prompt_to_json(p: Prompt) -> str:
    return json.dumps(dataclasses.asdict(p), sort_keys=True)


def prompt_from_json(text: str) -> Prompt:
    d = json.loads(text)
    d["turns"] = tuple(tuple(t) for t in d["turns"])
    d["candidates"] = tuple(d["candidates"])
    return Prompt(**d)


def world_and_prompts(lab_cfg):
    w = world_lib.build_world(lab_cfg)
    return w, prompts_lib.make_prompts(w, lab_cfg)


def build(lab_cfg, data_dir: str) -> str:
    """Builds (once) the corpus, demonstrations and prompts datasets; returns their folder."""
    root = lab_dir(lab_cfg, data_dir)
    if jax.process_index() == 0:
        w, prompts = world_and_prompts(lab_cfg)
        meta = {"lab": data_fields(lab_cfg)}  # another protocol reads the same data
        train, held_out = corpus.split_corpus(corpus.pretraining_corpus(w, lab_cfg), lab_cfg)
        tfds_builders.build_records_dataset(
            "lab_corpus", root, VERSION, {"text": "text"},
            {"train": lambda: [{"text": t} for t in train],
             "validation": lambda: [{"text": t} for t in held_out]},
            meta,
        )
        demos = corpus.demonstrations(prompts, lab_cfg)
        tfds_builders.build_records_dataset(
            "lab_sft", root, VERSION, DEMO_FEATURES,
            {"train": lambda: [{"id": d.prompt.id, "prompt_json": prompt_to_json(d.prompt),
                                "response": d.response, "style": d.style} for d in demos]},
            meta,
        )
        by_split = {s: prompts_lib.prompts_by(prompts, split=s) for s in prompts_lib.SPLITS}
        tfds_builders.build_records_dataset(
            "lab_prompts", root, VERSION, PROMPT_FEATURES,
            {s: (lambda ps=ps: [{"id": p.id, "family": p.family,
                                 "prompt_json": prompt_to_json(p)} for p in ps])
             for s, ps in by_split.items()},
            meta,
        )
    runtime.barrier("lab_datasets_built")
    return root


def corpus_texts(lab_cfg, data_dir: str) -> tuple[list[str], list[str]]:
    """(train, validation) documents of the lab corpus."""
    root = build(lab_cfg, data_dir)
    return tuple(
        [r["text"] for r in tfds_builders.load_split("lab_corpus", root, split)]
        for split in ("train", "validation")
    )


def demonstrations(lab_cfg, data_dir: str) -> list[tuple[Prompt, str, str]]:
    """(prompt, response, style) of every SFT demonstration."""
    root = build(lab_cfg, data_dir)
    return [(prompt_from_json(r["prompt_json"]), r["response"], r["style"])
            for r in tfds_builders.load_split("lab_sft", root, "train")]


def load_prompts(lab_cfg, data_dir: str, split: str) -> list[Prompt]:
    root = build(lab_cfg, data_dir)
    return [prompt_from_json(r["prompt_json"])
            for r in tfds_builders.load_split("lab_prompts", root, split)]


def preferences_dataset(name: str, data_dir: str, records_fn, metadata: dict) -> str:
    """Writes labelled comparisons (dicts with PREFERENCE_FEATURES) as a TFDS dataset."""
    path = data_dir
    if jax.process_index() == 0:
        tfds_builders.build_records_dataset(name, path, VERSION, PREFERENCE_FEATURES,
                                            {"train": records_fn}, metadata)
    runtime.barrier(f"{name}_built")
    return path
