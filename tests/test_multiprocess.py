"""Two CPU processes x 4 devices run the real chain's first steps like one process x 8 devices.

A tiny random checkpoint is written in Hugging Face layout (with a SentencePiece
tokenizer), imported by ``import_hf`` in two processes, then SFT'd with the
real TinyLlama config (gpu-8 preset: an 8-device FSDP mesh) shrunk to a toy
model: once in one process with 8 fake devices, once in two processes of 4
devices each that stop after 3 steps and are rerun to resume. jax's CPU
backend runs cross-process collectives through Gloo, so the two-process mesh
computes the same global steps, and the losses must match.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from rlhf_jax.data.tokenizer import Tokenizer
from rlhf_jax.metrics import read_metrics
from rlhf_jax.models import ModelConfig, hf_export, init

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(vocab_size=96, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2, head_dim=8,
            mlp_dim=64, max_len=128, rope_theta=10000.0, norm_eps=1e-5, tied_embeddings=False,
            dtype="float32", param_dtype="float32")
MODEL_FLAGS = [f"--config.model.{k}={v}" for k, v in TINY.items()]
SFT_FLAGS = ["--config=configs/real/tinyllama_sft.py:gpu-8", "--config.data.seq_len=64",
             "--config.batch_size=16", "--config.log_every=1", "--config.eval_every=100",
             "--config.checkpoint_every=3", "--config.optim.warmup_steps=0",
             "--config.optim.schedule=constant", "--config.optim.learning_rate=3e-3",
             *MODEL_FLAGS]
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _launch(args, workdir, processes: int) -> list[str]:
    """Runs experiments.run in `processes` processes; returns each one's stdout."""
    cmd = [sys.executable, "-m", "experiments.run", f"--workdir={workdir}", *args]
    if processes == 1:
        out = subprocess.run(cmd, cwd=ROOT, env=_env(8), capture_output=True, text=True,
                             timeout=TIMEOUT)
        assert out.returncode == 0, out.stderr[-3000:]
        return [out.stdout]
    address = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen(
        cmd + [f"--coordinator_address={address}", f"--num_processes={processes}",
               f"--process_id={i}"],
        cwd=ROOT, env=_env(8 // processes), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(processes)]
    outs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, stderr[-3000:]
            outs.append(stdout)
    finally:
        for p in procs:  # a failed peer leaves the other waiting on the coordinator
            if p.poll() is None:
                p.kill()
                p.wait()
    return outs


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """(root, the imported workdir, the SFT data folder) shared by the tests."""
    root = tmp_path_factory.mktemp("mp")
    facts = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")
             for a in range(12) for b in range(8)]
    data = root / "sft_data"
    data.mkdir()
    with open(data / "train.jsonl", "w") as f:
        for q, a in facts[:88]:
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": a}]}) + "\n")
    with open(data / "validation.jsonl", "w") as f:
        for q, a in facts[88:]:
            f.write(json.dumps({"prompt": q, "response": a}) + "\n")
    tok = Tokenizer.train([f"User: {q}\nAssistant: {a}" for q, a in facts], TINY["vocab_size"])
    tok_path = str(root / "tok.model")
    tok.save(tok_path)
    cfg = ModelConfig(**TINY)
    _, params = init(cfg, jax.random.key(3))
    hf = str(root / "hf")
    hf_export.export_hf(hf, cfg, params, tokenizer_path=tok_path,
                        architecture="LlamaForCausalLM")
    imported = str(root / "base")
    outs = _launch(["--config=configs/real/import_hf.py:tinyllama", f"--config.hf_path={hf}",
                    *MODEL_FLAGS], imported, 2)
    assert "import_hf: imported" in outs[0]
    return root, imported, str(data)


def _writers(item_dir) -> set[int]:
    """The processes that wrote shard files of an Orbax item (its ocdbt.process_<i> folders)."""
    return {int(d.rsplit("_", 1)[1]) for d in os.listdir(item_dir)
            if d.startswith("ocdbt.process_")}


def _losses(workdir) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


def test_import_in_two_processes_writes_params_and_tokenizer(base):
    root, imported, _ = base
    assert os.path.exists(os.path.join(imported, "tokenizer.model"))
    step_dir = os.path.join(imported, "checkpoints", "0")
    assert os.path.isdir(os.path.join(step_dir, "params"))
    # Both processes wrote their own shard files of the parameters (Orbax OCDBT layout).
    assert _writers(os.path.join(step_dir, "params")) == {0, 1}
    # Rerunning the import is a no-op that says so.
    hf = str(root / "hf")
    out = _launch(["--config=configs/real/import_hf.py:tinyllama", f"--config.hf_path={hf}",
                   *MODEL_FLAGS], imported, 1)
    assert "import_hf: already imported" in out[0]


def test_two_process_sft_resumes_and_matches_one_process(base):
    root, imported, data = base
    common = [*SFT_FLAGS, f"--config.init_from={imported}", f"--config.data.manual_dir={data}"]
    one, two = str(root / "sft_one"), str(root / "sft_two")
    _launch([*common, "--config.num_steps=6"], one, 1)
    outs = _launch([*common, "--config.num_steps=3"], two, 2)
    assert "2 process(es), 8 device(s)" in outs[0]
    assert "init_from" in outs[0] and "at step 0 of 3" in outs[0]
    assert not outs[1].strip().startswith("experiment")  # only process 0 reports
    outs = _launch([*common, "--config.num_steps=6", "--extend"], two, 2)
    assert "resumed at step 3 of 6" in outs[0]

    ref, got = _losses(one), _losses(two)
    assert sorted(ref) == sorted(got) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([got[s] for s in range(1, 7)], [ref[s] for s in range(1, 7)],
                               rtol=2e-5)
    assert ref[6] < ref[1]  # the steps are real training steps, not a constant
    # Equal losses also show the batch split: each process fed its own 8 of the 16 rows.
    for step in ("3", "6"):
        assert _writers(os.path.join(two, "checkpoints", step, "opt_state")) == {0, 1}
