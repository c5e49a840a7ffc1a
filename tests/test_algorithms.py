"""The pipeline's algorithm field: the phase table, configs/lab/algorithms.py and the DPO
phase's wiring. DPO end to end: tests/test_experiments.py (lab, SIGKILL resume),
tests/test_local_data.py (your files), tests/test_claims.py (algorithm arms through the
pipeline's phases and evaluations); its report section: tests/test_report.py."""

import ml_collections
import pytest

from configs.lab import algorithms
from experiments import pipeline
from rlhf_jax import phases


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


def test_dpo_without_an_sft_run_is_a_clear_error(tmp_path):
    from configs.lab import dpo as dpo_cfg
    from experiments import dpo as dpo_exp

    with pytest.raises(ValueError, match="set config.init_from to an SFT workdir"):
        dpo_exp.run(dpo_cfg.get_config(), str(tmp_path))
