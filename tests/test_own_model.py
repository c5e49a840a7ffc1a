"""The README's "your own model" walk-through, run as written on a tiny random Llama and Gemma.

import -> SFT -> reward -> PPO -> sample -> export -> re-import equal, with only
data paths and step counts on the command lines: the architecture, the chat
template, BOS and the context come from the checkpoint. Then what goes wrong
when a command contradicts the checkpoint.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rlhf_jax import sharding
from rlhf_jax.metrics import read_metrics
from rlhf_jax.models import hf_import
from rlhf_jax.train import lm
from tests import tiny_hf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, code=0):
    out = subprocess.run([sys.executable, "-m", "experiments.run", *args], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == code, out.stderr[-4000:]
    return out


def _walk(arch, root, full=True):
    """The README's commands (step counts cut down to test size)."""
    data, w = str(root), {k: str(root / "w" / k) for k in
                          ("base", "sft", "reward", "ppo", "samples", "export")}
    tiny_hf.make(arch, data)
    _run("--config=configs/real/import_hf.py", f"--workdir={w['base']}",
         f"--config.hf_path={data}/hf")
    _run("--config=configs/local/sft_jsonl.py", f"--workdir={w['sft']}",
         f"--config.init_from={w['base']}", f"--config.data.manual_dir={data}/sft",
         "--config.num_steps=4")
    policy = w["sft"]
    if full:
        _run("--config=configs/local/reward_jsonl.py", f"--workdir={w['reward']}",
             f"--config.init_from={w['sft']}", f"--config.data.manual_dir={data}/prefs",
             "--config.num_steps=4")
        _run("--config=configs/local/ppo_jsonl.py", f"--workdir={w['ppo']}",
             f"--config.init_from={w['sft']}", f"--config.reward_from={w['reward']}",
             f"--config.data.prompts_file={data}/prompts.jsonl", "--config.num_steps=2",
             "--config.eval_every=2", "--config.ppo.rollout_batch_size=8")
        policy = w["ppo"]
    extra = ([f"--config.reward_from={w['reward']}", f"--config.reference={w['sft']}"]
             if full else [])
    _run("--config=configs/local/sample.py", f"--workdir={w['samples']}",
         f"--config.checkpoint={policy}", f"--config.prompts_file={data}/prompts.jsonl",
         *extra)
    _run("--config=configs/local/export_hf.py", f"--workdir={w['export']}",
         f"--config.checkpoint={policy}")
    return w, policy


@pytest.mark.parametrize("arch, full", [("llama", True), ("gemma", False)])
def test_walk_through_end_to_end(arch, full, tmp_path):
    w, policy = _walk(arch, tmp_path, full)
    hf = json.load(open(tmp_path / "hf" / "config.json"))
    sft = json.load(open(os.path.join(w["sft"], "config.json")))
    # The architecture came from the checkpoint, not from the local config's defaults.
    assert (sft["model"]["vocab_size"], sft["model"]["embed_dim"], sft["model"]["max_len"]) == (
        hf["vocab_size"], hf["hidden_size"], hf["max_position_embeddings"])
    assert sft["model"]["rope_theta"] == hf["rope_theta"]
    summary = json.load(open(os.path.join(w["samples"], "report", "summary.json")))
    assert summary["responses"] == 200 and 0.0 <= summary["eos_rate"] <= 1.0
    if full:
        assert {"proxy_reward", "kl"} <= set(summary)
        samples = [json.loads(line) for line in open(os.path.join(w["ppo"], "samples.jsonl"))]
        assert {s["step"] for s in samples} == {0, 2} and "response" in samples[0]
        assert [r["step"] for r in read_metrics(w["ppo"]) if "eval/kl" in r] == [0, 2]
    # The tokenizer cannot decode the embedding's extra rows: none was ever sampled.
    from rlhf_jax.data.tokenizer import Tokenizer

    tok = Tokenizer.load(os.path.join(w["base"], "tokenizer.model"))
    assert tok.vocab_size < hf["vocab_size"]
    # The export is the policy: re-imported, every parameter is equal.
    exported = os.path.join(w["export"], "hf")
    cfg, _, params = hf_import.load_hf_checkpoint(exported)
    out = json.load(open(os.path.join(exported, "config.json")))
    assert out["architectures"] == hf["architectures"]
    assert out["max_position_embeddings"] == hf["max_position_embeddings"]
    assert os.path.exists(os.path.join(exported, "tokenizer_config.json"))
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    _, trained, _ = lm.load_policy(policy, mesh, sharding.DEFAULT_RULES)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_commands_that_contradict_the_checkpoint(tmp_path):
    data = str(tmp_path)
    tiny_hf.make("llama", data)
    base = str(tmp_path / "base")
    out = _run("--config=configs/real/import_hf.py", f"--workdir={base}",
               f"--config.hf_path={data}/hf", "--config.model.rope_theta=10000.0", code=1)
    assert "error: --config.model.rope_theta=10000.0 contradicts the checkpoint the run starts " \
           f"from ({data}/hf/config.json has rope_theta=500.0); leave the flag out" in out.stderr
    assert not os.path.exists(base)
    _run("--config=configs/real/import_hf.py", f"--workdir={base}",
         f"--config.hf_path={data}/hf")
    sft = ["--config=configs/local/sft_jsonl.py", f"--workdir={tmp_path / 'sft'}",
           f"--config.init_from={base}", f"--config.data.manual_dir={data}/sft"]
    out = _run(*sft, "--config.model.num_layers=3", code=1)
    assert (f"--config.model.num_layers=3 contradicts the checkpoint the run starts from "
            f"({base}/config.json has num_layers=2)") in out.stderr
    out = _run(*sft, "--config.model.max_len=512", code=1)
    assert "has max_len=256); leave the flag out to use the checkpoint's, or give a smaller " \
           "max_len" in out.stderr
    out = _run(*sft, "--config.model.max_len=128", code=1)  # shorter: allowed, but the rows
    assert ("config.data.seq_len=256 is longer than model.max_len=128, the model's context"
            in out.stderr)
    hf = tmp_path / "hf"
    config = json.load(open(hf / "generation_config.json"))
    json.dump({**config, "eos_token_id": 7}, open(hf / "generation_config.json", "w"))
    out = _run("--config=configs/real/import_hf.py", f"--workdir={tmp_path / 'b2'}",
               f"--config.hf_path={hf}", code=1)
    assert (f"error: {hf}/generation_config.json says eos_token_id=7 but {hf}/tokenizer.model's "
            "eos id is 2") in out.stderr
    out = _run("--config=configs/lab/eval.py", f"--workdir={tmp_path / 'ev'}",
               f"--config.checkpoint={base}", code=1)
    assert "is a run on data.source=None, not a lab run" in out.stderr
