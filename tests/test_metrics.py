"""Console progress: a live bar on terminals, periodic lines elsewhere; project docs in sync."""

import io
import os
import re

from rlhf_jax.metrics import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_progress_prints_lines_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(10, desc="sft", every_s=3600, stream=out)
    for step in range(1, 11):
        p.update(step, {"train/loss": 2.0 / step, "note": "text is skipped"})
    lines = out.getvalue().splitlines()
    # The first update prints, then nothing until the last step (every_s is an hour).
    assert len(lines) == 2
    assert lines[0].startswith("sft 1/10 (10%)") and "loss=2" in lines[0]
    assert re.match(r"sft 10/10 \(100%\) [\d.]+ steps/s ETA 0s loss=0.2", lines[1])


def test_progress_names_metrics_in_full_where_their_last_parts_collide():
    out = io.StringIO()
    Progress(4, desc="ppo_seeds", stream=out).update(
        1, {"seed0/ppo/kl": 0.5, "seed1/ppo/kl": 0.25, "seed0/ppo/reward": 1.0})
    assert out.getvalue().split(" ETA ")[1].split()[1:] == [
        "seed0/ppo/kl=0.5", "seed1/ppo/kl=0.25", "reward=1"]


def test_ci_runs_the_readme_test_command():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    test_cmds = [ln for b in blocks for ln in b.splitlines() if "pytest" in ln]
    assert test_cmds, "README has no test command"
    assert test_cmds[0].strip() in ci
