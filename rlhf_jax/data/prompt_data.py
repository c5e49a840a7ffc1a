"""RL prompts (PPO, RLOO, GRPO): the prompts of ``config.data.source``, and how to score them.

:func:`load_prompts` looks the source up in :mod:`rlhf_jax.data.sources` and
returns its :class:`~rlhf_jax.data.sources.PromptSet`: training and held-out
prompts as chat turns, and the source's own evaluation of responses to the
held-out ones. This module registers "jsonl" prompts: a file of ``{"prompt"}``
or ``{"messages"}`` records (``config.data.prompts_file``), read as every
reader reads them (:func:`rlhf_jax.data.jsonl.read_prompt_jsonl`, system turns
included), the last ``config.data.eval_fraction`` of them held out, nothing
to evaluate beyond the proxy reward and the KL. The lab registers "lab": its
training prompts and its probe set, scored by the probe metrics.
"""

from __future__ import annotations

from rlhf_jax import ledger
from rlhf_jax.data import jsonl, sources


def load_jsonl_prompts(config, workdir: str, tok) -> sources.PromptSet:
    """The "jsonl" source's prompts (see the module docstring); `tok` is not needed."""
    del workdir, tok
    path = config.data.prompts_file
    result = jsonl.read_prompt_jsonl(path, skip_bad=config.data.get("skip_bad", False))
    turns = [r.turns for r in result.records]
    bad = sum(result.skipped.values())
    ledger.record("prompt records", total=len(turns) + bad, skipped=bad,
                  why=f"bad lines left out (data.skip_bad): {result.skipped}" if bad else "")
    cut = max(1, int(len(turns) * config.data.eval_fraction))
    if len(turns) <= cut:
        raise jsonl.DataError(
            f"{path}: {len(turns)} prompt(s); PPO needs at least {cut + 1} (the last "
            f"{cut} are held out for evaluation)")
    return sources.PromptSet(turns[:-cut], turns[-cut:])


sources.register(sources.Source("jsonl", prompts=load_jsonl_prompts))


def load_prompts(config, workdir: str, tok) -> sources.PromptSet:
    """The RL prompts of ``config.data.source`` (:mod:`rlhf_jax.data.sources`); `tok` is the
    policy's tokenizer, for sources that check their prompts against the budget."""
    return sources.get(config.data.source, "prompts")(config, workdir, tok)
