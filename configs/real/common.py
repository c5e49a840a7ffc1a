"""What the real-scale configs share: model shapes, hardware presets, phase defaults, memory.

A real config file is ``<model>_<phase>.py`` and calls ``phase_config(model,
phase, hardware)``; ``hardware`` is the ``:arg`` of ``--config=file.py:arg``,
one of ``HARDWARE``. The per-model, per-hardware numbers (mesh, batch,
accumulation) live in ``LAYOUTS``, so the files stay a docstring and a call.
Every model has the three phases of ``PHASES``; the phases of ``EXTRA_PHASES``
(DPO, GRPO) exist for the models it names.

Model shapes are the published architectures, written as constants (the
tests derive the same ModelConfig from each model's ``config.json`` with
``config_from_hf(..., dtype="bfloat16", param_dtype="float32")``): parameters
and AdamW moments in float32, matmuls in bfloat16.

Data (all local, nothing is downloaded):

- SFT: ``data.manual_dir`` holds ``train.jsonl`` (and optionally
  ``validation.jsonl``) of ``{"messages": [...]}`` or ``{"prompt", "response"}``
  lines, e.g. HH-RLHF's chosen dialogues converted (launch/README.md).
- Reward: ``data.manual_dir`` holds Anthropic HH ``train.jsonl`` and
  ``validation.jsonl`` (HH's ``test.jsonl`` renamed: the driver reads the
  ``validation`` split; any other file becomes an unused split).
- PPO: ``data.prompts_file`` is a JSONL of ``{"messages": [...]}`` prompts
  ending with a user turn (or ``{"prompt": str}``).
- DPO: the reward phase's preference files (``data.manual_dir`` of HH
  ``train.jsonl`` and ``validation.jsonl``, or preference JSONL), read the same way.
- GRPO: PPO's prompts file (``data.prompts_file``); it scores with the reward
  phase's model (``reward_from``) and trains no value model.
"""

from __future__ import annotations

import math

import ml_collections

from configs import common
from rlhf_jax import memory, sharding
from rlhf_jax.models import default_model_config
from rlhf_jax.train.ppo import ppo_config

# -- models ------------------------------------------------------------------------------------

_NUMERICS = dict(dtype="bfloat16", param_dtype="float32")

MODELS = {
    # TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T (and its chat versions).
    "tinyllama": dict(vocab_size=32000, num_layers=22, embed_dim=2048, num_heads=32,
                      num_kv_heads=4, head_dim=64, mlp_dim=5632, max_len=2048,
                      rope_theta=10000.0, norm_eps=1e-5, tied_embeddings=False, **_NUMERICS),
    # google/gemma-2b: multi-query attention, 256-wide heads, tied 256k vocabulary.
    "gemma_2b": dict(vocab_size=256000, num_layers=18, embed_dim=2048, num_heads=8,
                     num_kv_heads=1, head_dim=256, mlp_dim=16384, max_len=8192,
                     rope_theta=10000.0, norm_eps=1e-6, norm_scale_plus_one=True,
                     scale_embeddings=True, activation="gelu_tanh", tied_embeddings=True,
                     **_NUMERICS),
    # meta-llama/Llama-2-7b-hf: full multi-head attention.
    "llama2_7b": dict(vocab_size=32000, num_layers=32, embed_dim=4096, num_heads=32,
                      num_kv_heads=32, head_dim=128, mlp_dim=11008, max_len=4096,
                      rope_theta=10000.0, norm_eps=1e-5, tied_embeddings=False, **_NUMERICS),
}

# -- hardware ----------------------------------------------------------------------------------

# devices: what jax.device_count() reports; hbm_gib: memory of one device.
HARDWARE = {
    "v4-32": dict(devices=16, hbm_gib=32, what="TPU v4-32 slice: 4 hosts, 16 chips"),
    "v5e-64": dict(devices=64, hbm_gib=16, what="TPU v5e-64 slice: 16 hosts, 64 chips"),
    "gpu-8": dict(devices=8, hbm_gib=80, what="one host with 8 x 80 GB GPUs (H100/A100)"),
}
# Every model's phases; EXTRA_PHASES: phase -> the models that have it (a layout below).
PHASES = ("sft", "reward", "ppo")
EXTRA_PHASES = {"dpo": ("tinyllama", "gemma_2b"), "grpo": ("tinyllama", "gemma_2b")}
GRPO_GROUP_SIZE = 4  # samples per prompt

# (model, hardware) -> mesh (data, fsdp, tensor) and global batches. sft/reward/dpo:
# (batch_size, accumulation_steps), reward and dpo counting pairs; ppo/grpo:
# (rollout_batch_size, num_minibatches), grpo's rollout counting sequences (prompts x
# GRPO_GROUP_SIZE). Every microbatch (minibatch) splits evenly over data x fsdp, and the
# estimated total stays below the device's memory with room for XLA's temporaries.
LAYOUTS = {
    ("tinyllama", "v4-32"): dict(mesh=(1, 16, 1), sft=(32, 1), reward=(32, 2), ppo=(64, 2),
                                 dpo=(64, 4), grpo=(256, 4)),
    ("tinyllama", "v5e-64"): dict(mesh=(4, 8, 2), sft=(64, 1), reward=(64, 2), ppo=(128, 2),
                                  dpo=(64, 2), grpo=(256, 4)),
    ("tinyllama", "gpu-8"): dict(mesh=(1, 8, 1), sft=(32, 1), reward=(32, 2), ppo=(64, 2),
                                 dpo=(64, 4), grpo=(256, 8)),
    ("gemma_2b", "v4-32"): dict(mesh=(1, 16, 1), sft=(32, 2), reward=(32, 2), ppo=(64, 4),
                                dpo=(64, 4), grpo=(256, 8)),
    ("gemma_2b", "v5e-64"): dict(mesh=(1, 64, 1), sft=(64, 1), reward=(64, 1), ppo=(128, 2),
                                 dpo=(64, 1), grpo=(256, 2)),
    ("gemma_2b", "gpu-8"): dict(mesh=(1, 8, 1), sft=(32, 1), reward=(32, 2), ppo=(64, 2),
                                dpo=(64, 4), grpo=(256, 8)),
    ("llama2_7b", "v4-32"): dict(mesh=(1, 8, 2), sft=(32, 4), reward=(32, 4), ppo=(64, 4)),
    ("llama2_7b", "v5e-64"): dict(mesh=(1, 16, 4), sft=(64, 4), reward=(64, 4), ppo=(128, 4)),
    ("llama2_7b", "gpu-8"): dict(mesh=(1, 8, 1), sft=(32, 2), reward=(32, 4), ppo=(64, 4)),
}

SFT_SEQ_LEN = 1024
REWARD_SEQ_LEN = 1024
PPO_PROMPT_LEN = 256
PPO_NEW_TOKENS = 128


def model_config(model: str) -> ml_collections.ConfigDict:
    """The model fields of one of ``MODELS``."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {sorted(MODELS)}")
    return default_model_config(**MODELS[model])


def check_hardware(hardware) -> str:
    """``hardware`` itself, or a ValueError naming the valid presets."""
    if hardware not in HARDWARE:
        raise ValueError(
            f"config argument {hardware!r} is not a hardware preset; pass one of "
            f"{sorted(HARDWARE)} as --config=configs/real/<file>.py:<preset>"
        )
    return hardware


def _mesh(layout) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(zip(sharding.MESH_AXES, layout["mesh"])))


def _data(seq_len: int) -> ml_collections.ConfigDict:
    data = common.data_config("jsonl")
    data.seq_len = seq_len
    data.eval_fraction = 0.01  # used only without validation.jsonl
    # HH-RLHF has a few dialogues with an empty final turn; they are counted, not fatal.
    data.skip_bad = True
    return data


def _check_phase(model: str, phase: str, layout) -> None:
    if phase not in PHASES and phase not in EXTRA_PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of "
                         f"{list(PHASES) + list(EXTRA_PHASES)}")
    if phase in EXTRA_PHASES and (model not in EXTRA_PHASES[phase] or phase not in layout):
        raise ValueError(f"phase {phase!r} has no real config for model {model!r}; it exists "
                         f"for {', '.join(EXTRA_PHASES[phase])}")


def _ppo_phase(config, layout, phase: str) -> None:
    """PPO's fields; ``phase="grpo"``: group-normalised advantages, KL in the loss."""
    config.reward_from = ""
    config.data = ml_collections.ConfigDict({
        "source": "jsonl", "data_dir": "", "prompt_len": PPO_PROMPT_LEN,
        "prompts_file": "", "eval_fraction": 0.02})
    config.ppo = ppo_config()
    config.ppo.rollout_batch_size, config.ppo.num_minibatches = layout[phase]
    config.ppo.max_new_tokens = PPO_NEW_TOKENS
    config.ppo.policy_optim.learning_rate = 1e-6
    if phase == "grpo":
        # DeepSeekMath (Shao et al. 2024): k3 KL in the loss at a fixed beta of 0.04.
        config.ppo.update(advantage="grpo", group_size=GRPO_GROUP_SIZE, kl_in_loss=True,
                          kl_estimator="k3", kl_coef=0.04, adaptive_kl=False)
    else:
        config.value_from = "reward"
        config.ppo.kl_coef = 0.05
        config.ppo.value_optim.learning_rate = 5e-6
    config.num_steps = 200
    config.log_every, config.eval_every, config.checkpoint_every = 1, 50, 10


def phase_config(model: str, phase: str, hardware) -> ml_collections.ConfigDict:
    """The config of ``phase`` (sft, reward, ppo, dpo or grpo) for ``model`` on ``hardware``."""
    layout = LAYOUTS[(model, check_hardware(hardware))]
    _check_phase(model, phase, layout)
    config = common.base_config("ppo" if phase == "grpo" else phase)
    config.hardware = hardware
    config.mesh = _mesh(layout)
    config.model = model_config(model)
    config.tokenizer = common.tokenizer_config(vocab_size=config.model.vocab_size)
    config.keep_checkpoints = 2
    if phase == "sft":
        config.data = _data(SFT_SEQ_LEN)
        config.data.pack = True
        config.batch_size, config.optim.accumulation_steps = layout["sft"]
        config.num_steps = 1000
        config.log_every, config.eval_every, config.checkpoint_every = 10, 200, 200
        config.optim.update(learning_rate=2e-5, warmup_steps=50, weight_decay=0.0)
    elif phase == "reward":
        config.data = _data(REWARD_SEQ_LEN)
        config.batch_size, config.optim.accumulation_steps = layout["reward"]
        config.num_members = 1
        config.margin = 0.0
        config.num_steps = 2000
        config.log_every, config.eval_every, config.checkpoint_every = 10, 500, 250
        config.optim.update(learning_rate=1e-5, warmup_steps=50, weight_decay=0.0)
        config.eval = ml_collections.ConfigDict({"batch_size": config.batch_size})
    elif phase == "dpo":
        config.data = _data(REWARD_SEQ_LEN)  # the reward phase's comparisons
        config.batch_size, config.optim.accumulation_steps = layout["dpo"]  # pairs per step
        config.dpo = ml_collections.ConfigDict({"beta": 0.1, "kind": "sigmoid",
                                                "label_smoothing": 0.0})
        config.num_steps = 1000
        config.log_every, config.eval_every, config.checkpoint_every = 10, 200, 200
        config.optim.update(learning_rate=5e-7, warmup_steps=50, weight_decay=0.0)
        config.eval = ml_collections.ConfigDict({"batch_size": config.batch_size})
    else:
        _ppo_phase(config, layout, phase)
    return config


# -- memory ------------------------------------------------------------------------------------


def batch_devices(config) -> int:
    """Devices a batch is split over: the mesh's data x fsdp."""
    return config.mesh.data * config.mesh.fsdp


def memory_plan_for(config) -> dict:
    """``memory.memory_plan`` of a real config, with the resident models of its phase.

    SFT trains one model. The reward run keeps the SFT parameters it starts
    from next to the reward model (2 resident, 1 trained; rows = 2 per pair).
    DPO holds the policy and its frozen reference (2 resident, 1 trained; rows
    = 2 per pair; the reference's own forward pass is not counted). PPO holds
    policy, value, reference and reward model (4 resident, 2 trained) on
    minibatches of prompt + response tokens; GRPO (any critic-free
    ``ppo.advantage``) the same without the value model (3 resident, 1
    trained). Value and reward models are counted as full LMs (their head is
    smaller than an LM head). Accumulation (sft, reward, dpo) divides the rows
    of a step and keeps a second gradient copy.
    """
    devices = batch_devices(config)
    rules = sharding.normalize_rules(config.sharding_rules)
    mesh = {k: config.mesh[k] for k in sharding.MESH_AXES}
    if config.experiment == "ppo":
        rows = config.ppo.rollout_batch_size // config.ppo.num_minibatches
        critic = config.ppo.get("advantage", "gae") == "gae"
        return memory.memory_plan(
            config.model, mesh, rules, batch_per_device=max(rows // devices, 1),
            seq_len=config.data.prompt_len + config.ppo.max_new_tokens,
            num_models=4 if critic else 3, num_trained=2 if critic else 1)
    accumulation = int(config.optim.accumulation_steps)
    pairs = config.experiment in ("reward", "dpo")
    rows = config.batch_size * (2 if pairs else 1) // accumulation
    return memory.memory_plan(
        config.model, mesh, rules, batch_per_device=max(rows // devices, 1),
        seq_len=config.data.seq_len, num_models=2 if pairs else 1,
        num_trained=1, accumulation_steps=accumulation)


def plan_line(hardware: str, plan: dict) -> str:
    """One docstring line of a memory plan: preset, mesh, rows x tokens, GiB per device."""
    mesh = "x".join(str(plan["mesh"][a]) for a in sharding.MESH_AXES)
    gib = {key: f"{plan[key] / 2**30:.2f}" for key in
           ("params", "optimizer", "gradients", "activations", "total")}
    return (f"{hardware:6s} {mesh:6s} {plan['batch_per_device']}x{plan['seq_len']}: "
            f"params {gib['params']} opt {gib['optimizer']} grads {gib['gradients']} "
            f"acts {gib['activations']} = {gib['total']} of {HARDWARE[hardware]['hbm_gib']} GiB")


def memory_plans(get_config) -> dict[str, dict]:
    """Every hardware preset's memory plan of one config file's ``get_config``.

    ``plan_line(hw, plan)`` of each is what the file's docstring shows.
    """
    return {hw: memory_plan_for(get_config(hw)) for hw in HARDWARE}


def mesh_size(config) -> int:
    """The number of devices the config's mesh spans."""
    return math.prod(config.mesh[a] for a in sharding.MESH_AXES)
