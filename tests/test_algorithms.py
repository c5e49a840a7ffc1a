"""The pipeline's algorithm field: the phase table, configs/lab/algorithms.py, and a toy DPO
pipeline end to end (DPO reads the reward phase's comparisons; the report shows DPO)."""

import glob
import json
import math
import os
import subprocess
import sys

import ml_collections
import pytest

from configs.lab import algorithms
from experiments import pipeline
from rlhf_jax import phases
from rlhf_jax.metrics import read_metrics
from tests.test_pipeline import ROOT, TOY

DPO_TOY = ["--config.dpo.num_steps=4", "--config.dpo.eval_every=2",
           "--config.dpo.checkpoint_every=2", "--config.dpo.batch_size=8",
           "--config.dpo.optim.warmup_steps=1"]


def test_phase_table_per_algorithm():
    assert phases.training("ppo") == ("pretrain", "sft", "reward", "ppo")
    assert phases.training("dpo") == ("pretrain", "sft", "reward", "dpo")
    assert phases.evals("dpo")[-1] == ("rlhf", "dpo")
    assert phases.algorithm(ml_collections.ConfigDict({"ppo": {}})) == "ppo"


@pytest.mark.parametrize("config, message", [
    ({"algorithm": "a2c", "ppo": {}}, r"config.algorithm='a2c'; expected one of \['ppo', "
                                      r"'dpo'\] \(RLOO and GRPO are ppo"),
    ({"algorithm": "dpo", "ppo": {}}, "needs a config.dpo sub-config"),
])
def test_algorithm_errors(config, message):
    with pytest.raises(ValueError, match=message):
        phases.algorithm(ml_collections.ConfigDict(config))


def test_algorithms_config_sets_each_estimator():
    for name in algorithms.ALGORITHMS:
        config = algorithms.get_config(f"{name},length")
        assert config.panel.to_dict() == algorithms.get_config("ppo,length").panel.to_dict()
        assert config.algorithm == ("dpo" if name == "dpo" else "ppo")
        if name in ("rloo", "grpo"):
            assert config.ppo.ppo.advantage == name and config.ppo.ppo.group_size == 4
    with pytest.raises(ValueError, match="the algorithm is one of"):
        algorithms.get_config("ppo2")


def test_dpo_phase_reads_the_reward_phase_comparisons_settings(tmp_path):
    subs = pipeline.phase_configs(algorithms.get_config("dpo"), str(tmp_path))
    assert list(subs) == ["pretrain", "sft", "reward", "dpo"]
    assert subs["dpo"].data.to_dict() == subs["reward"].data.to_dict()
    assert subs["dpo"].panel.to_dict() == subs["reward"].panel.to_dict()
    assert subs["dpo"].init_from == subs["reward"].init_from == str(tmp_path / "sft")


def test_toy_dpo_pipeline_end_to_end(tmp_path):
    root = tmp_path / "dpo"
    cmd = [sys.executable, "-m", "experiments.run", f"--workdir={root}",
           "--config=configs/lab/algorithms.py:dpo", *TOY[1:], *DPO_TOY]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    assert not os.path.exists(root / "ppo")
    # One labelled dataset per split: DPO read the pairs the reward model was trained on.
    for split in ("train", "probe"):
        assert len(glob.glob(str(root / "data" / "lab_*" / f"lab_preferences_{split}_*"))) == 1
    records = read_metrics(str(root / "dpo"))
    first = records[0]
    assert first["step"] == 0 and first["pairs/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["pairs/accuracy"] == 0.5 and "eval/gold_reward" in first
    assert records[-1]["step"] == 4 and "train/margin" in records[-1]
    rlhf = json.load(open(root / "eval" / "rlhf.json"))["metrics"]
    assert rlhf["kl"] > 0 and "proxy_reward" in rlhf
    md = open(root / "report" / "index.md").read()
    assert "## DPO" in md and "## PPO" not in md
    assert f"{records[-1]['pairs/accuracy']:.3f}" in md.split("## DPO", 1)[1]


def test_dpo_without_an_sft_run_is_a_clear_error(tmp_path):
    from configs.lab import dpo as dpo_cfg
    from experiments import dpo as dpo_exp

    with pytest.raises(ValueError, match="set config.init_from to an SFT workdir"):
        dpo_exp.run(dpo_cfg.get_config(), str(tmp_path))
