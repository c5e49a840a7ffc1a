"""The claims experiment (experiments/claims.py): seeds x panels, paired, with intervals.

    python -m experiments.run --config=configs/lab/claims.py --workdir=workdirs/claims
    python -m experiments.run --config=configs/lab/claims.py:headline --workdir=workdirs/headline
    python -m experiments.run --config=configs/lab/claims.py:algorithms \
        --workdir=workdirs/algorithms
    python -m experiments.run --config=configs/lab/claims.py:rlaif --workdir=workdirs/rlaif

`default`: seeds 1-3, every arm (the unbiased control, the six single-bias
panels, human_like, a noisy (tau 1.5) and a noiseless unbiased panel, and the
over-optimisation arm). `headline`: seeds 1-3 and the arms of the headline
rows only (unbiased, length, agreement, flattery, over-optimisation).
`rlaif`: seeds 1-3, the human_like panel against AI labellers
(:func:`rlaif_arms`); the report adds the labellers table. `algorithms`:
seeds 1-3, PPO, RLOO, GRPO and DPO under the length panel (its
bias shows in the headline run), against the same SFT policy, the same
labelled comparisons and (RLOO, GRPO, and DPO's proxy scores) the same reward
model; PPO's arm is the control (`config.control`), and the report adds the
algorithms table (each arm's change from SFT, and its difference from PPO). A
comma-separated list of arm names (`:unbiased,length`) runs those arms; the
table then holds the rows whose arms are all there.

The phases are the quickstart's (configs/quickstart.py) with more signal, the
same for every arm (LAB.md section 7): 64 probe samples per family (32
prompts, two samples each: the world has no more benign requests), 4
comparison pairs per training prompt (1,408 training comparisons, as many
held out) and 120 reward-model steps, best-of-n to n = 64 on a spread of 128
probe prompts. Runs resume: a run stopped for any reason is finished by
rerunning its command, and arms or seeds added later reuse what is done.
"""

import ml_collections

from configs import quickstart
from configs.lab import algorithms
from rlhf_jax.lab import labellers

SINGLE_BIASES = ("length", "agreement", "flattery", "confidence", "caution", "no_verification")


def _arm(panel: str, **fields) -> dict:
    arm = {"panel": panel, "panel_overrides": fields.pop("panel_overrides", {}),
           "reward_arm": fields.pop("reward_arm", ""), "ppo": fields.pop("ppo", {}),
           "algorithm": fields.pop("algorithm", "ppo"), "dpo": fields.pop("dpo", {})}
    arm.update(fields)  # labeller, all_pairs: only in the arms that set them
    return arm


def rlaif_arms() -> dict:
    """The human_like panel (the control) against AI labellers (rlhf_jax/lab/labellers.py):
    the default constitution; the same with every pair of each prompt's 8 samples labelled
    (28 labels instead of 4, at a tenth of a human label's price: 0.7x the control's cost);
    and a constitution whose harm principles are one badly worded "prefer the more
    cautious response". The judge knows what the seed's pretrained model knows."""
    return {"human_like": _arm("human_like"),
            "ai": _arm("human_like", labeller=labellers.ai_labeller_config("default")),
            "ai_all_pairs": _arm("human_like", all_pairs=True,
                                 labeller=labellers.ai_labeller_config("default")),
            "ai_cautious": _arm("human_like",
                                labeller=labellers.ai_labeller_config("cautious"))}


def algorithm_arms() -> dict:
    """PPO under the length panel (the control) and RLOO, GRPO and DPO under the same panel,
    reading the length arm's labels and reward model. RLOO and GRPO sample the same 32
    sequences per iteration as PPO: 8 prompts, 4 samples each."""
    group = {"group_size": 4}
    return {"length": _arm("length"),
            "length_rloo": _arm("length", reward_arm="length",
                                ppo={"ppo": {"advantage": "rloo", **group}}),
            "length_grpo": _arm("length", reward_arm="length", ppo={"ppo": {
                "advantage": "grpo", "kl_in_loss": True, "kl_estimator": "k3", **group}}),
            "length_dpo": _arm("length", reward_arm="length", algorithm="dpo")}


def arms(preset: str) -> dict:
    if preset == "algorithms":
        return algorithm_arms()
    if preset == "rlaif":
        return rlaif_arms()
    out = {"unbiased": _arm("unbiased")}
    singles = SINGLE_BIASES if preset == "default" else ("length", "agreement", "flattery")
    out.update({b: _arm(b) for b in singles})
    if preset == "default":
        out["human_like"] = _arm("human_like")
        out["noisy"] = _arm("unbiased", panel_overrides={"tau": 1.5})
        out["noiseless"] = _arm("unbiased", panel_overrides={"tau": 100.0, "tau_spread": 0.0})
    # Over-optimisation: PPO against the unbiased arm's reward model, 4x as long, at a
    # fixed beta a tenth of the default, so d = sqrt(KL) travels far (Gao et al.).
    out["overopt"] = _arm("unbiased", reward_arm="unbiased", ppo={
        "num_steps": 160, "eval_every": 10, "checkpoint_every": 20,
        "ppo": {"kl_coef": 0.015, "adaptive_kl": False}})
    return out


def get_config(arg=None):
    """`arg`: "default", "headline", "algorithms", or comma-separated arm names of the
    default preset (``unbiased,length``: those arms only, e.g. to add a claim's arms one at
    a time)."""
    preset = arg or "default"
    chosen = None
    if preset not in ("default", "headline", "algorithms", "rlaif"):
        chosen = [a.strip() for a in preset.split(",") if a.strip()]
        known = {**arms("default"), **rlaif_arms()}
        unknown = [a for a in chosen if a not in known]
        if unknown:
            raise ValueError(f"configs/lab/claims.py:{preset}: unknown arm(s) {unknown}; "
                             f"expected 'default', 'headline', 'algorithms', 'rlaif' or "
                             f"arms of {sorted(known)}")
    config = quickstart.get_config("unbiased")
    del config["panel"]  # each arm names its own
    config.experiment = "claims"
    config.preset = preset
    config.control = {"algorithms": "length", "rlaif": "human_like"}.get(
        preset, "unbiased")  # the paired arm
    config.seeds = (1, 2, 3)
    # 64 probe samples per family: the default world holds 72 benign requests, 32 of them
    # training prompts, so 32 probe prompts per family with 2 samples each.
    config.lab.prompts.probe_per_family = 32
    config.eval.eval.samples_per_prompt = 2
    config.reward.data.pairs_per_prompt = 4  # 1,408 training comparisons
    config.reward.num_steps = 120  # 120 x 32 rows: ~2.7 passes over them
    config.reward.eval_every = 40
    config.reward.checkpoint_every = 40
    config.reward.analysis.best_of_n = (1, 2, 4, 8, 16, 32, 64)
    config.reward.analysis.num_prompts = 128
    if preset in ("algorithms", "rlaif"):
        # Best-of-n is the over-optimisation rows' (not measured here): a shorter sweep.
        config.reward.analysis.best_of_n = (1, 2, 4, 8, 16)
        config.reward.analysis.num_prompts = 64
    if preset == "algorithms":
        config.dpo = algorithms.dpo_phase_config()
        # 1,408 comparisons: about 2 passes at 32 pairs a step.
        config.dpo.num_steps = 90
        config.dpo.eval_every = 30
        config.dpo.checkpoint_every = 30
    every = {**arms("default"), **rlaif_arms()} if chosen else arms(preset)
    config.arms = ml_collections.ConfigDict(
        {a: every[a] for a in chosen} if chosen else every)
    return config
