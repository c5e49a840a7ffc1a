"""The whole lab pipeline at a toy size: every phase, the report, an idempotent rerun, and
what a rerun with another config, an extension, a kill, a SIGTERM between phases and a
damaged checkpoint do to it."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

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
    "--config.lab.protocol.max_new_tokens=8",
    "--config.reward.data.pairs_per_prompt=1",
    "--config.reward.num_steps=6", "--config.reward.eval_every=6",
    "--config.reward.checkpoint_every=6", "--config.reward.optim.warmup_steps=1",
    "--config.reward.batch_size=16", "--config.reward.analysis.best_of_n=(1,2,4)",
    "--config.ppo.num_steps=4", "--config.ppo.eval_every=2", "--config.ppo.checkpoint_every=2",
    "--config.ppo.ppo.rollout_batch_size=16",
]


def _cmd(workdir, *extra, config="configs/quickstart.py"):
    return [sys.executable, "-m", "experiments.run", f"--workdir={workdir}",
            f"--config={config}", *TOY[1:], *extra]


def _run(workdir, *extra, code=0, config="configs/quickstart.py"):
    out = subprocess.run(_cmd(workdir, *extra, config=config), cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == code, out.stderr[-4000:]
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
            want = f"{source[metric]:.3f}"
            if source.get(f"se/{metric}") is not None:  # probe rates carry their se
                want += f" ± {source[f'se/{metric}']:.3f}"
            assert cell == want, (metric, cell, source[metric])
    assert table["proxy_reward"][2] == f"{evals[2]['proxy_reward']:.3f}"  # no se: not a probe
    assert table["gold_reward"][1].endswith(f" ± {evals[1]['se/gold_reward']:.3f}")
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


def _error(out) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return lines[0]


def _bytes(root, *rels):
    return {rel: open(os.path.join(root, rel), "rb").read() for rel in rels}


def test_another_seed_or_panel_is_refused_before_anything_runs(pipeline):
    root, _ = pipeline
    kept = ("config.json", "fingerprint.json", "report/index.md", "eval/rlhf.json")
    before = _bytes(root, *kept)
    t0 = time.time()
    out = _run(str(root), "--config.seed=1", code=1)
    assert _error(out) == (f"error: workdir {root} holds a run of another config: seed 0 -> 1. "
                           "Use a new --workdir for this config")
    out = _run(str(root), config="configs/quickstart.py:unbiased", code=1)
    assert "holds a run of another config: panel.preset 'human_like' -> 'unbiased'" in _error(out)
    assert time.time() - t0 < 60  # refused at the start, not after training
    assert _bytes(root, *kept) == before


def test_extend_ppo_continues_it_and_recomputes_its_evaluation(pipeline, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(pipeline[0], root)  # a moved pipeline keeps its fingerprints
    evals = _bytes(root, "eval/base.json", "eval/sft.json", "eval/rlhf.json")
    out = _run(str(root), "--config.ppo.num_steps=6", code=1)
    assert _error(out).endswith("ppo.num_steps 4 -> 6. Use a new --workdir for this config or "
                                "add --extend to continue this run to the new num_steps")
    out = _run(str(root), "--config.ppo.num_steps=6", "--extend")
    for phase in ("pretrain", "sft", "reward"):
        assert f"pipeline: {phase} finished earlier" in out.stdout
    assert [r["step"] for r in read_metrics(str(root / "ppo")) if "eval/kl" in r] == [0, 2, 4, 6]
    after = _bytes(root, "eval/base.json", "eval/sft.json", "eval/rlhf.json")
    assert after["eval/base.json"] == evals["eval/base.json"]
    assert after["eval/sft.json"] == evals["eval/sft.json"]
    assert after["eval/rlhf.json"] != evals["eval/rlhf.json"]  # PPO at step 6, not 4
    md = open(root / "report" / "index.md").read()
    assert "extended with `--extend`: ppo.num_steps 4 -> 6" in md
    out = _run(str(root), "--config.ppo.num_steps=6", "--config.pretrain.num_steps=20",
               "--extend", code=1)
    assert _error(out) == ("error: --extend of pretrain.num_steps (16 -> 20) would leave sft/, "
                           "reward/, ppo/ trained from the old pretrain; extend only the last "
                           "phase, or use a new --workdir")


def test_damaged_final_checkpoint_of_a_finished_phase_is_redone(pipeline, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(pipeline[0], root)
    step_dir = root / "ppo" / "checkpoints" / "4"
    with open(step_dir / "policy" / "_METADATA", "w") as f:
        f.write("{")
    out = _run(str(root))
    assert f"pipeline: checkpoint {step_dir} cannot be read (" in out.stdout
    assert f"moved it to {root}/ppo/checkpoints.unreadable/4 and resumed from step 2" in out.stderr
    assert read_metrics(str(root / "ppo")) == read_metrics(str(pipeline[0] / "ppo"))


def _wait_for_line(path, text, proc, timeout=300):
    t0 = time.time()
    while text not in open(path).read():
        assert proc.poll() is None, open(path).read()[-3000:]
        assert time.time() - t0 < timeout, f"timed out waiting for {text!r}"
        time.sleep(0.05)


def test_sigkill_then_sigterm_between_phases_resume_to_the_same_run(pipeline, tmp_path):
    root, log = tmp_path / "root", tmp_path / "stdout.txt"

    def start():
        with open(log, "w") as f:
            return subprocess.Popen(_cmd(str(root)), cwd=ROOT, stdout=f,
                                    stderr=subprocess.PIPE, text=True)

    proc = start()  # killed outright in the middle of SFT
    _wait_for_line(log, "pipeline: sft ->", proc)
    _wait_for_line(log, "sft: init_from", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = start()  # SIGTERM as the reward phase samples its comparisons
    _wait_for_line(log, "pipeline: reward ->", proc)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert time.time() - t0 < 30
    assert "SIGTERM: stopped while" in err and "rerun the same command to resume." in err
    assert not os.path.exists(root / "ppo")
    _run(str(root))
    for phase in ("pretrain", "sft", "reward", "ppo"):
        assert read_metrics(str(root / phase)) == read_metrics(str(pipeline[0] / phase)), phase
    attempts = json.load(open(root / "attempts.json"))
    assert [a["outcome"] for a in attempts["sft"]] == ["killed", "finished"]
    assert [a["outcome"] for a in attempts["reward"]] == ["preempted", "finished"]
    timings = json.load(open(root / "timings.json"))
    assert timings["sft"] == round(sum(a["seconds"] for a in attempts["sft"]), 1)
    assert attempts["sft"][0]["seconds"] > 0
