"""The claims experiment end to end at a toy size: 2 seeds, 2 panels, paired, resumable."""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = [
    "--config=configs/lab/claims.py:unbiased,length", "--config.seeds=(1,2)",
    "--config.lab.prompts.train_per_family=8", "--config.lab.prompts.probe_per_family=4",
    "--config.lab.protocol.max_new_tokens=8",
    "--config.pretrain.num_steps=16", "--config.pretrain.eval_every=8",
    "--config.pretrain.checkpoint_every=8", "--config.pretrain.optim.warmup_steps=2",
    "--config.pretrain.batch_size=8",
    "--config.sft.num_steps=6", "--config.sft.eval_every=6", "--config.sft.checkpoint_every=6",
    "--config.sft.optim.warmup_steps=1",
    "--config.reward.data.pairs_per_prompt=1", "--config.reward.num_steps=6",
    "--config.reward.eval_every=6", "--config.reward.checkpoint_every=6",
    "--config.reward.optim.warmup_steps=1", "--config.reward.batch_size=16",
    "--config.reward.analysis.best_of_n=(1,2)", "--config.reward.analysis.num_prompts=8",
    "--config.ppo.num_steps=2", "--config.ppo.eval_every=2", "--config.ppo.checkpoint_every=2",
    "--config.ppo.ppo.rollout_batch_size=16",
]


def _run(workdir, *extra):
    out = subprocess.run([sys.executable, "-m", "experiments.run", f"--workdir={workdir}",
                          *TOY, *extra], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def claims_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("claims")
    return root, _run(str(root))


def _metrics(path):
    with open(path) as f:
        return json.load(f)["metrics"]


def test_layout_shares_one_seeds_models_between_arms(claims_run):
    root, _ = claims_run
    for seed in (1, 2):
        s = root / f"seed{seed}"
        for d in ("pretrain", "sft", "eval/base.json", "eval/sft.json", "unbiased/reward",
                  "unbiased/ppo", "unbiased/eval/rlhf.json", "length/reward", "length/ppo",
                  "length/eval/rlhf.json"):
            assert (s / d).exists(), s / d
        assert not (s / "overopt").exists()  # not an arm of this run
        # Both panels label the same SFT samples: sampled once per split, labelled twice.
        for what in ("comparisons_train", "comparisons_probe", "best_of_n"):
            assert len(glob.glob(str(s / "data" / "lab_*" / "samples" / f"{what}_*.json"))) == 1
        assert len(glob.glob(str(s / "data" / "lab_*" / "lab_preferences_train_*"))) == 2
        with open(s / "unbiased" / "reward" / "config.json") as f:
            unbiased = json.load(f)
        with open(s / "length" / "reward" / "config.json") as f:
            length = json.load(f)
        assert unbiased["panel"]["preset"] == "unbiased" and length["panel"]["preset"] == "length"
        assert {k: v for k, v in unbiased.items() if k != "panel"} == \
            {k: v for k, v in length.items() if k != "panel"}
        assert unbiased["seed"] == length["seed"] == seed


def test_claims_table_is_the_paired_difference_of_the_files(claims_run):
    root, _ = claims_run
    with open(root / "report" / "claims.json") as f:
        report = json.load(f)
    assert report["seeds"] == [1, 2] and sorted(report["arms"]) == ["length", "unbiased"]
    rows = {(r["metric"], r["treatment"]): r for r in report["rows"]}
    row = rows[("Δ mean_length (RLHF − SFT)", "length panel")]
    for seed in (1, 2):
        s = root / f"seed{seed}"
        sft = _metrics(s / "eval" / "sft.json")["mean_length"]
        want = (_metrics(s / "length" / "eval" / "rlhf.json")["mean_length"] - sft) - (
            _metrics(s / "unbiased" / "eval" / "rlhf.json")["mean_length"] - sft)
        assert row["per_seed"][str(seed)] == pytest.approx(want)
    assert row["verdict"] in ("reproduced", "opposite", "not detected")
    share = rows[("share of the proxy gain (RLHF − SFT samples, the arm's RM) that length "
                  "explains", "length panel")]
    for seed in (1, 2):
        s = root / f"seed{seed}"
        arm = {a: _metrics(s / a / "eval" / "rlhf.json") for a in ("length", "unbiased")}
        for m in arm.values():  # each arm's RM scored all of the seed's SFT samples
            assert m["proxy_gain"] == pytest.approx(m["proxy_reward"]
                                                    - m["baseline_proxy_reward"])
            assert m["baseline_mean_length"] == pytest.approx(
                _metrics(s / "eval" / "sft.json")["mean_length"])
        want = arm["length"]["length_share"] - arm["unbiased"]["length_share"]
        assert share["per_seed"][str(seed)] == pytest.approx(want)
    fmt = rows[("format_rate", "SFT")]
    assert fmt["n"] == 2 and fmt["low"] <= fmt["mean"] <= fmt["high"]
    # Only rows whose arms ran: no agreement, over-optimisation or human_like rows.
    assert not any(t.startswith(("agreement", "human_like", "long PPO")) for _, t in rows)
    md = (root / "report" / "claims.md").read_text()
    assert "| claim | treatment vs control | metric | expected | seed 1 | seed 2 |" in md
    assert "Reward models against their ceiling" in md
    assert (root / "report" / "claims.html").read_text().startswith("<!DOCTYPE html>")


def test_rerun_trains_nothing_and_rewrites_the_same_report(claims_run):
    root, _ = claims_run
    before = (root / "report" / "claims.md").read_bytes()
    out = _run(str(root))
    assert "ppo 1/" not in out.stderr and "reward 1/" not in out.stderr
    assert out.stdout.count("finished earlier") == 2 * (2 + 2 * 2)  # shared + per arm
    assert (root / "report" / "claims.md").read_bytes() == before


def test_algorithm_arms_reuse_the_panel_arms_and_get_a_table(claims_run):
    # The algorithms preset adds RLOO, GRPO and DPO arms to the same seeds and panel arms:
    # in the run above only their RL phases train. (Last in this file: it adds arms to the
    # module's run.)
    tmp_path = claims_run[0]
    toy = ["--config=configs/lab/claims.py:algorithms", *TOY[1:],
           "--config.dpo.num_steps=2", "--config.dpo.eval_every=2",
           "--config.dpo.checkpoint_every=2", "--config.dpo.batch_size=8",
           "--config.dpo.optim.warmup_steps=1"]
    out = subprocess.run([sys.executable, "-m", "experiments.run", f"--workdir={tmp_path}",
                          *toy], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    for seed in (1, 2):
        for phase in ("pretrain", "sft", "length/reward", "length/ppo"):
            assert f"pipeline: {phase.split('/')[-1]} finished earlier ({tmp_path}/seed{seed}/" \
                   f"{phase})" in out.stdout
        s = tmp_path / f"seed{seed}"
        for arm, phase in (("length_rloo", "ppo"), ("length_grpo", "ppo"),
                           ("length_dpo", "dpo")):
            assert (s / arm / phase / "checkpoints").exists() and not (s / arm / "reward").exists()
        # DPO learned from the length arm's labels: two labelled sets, one per panel.
        assert len(glob.glob(str(s / "data" / "lab_*" / "lab_preferences_train_*"))) == 2
    md = open(tmp_path / "report" / "claims.md").read()
    section = md.split("## Algorithms", 1)[1].split("\n## ", 1)[0]
    cells = []
    for part in section.split("\n| metric")[1:]:  # changes from SFT, then minus PPO's
        lines = part.splitlines()
        cols = ["metric", *[c.strip() for c in lines[0].strip(" |").split("|")]]
        row = next(ln for ln in lines if ln.startswith("| Δ mean_length"))
        cells.append(dict(zip(cols, [c.strip() for c in row.strip("|").split("|")])))
    from rlhf_jax.lab import claims as claims_lib

    def gain(arm, s):
        return (_metrics(tmp_path / f"seed{s}" / arm / "eval" / "rlhf.json")["mean_length"]
                - _metrics(tmp_path / f"seed{s}" / "eval" / "sft.json")["mean_length"])

    def cell(values):
        iv = claims_lib.interval(values)
        return f"{iv['mean']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"

    assert cells[0]["length_dpo (dpo, length)"] == cell([gain("length_dpo", s) for s in (1, 2)])
    assert cells[1]["length_dpo − length"] == cell(
        [gain("length_dpo", s) - gain("length", s) for s in (1, 2)])
    assert {"length (ppo, length)", "length_grpo (grpo, length)",
            "length_rloo (rloo, length)"} <= set(cells[0])


def test_an_ai_labeller_arm_reuses_the_samples_and_gets_the_labellers_table(claims_run):
    # An AI labeller arm on the module's seeds: it relabels the same SFT samples with the
    # judge (the seed's pretrained model's knowledge) and trains its own reward model.
    root = claims_run[0]
    out = subprocess.run([sys.executable, "-m", "experiments.run", f"--workdir={root}",
                          "--config=configs/lab/claims.py:unbiased,length,ai", *TOY[1:]],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "reward 1/" in out.stderr  # only the new arm's phases train
    for seed in (1, 2):
        s = root / f"seed{seed}"
        for what in ("comparisons_train", "comparisons_probe"):
            assert len(glob.glob(str(s / "data" / "lab_*" / "samples" / f"{what}_*.json"))) == 1
        with open(s / "ai" / "reward" / "report" / "reward_analysis.json") as f:
            report = json.load(f)
        panel, train = report["panel"], report["panel_train"]
        assert panel["labeller_kind"] == "ai"
        assert panel["labeller"]["judge_from"] == str(s / "pretrain")
        assert train["label_cost"]["labels"] == train["num_pairs"]
        assert train["label_cost"]["total_cost"] == pytest.approx(0.1 * train["num_pairs"])
        assert 0.0 <= panel["judge_right"] <= 1.0
    md = (root / "report" / "claims.md").read_text()
    section = md.split("## Labellers", 1)[1].split("\n## ", 1)[0]
    assert "| metric | ai (AI, default constitution) | length (length panel) |" in section
    assert "| their cost (human label = 1) |" in section and "ai − unbiased" in section
