"""The whole lab pipeline at a toy size: every phase, the report, and an idempotent rerun."""

import json
import os
import re
import subprocess
import sys

import pytest

from rlhf_jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = [
    "--config=configs/quickstart.py",
    "--config.lab.prompts.train_per_family=8", "--config.lab.prompts.probe_per_family=4",
    "--config.pretrain.num_steps=16", "--config.pretrain.eval_every=8",
    "--config.pretrain.checkpoint_every=8", "--config.pretrain.optim.warmup_steps=2",
    "--config.pretrain.batch_size=8",
    "--config.sft.num_steps=6", "--config.sft.eval_every=6", "--config.sft.checkpoint_every=6",
    "--config.sft.optim.warmup_steps=1", "--config.sft.batch_size=8",
    "--config.sft.eval.max_new_tokens=8",
    "--config.reward.data.pairs_per_prompt=1", "--config.reward.data.max_new_tokens=8",
    "--config.reward.num_steps=6", "--config.reward.eval_every=6",
    "--config.reward.checkpoint_every=6", "--config.reward.optim.warmup_steps=1",
    "--config.reward.batch_size=16", "--config.reward.analysis.best_of_n=(1,2,4)",
    "--config.reward.analysis.sampling.max_new_tokens=8",
    "--config.ppo.num_steps=4", "--config.ppo.eval_every=2", "--config.ppo.checkpoint_every=2",
    "--config.ppo.ppo.rollout_batch_size=16", "--config.ppo.ppo.max_new_tokens=8",
    "--config.eval.eval.max_new_tokens=8",
]


def _run(workdir):
    out = subprocess.run([sys.executable, "-m", "experiments.run", f"--workdir={workdir}", *TOY],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    first = _run(str(root))
    return root, first


def test_every_phase_wrote_its_metrics(pipeline):
    root, out = pipeline
    expected = {"pretrain": "train/loss", "sft": "eval/format_rate", "reward": "eval/accuracy",
                "ppo": "ppo/kl_coef"}
    for phase, name in expected.items():
        records = read_metrics(str(root / phase))
        assert any(name in r for r in records), (phase, name)
    for name in ("base", "sft", "rlhf"):
        assert "gold_reward" in json.load(open(root / "eval" / f"{name}.json"))["metrics"]
    timings = json.load(open(root / "timings.json"))
    assert set(timings) >= {"pretrain", "sft", "reward", "ppo"}
    assert "wall time per phase" in out.stdout


def _table(md: str, heading: str) -> dict[str, list[str]]:
    section = md.split(heading, 1)[1]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")]
    table = {}
    for ln in rows[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        table[cells[0]] = cells[1:]
        if not ln.startswith("|"):
            break
    return table


def test_report_numbers_come_from_the_run_files(pipeline):
    root, _ = pipeline
    md = open(root / "report" / "index.md").read()
    html = open(root / "report" / "index.html").read()
    assert "data:image/png;base64," in html and 'src="http' not in html
    table = _table(md, "## Probes")
    evals = [json.load(open(root / "eval" / f"{n}.json"))["metrics"] for n in
             ("base", "sft", "rlhf")]
    for metric in ("gold_reward", "format_rate", "mean_length", "proxy_reward"):
        for cell, source in zip(table[metric], evals):
            assert cell == f"{source[metric]:.3f}", (metric, cell, source[metric])
    reward = [r for r in read_metrics(str(root / "reward")) if "eval/accuracy" in r][-1]
    assert re.search(rf"\| eval/accuracy \| {reward['eval/accuracy']:.3f} \|", md)


def test_rerun_trains_nothing_and_rewrites_the_same_report(pipeline):
    root, _ = pipeline
    before = {p: open(root / "report" / p, "rb").read() for p in ("index.md", "index.html")}
    steps = {ph: len(read_metrics(str(root / ph))) for ph in ("pretrain", "sft", "reward", "ppo")}
    out = _run(str(root))
    for phase in ("pretrain", "sft", "reward", "ppo"):
        assert f"pipeline: {phase} finished earlier" in out.stdout
        assert len(read_metrics(str(root / phase))) == steps[phase]
    for p, content in before.items():
        assert open(root / "report" / p, "rb").read() == content


def test_compare_table_reads_the_run(pipeline):
    from rlhf_jax import compare

    root, _ = pipeline
    text = compare.table([str(root)])
    reward = [r for r in read_metrics(str(root / "reward")) if "eval/accuracy" in r][-1]
    rlhf = json.load(open(root / "eval" / "rlhf.json"))["metrics"]
    assert f"| RM held-out accuracy vs panel labels | {reward['eval/accuracy']:.2f} |" in text
    assert f"| KL(RLHF ‖ SFT) per sequence, nats | {rlhf['kl']:.2f} |" in text
    assert text.splitlines()[0] == "| figure | human_like |"
