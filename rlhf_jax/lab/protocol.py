"""One sampling protocol for every lab phase that samples (LAB.md section 7).

Comparisons, best-of-n, PPO rollouts, probes and recall all sample with the
same prompt budget, response budget and temperature, kept in one place,
``config.lab.protocol``; otherwise the phases measure different things (a
reward model trained on 48-token answers scoring PPO's 32-token ones, a
probe that cuts the price off a business plan).

- ``prompt_len``: fits every lab prompt. A lab prompt is never cut: one over
  the budget is an error (:func:`check_prompts`), not a silent left cut.
- ``max_new_tokens``: the one response budget. At 96, 0.96 of the
  quickstart's SFT samples end with EOS (at 32, 0.64 did, and the no-EOS
  penalty became the strongest signal PPO saw).
- ``temperature``: what comparisons, best-of-n, rollouts and probes sample
  at, so the reward model is trained on the distribution PPO starts from
  and the probes measure the policy PPO trained. Recall stays greedy: it
  asks what a model states, not how it samples.

Lab phase configs (configs/lab/) leave these fields out; :func:`apply` fills
them in from ``lab.protocol``, with the lengths derived from them (the reward
model's pair length, the scoring length, SFT's row length), and refuses a
phase config that sets one to another value.
"""

from __future__ import annotations

import contextlib

import ml_collections

# Where each experiment keeps its sampling settings: (ConfigDict path, field, what it is).
# "total" is prompt_len + max_new_tokens: a prompt and a full response.
SITES = {
    "sft": (("eval", "prompt_len", "prompt_len"), ("eval", "max_new_tokens", "max_new_tokens"),
            ("eval", "temperature", "temperature"), ("data", "seq_len", "total")),
    "reward": (("data", "prompt_len", "prompt_len"),
               ("data", "max_new_tokens", "max_new_tokens"),
               ("data", "temperature", "temperature"), ("data", "seq_len", "total"),
               ("analysis.sampling", "prompt_len", "prompt_len"),
               ("analysis.sampling", "max_new_tokens", "max_new_tokens"),
               ("analysis.sampling", "temperature", "temperature")),
    "ppo": (("data", "prompt_len", "prompt_len"), ("ppo", "max_new_tokens", "max_new_tokens"),
            ("ppo", "temperature", "temperature")),
    "ppo_seeds": (("data", "prompt_len", "prompt_len"),
                  ("ppo", "max_new_tokens", "max_new_tokens"),
                  ("ppo", "temperature", "temperature")),
    # DPO samples the reward phase's comparisons (when they are not cached) and the probes.
    "dpo": (("data", "prompt_len", "prompt_len"),
            ("data", "max_new_tokens", "max_new_tokens"),
            ("data", "temperature", "temperature"), ("data", "seq_len", "total"),
            ("eval", "prompt_len", "prompt_len"), ("eval", "max_new_tokens", "max_new_tokens"),
            ("eval", "temperature", "temperature")),
    "eval": (("eval", "prompt_len", "prompt_len"), ("eval", "max_new_tokens", "max_new_tokens"),
             ("eval", "temperature", "temperature"), ("eval", "score_len", "total")),
    "recall": (("", "prompt_len", "prompt_len"), ("", "max_new_tokens", "max_new_tokens")),
}


def default_protocol_config() -> ml_collections.ConfigDict:
    """The lab's protocol: 128 prompt tokens (the longest lab prompt of the default world
    is 115: a two-turn pushback prompt), 96 response tokens, temperature 0.7."""
    return ml_collections.ConfigDict({"prompt_len": 128, "max_new_tokens": 96,
                                      "temperature": 0.7})


def values(protocol) -> dict:
    out = {k: protocol[k] for k in ("prompt_len", "max_new_tokens", "temperature")}
    out["total"] = protocol.prompt_len + protocol.max_new_tokens
    return out


def is_lab(config) -> bool:
    """A run on the lab's world: its sampling follows the protocol."""
    if config.get("experiment") not in SITES or "lab" not in config:
        return False
    if config.experiment in ("eval", "recall"):
        return True
    return (config.get("data") or {}).get("source") == "lab"


def _node(config, path: str):
    node = config
    for part in filter(None, path.split(".")):
        node = node[part]
    return node


def apply(config) -> None:
    """Sets a lab phase config's sampling fields from ``config.lab.protocol`` (in place).

    A field the phase config already holds must equal the protocol's value: a lab phase
    that samples on its own terms is refused, naming the protocol field to set instead.
    Configs of other data sources are left as they are.
    """
    if not is_lab(config):
        return
    if "protocol" not in config.lab:
        raise ValueError("config.lab has no protocol: a lab config from before the sampling "
                         "protocol; start from rlhf_jax.lab.config.default_lab_config()")
    want = values(config.lab.protocol)
    check(config.lab.protocol, config.get("model"))
    for path, field, what in SITES[config.experiment]:
        node = _node(config, path)
        where = f"config.{path + '.' if path else ''}{field}"
        if field in node and node[field] is not None and node[field] != want[what]:
            source = ("lab.protocol.prompt_len + lab.protocol.max_new_tokens"
                      if what == "total" else f"lab.protocol.{what}")
            raise ValueError(
                f"{where}={node[field]} differs from {source} ({want[what]}): every lab phase "
                f"samples under one protocol; set --config.lab.protocol.* instead "
                "(rlhf_jax/lab/protocol.py)")
        with node.unlocked() if hasattr(node, "unlocked") else contextlib.nullcontext():
            node[field] = want[what]


def check(protocol, model=None) -> None:
    """Raises ValueError for a protocol out of range, or longer than the model's context."""
    if protocol.prompt_len <= 0 or protocol.max_new_tokens <= 0:
        raise ValueError(f"lab.protocol.prompt_len={protocol.prompt_len} and max_new_tokens="
                         f"{protocol.max_new_tokens} must be positive")
    if not protocol.temperature > 0:
        raise ValueError(f"lab.protocol.temperature={protocol.temperature} must be > 0: PPO "
                         "and the comparisons sample")
    total = protocol.prompt_len + protocol.max_new_tokens
    max_len = (model or {}).get("max_len")
    if max_len and total > max_len:
        raise ValueError(f"lab.protocol.prompt_len + max_new_tokens = {total} is longer than "
                         f"model.max_len={max_len}")


def check_prompts(tok, prompts, prompt_len: int, what: str) -> int:
    """Raises ValueError if any lab prompt is longer than the budget; returns the longest.

    `prompts` are lab ``Prompt`` objects or their turns, encoded as the samplers encode them.
    """
    lengths = [len(tok.chat.prompt_ids(getattr(p, "turns", p))) for p in prompts]
    longest = max(lengths, default=0)
    over = [(n, p) for n, p in zip(lengths, prompts) if n > prompt_len]
    if over:
        n, p = max(over, key=lambda t: t[0])
        family = f": a {p.family} prompt" if hasattr(p, "family") else ""
        raise ValueError(
            f"{len(over)} of {len(prompts)} lab {what} are longer than lab.protocol.prompt_len="
            f"{prompt_len} tokens (longest {n}{family}); the lab never cuts a prompt: raise "
            "--config.lab.protocol.prompt_len")
    return longest
