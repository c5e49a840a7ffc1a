"""The runner: locked configs, overrides, presets, config.json, and every usage error."""

import json
import os
import subprocess
import sys

import pytest

from experiments import run as runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_override_preset_and_config_json(tmp_path):
    out = _run("--config=tests/toy_regression.py:long", f"--workdir={tmp_path}",
               "--config.num_steps=3", "--config.learning_rate=0.1")
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["num_steps"] == 3 and saved["learning_rate"] == 0.1
    assert saved["experiment"] == "tests.toy_regression"
    assert "workdir" in out.stdout and str(tmp_path) in out.stdout
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config=configs/missing.py"], "config file not found: configs/missing.py"),
        (["--config=tests/toy_regression.py", "--config.nope=1"],
         "unknown config field 'config.nope': config has no 'nope'; valid: batch_size"),
        (["--config=tests/toy_regression.py", "--config.experiment=zzz"],
         "unknown experiment 'zzz' (config.experiment); valid:"),
        (["--workdir=/tmp/x"], "missing --config=configs/<name>.py"),
        (["--config=tests/toy_regression.py"], "missing --workdir=<dir>"),
    ],
)
def test_usage_errors_are_one_line(args, message, tmp_path):
    if not any(a.startswith("--workdir") for a in args) and "missing --workdir" not in message:
        args = [*args, f"--workdir={tmp_path}"]
    out = _run(*args)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], out.stderr[-2000:]


def test_unknown_nested_field_lists_the_level():
    import ml_collections

    cfg_path = os.path.join(ROOT, "tests", "toy_regression.py")
    with pytest.raises(runner.UsageError, match="config has no 'dimm'; valid:"):
        runner.check_command_line([f"--config={cfg_path}", "--config.dimm=3"])
    nested = ml_collections.ConfigDict({"experiment": "x", "ppo": {"kl_coef": 0.1}})
    assert "kl_coef" in nested.ppo


def test_available_experiments_excludes_runner():
    assert "run" not in runner.available_experiments()


def test_config_round_trip(tmp_path):
    from tests import toy_regression

    config = toy_regression.get_config()
    from rlhf_jax import runtime

    path = runtime.write_config(config, str(tmp_path))
    loaded = json.load(open(path))
    assert loaded == json.loads(config.to_json(sort_keys=True))
