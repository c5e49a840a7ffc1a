"""Every config file loads, names an existing experiment, and its model config validates."""

import glob
import os

import pytest

from experiments import run as runner
from rlhf_jax.lab.annotators import PRESETS
from rlhf_jax.models import ModelConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP = {"__init__.py", "common.py", "_base.py"}
FILES = sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"),
                                                recursive=True)
    if os.path.basename(p) not in SKIP and "/real/" not in p  # real configs: test_real_configs
)
WITH_PANEL = ("configs/quickstart.py", "configs/lab/pipeline.py", "configs/lab/reward.py",
              "configs/lab/full.py")


def _models(config):
    for key in config.keys():
        value = config[key]
        if key == "model":
            yield value
        elif hasattr(value, "keys"):
            yield from _models(value)


@pytest.mark.parametrize("path", FILES)
def test_config_loads(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runner.check_command_line([f"--config={path}"])
    config = runner._load_config_for_check(path, [f"--config={path}"])
    for model in _models(config):
        ModelConfig.from_config(model).validate()


@pytest.mark.parametrize("path", WITH_PANEL)
def test_every_panel_preset_loads(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    for preset in PRESETS:
        config = runner._load_config_for_check(path, [f"--config={path}:{preset}"])
        panel = config.panel if "panel" in config else config.reward.panel
        assert panel.preset == preset
