"""Comparison data from the lab: on-policy pairs from the SFT policy, labelled by a labeller.

For each prompt, `pairs_per_prompt` pairs of responses are sampled from the
policy (on-policy, as in InstructGPT); with `offpolicy_fraction > 0` that
share of pairs replaces response B by one of the lab's rendered variants (a
random style that applies to the family), and every record says where each
response came from. The labeller (:mod:`rlhf_jax.lab.labellers`) labels each
pair: one member of the simulated panel drawn at random, or the AI judge.
With ``data.all_pairs`` the training pairs are every pair of a prompt's
samples (8 samples: 28 pairs instead of 4), more labels for no more sampling.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np

from rlhf_jax import generate
from rlhf_jax.lab import annotators, gold, render
from rlhf_jax.lab.evaluate import prompt_text, sampler_config
from rlhf_jax.lab.types import HARD_FAMILIES, Prompt


@dataclasses.dataclass(frozen=True)
class Comparisons:
    prompts: list[Prompt]
    responses_a: list[str]
    responses_b: list[str]
    source_a: list[str]
    source_b: list[str]
    labels: annotators.LabelResult
    cost: dict | None = None  # the labeller's cost figures (labellers.Labels.cost)

    def __len__(self):
        return len(self.prompts)

    def chosen_rejected(self) -> tuple[list[str], list[str]]:
        """The panel's chosen and rejected response of every pair."""
        chosen = [b if c else a for a, b, c in zip(self.responses_a, self.responses_b,
                                                    self.labels.choice)]
        rejected = [a if c else b for a, b, c in zip(self.responses_a, self.responses_b,
                                                      self.labels.choice)]
        return chosen, rejected

    def to_records(self, prefix: str) -> list[dict]:
        """Rows of the lab preference dataset (datasets.PREFERENCE_FEATURES)."""
        from rlhf_jax.lab.datasets import prompt_to_json  # noqa: PLC0415

        lab = self.labels
        return [
            {"id": f"{prefix}/{i}", "prompt_json": prompt_to_json(p),
             "response_a": self.responses_a[i], "response_b": self.responses_b[i],
             "source_a": self.source_a[i], "source_b": self.source_b[i],
             "choice": int(lab.choice[i]), "annotator": int(lab.annotator[i]),
             "p_a": float(lab.p_a[i]), "gold_a": float(lab.gold_a[i]),
             "gold_b": float(lab.gold_b[i])}
            for i, p in enumerate(self.prompts)
        ]  # fmt: skip


def sample_policy(graphdef, params, tok, prompts, copies: int, sample_cfg, key, mesh=None,
                  label="comparison prompts"):
    """`copies` sampled responses per prompt, as a list per copy."""
    texts = [prompt_text(p) for p in prompts]
    out = []
    for c in range(copies):
        gen = generate.generate(
            graphdef, params, tok, texts, sampler_config(sample_cfg, tok),
            jax.random.fold_in(key, c), batch_size=sample_cfg.batch_size,
            prompt_len=sample_cfg.prompt_len, mesh=mesh, label=label,
        )
        out.append(gen.texts)
    return out


def cached_samples(cache_dir: str, meta: dict, sample_fn) -> list[list[str]]:
    """`sample_fn()`'s samples, stored once under `cache_dir` by a hash of `meta`.

    `meta` names everything the samples depend on (the policy checkpoint and its step,
    the prompts, the sampling settings, the seed) and nothing they do not: no panel.
    Runs that differ only in who labels the pairs (the claims experiment's arms) read
    the same samples instead of drawing them again. The file is JSON, written atomically.
    """
    from rlhf_jax import runtime  # noqa: PLC0415

    text = json.dumps(meta, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = os.path.join(cache_dir, "samples", f"{meta.get('what', 'samples')}_{digest}.json")
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        if stored.get("meta") == json.loads(text):
            print(f"samples: {meta.get('what')} read from {path}", flush=True)
            return stored["samples"]
    samples = [list(row) for row in sample_fn()]
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        runtime.write_json(path, {"meta": json.loads(text), "samples": samples})
    return samples


def sample_meta(what: str, init_from: str, prompts, copies: int, sample_cfg, seed) -> dict:
    """What a set of policy samples depends on, for :func:`cached_samples`."""
    from rlhf_jax import checkpoint  # noqa: PLC0415

    ids = hashlib.sha256("\n".join(p.id for p in prompts).encode()).hexdigest()[:16]
    return {"what": what, "init_from": os.path.abspath(init_from),
            "init_step": checkpoint.latest_step(init_from), "prompts": ids,
            "num_prompts": len(prompts), "copies": copies, "seed": seed,
            "sampling": {k: sample_cfg[k] for k in ("batch_size", "prompt_len",
                                                    "max_new_tokens", "temperature")}}


def collect(graphdef, params, tok, prompts, data_cfg, labeller, key, seed, mesh=None,
            samples=None) -> Comparisons:
    """Samples, mixes in off-policy variants and has `labeller` label the pairs
    (:mod:`rlhf_jax.lab.labellers`): `pairs_per_prompt` disjoint pairs per prompt, or with
    ``data.all_pairs`` every pair of the prompt's 2 * `pairs_per_prompt` samples.

    `samples` (2 * pairs_per_prompt lists of responses, :func:`sample_policy`'s) are
    used instead of sampling when given."""
    k = data_cfg.pairs_per_prompt
    if samples is None:
        samples = sample_policy(graphdef, params, tok, prompts, 2 * k, data_cfg, key, mesh)
    if data_cfg.get("all_pairs", False):
        if data_cfg.offpolicy_fraction:
            raise ValueError("data.all_pairs pairs the policy's own samples: set "
                             "data.offpolicy_fraction=0")
        order = [(i, j) for i in range(2 * k) for j in range(i + 1, 2 * k)]
    else:
        order = [(2 * j, 2 * j + 1) for j in range(k)]
    rng = np.random.default_rng([seed, 21])
    rows = ([], [], [], [], [])
    for ia, ib in order:
        for i, p in enumerate(prompts):
            a, b, src_b = samples[ia][i], samples[ib][i], "policy"
            if rng.random() < data_cfg.offpolicy_fraction:
                styles = render.applicable_styles(p.family)
                style = styles[int(rng.integers(len(styles)))]
                b, src_b = render.render_response(p, style, rng), f"render:{style}"
            for col, v in zip(rows, (p, a, b, "policy", src_b)):
                col.append(v)
    labels = labeller.label(rows[0], rows[1], rows[2], seed)
    gold_pref, gold_a, gold_b = annotators.gold_fields(rows[0], rows[1], rows[2])
    result = annotators.LabelResult(labels.choice, labels.annotator, labels.p_a, gold_pref,
                                    gold_a, gold_b)
    return Comparisons(*rows, result, labels.cost)


def panel_report(comparisons: Comparisons, labeller, seed) -> dict:
    """The labeller's settings, cost and figures, and how its labels agree with gold."""
    lab = comparisons.labels
    decided = lab.gold_pref >= 0
    hard = np.array([p.family in HARD_FAMILIES for p in comparisons.prompts], bool)

    def agreement(mask):
        mask = mask & decided
        return float(np.mean(lab.choice[mask] == lab.gold_pref[mask])) if mask.any() \
            else float("nan")

    pairs = (comparisons.prompts, comparisons.responses_a, comparisons.responses_b)
    extra = {}
    if labeller.kind == "ai":  # how much the judge knows: its beliefs against the truth
        asked = {p.id: p for p in comparisons.prompts if p.statement and p.answer}.values()
        beliefs = [labeller.belief(p) for p in asked]
        extra["judge_right"] = (float(np.mean([b == p.answer for b, p in zip(beliefs, asked)]))
                                if beliefs else float("nan"))
    return {
        **extra,
        **labeller.report(*pairs, seed + 1),
        "labeller_kind": labeller.kind,
        "num_pairs": len(comparisons),
        "label_agrees_with_gold": agreement(np.ones(len(comparisons), bool)),
        "label_agrees_with_gold_hard": agreement(hard),
        "label_agrees_with_gold_other": agreement(~hard),
        "gold_ties": float(np.mean(~decided)),
        "offpolicy_pairs": float(np.mean([s != "policy" for s in comparisons.source_b])),
        "accuracy_ceiling": labeller.ceiling(*pairs),
        "label_cost": dict(comparisons.cost or {}),
        "gold_weights": gold.default_gold_weights().to_dict(),
    }


def load_or_collect(config, data_dir: str, split: str, prompts, collect_fn,
                    labeller_fn) -> dict:
    """The labelled comparisons of one split as columns, sampled and labelled only once.

    They are stored as a TFDS dataset ``lab_preferences`` (split = "train" or
    "probe") in `data_dir`, with the panel, sampling settings and agreement
    figures in its metadata; a rerun reads them back.
    """
    from rlhf_jax.data import tfds_builders  # noqa: PLC0415
    from rlhf_jax.lab import datasets  # noqa: PLC0415

    # Where the data dir is, and how the policy's path is spelled, decide nothing: a DPO
    # run pointed at a reward run's data dir reads that run's labels.
    data = {k: v for k, v in config.data.to_dict().items() if k != "data_dir"}
    meta = {"panel": config.panel.to_dict(), "data": data,
            "lab": datasets.fingerprint(config.lab),
            "init_from": os.path.abspath(config.init_from), "seed": config.seed}
    if config.get("labeller", None) is not None:  # absent: the panel's labels, named as before
        meta["labeller"] = config.labeller.to_dict()
    # The name carries a hash of everything the labels depend on: another panel or policy
    # gets its own dataset instead of reading this one.
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()
    name = f"lab_preferences_{split}_{digest[:10]}"
    try:
        source = tfds_builders.load_split(name, data_dir, "train")
        report = tfds_builders.load_metadata(name, data_dir).get("report", {})
    except tfds_builders.DataError:
        comparisons = collect_fn(prompts)
        report = panel_report(comparisons, labeller_fn(), config.seed)
        records = comparisons.to_records(split)
        datasets.preferences_dataset(name, data_dir, lambda: records, {**meta, "report": report})
        source = tfds_builders.load_split(name, data_dir, "train")
    rows = [dict(r) for r in source]
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    columns["prompts"] = [datasets.prompt_from_json(t) for t in columns["prompt_json"]]
    columns["report"] = report
    return columns
