"""Runs survive being killed: SIGKILL after a checkpoint, SIGTERM at any moment."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmd(workdir, *overrides):
    return [
        sys.executable, "-m", "experiments.run",
        "--config=tests/toy_regression.py", f"--workdir={workdir}", *overrides,
    ]


def _run(workdir, *overrides):
    out = subprocess.run(_cmd(workdir, *overrides), cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _wait_for(predicate, proc, timeout=120):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, "the run ended before the test could interrupt it"
        assert time.time() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.05)


def _final_w(workdir):
    return np.load(os.path.join(workdir, "final_w.npy"))


def test_sigkill_after_checkpoint_resumes_bitwise(tmp_path):
    ref, killed = str(tmp_path / "ref"), str(tmp_path / "killed")
    _run(ref)
    slow = ["--config.sleep_s=0.05"]
    proc = subprocess.Popen(_cmd(killed, *slow), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _wait_for(lambda: os.path.isdir(os.path.join(killed, "checkpoints", "10")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "final_w.npy"))
    out = _run(killed, *slow)
    assert "resumed at step" in out.stdout
    np.testing.assert_array_equal(_final_w(ref), _final_w(killed))
    # The metrics file reads like an uninterrupted run's: every step once.
    steps = [int(line.split(",")[0].split(":")[1]) for line in
             open(os.path.join(killed, "metrics.jsonl"))]
    assert steps == list(range(1, 41))


def test_sigterm_writes_checkpoint_at_signal_then_resumes(tmp_path):
    ref, term = str(tmp_path / "ref"), str(tmp_path / "term")
    _run(ref)
    # Periodic saves off: the only checkpoint can come from the signal.
    opts = ["--config.sleep_s=0.05", "--config.checkpoint_every=0"]
    proc = subprocess.Popen(_cmd(term, *opts), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(term, "metrics.jsonl")
    _wait_for(lambda: os.path.exists(metrics) and len(open(metrics).readlines()) >= 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM: checkpoint saved at step" in err
    saved = [int(d) for d in os.listdir(os.path.join(term, "checkpoints")) if d.isdigit()]
    assert len(saved) == 1 and 5 <= saved[0] < 40
    _run(term, *opts)
    np.testing.assert_array_equal(_final_w(ref), _final_w(term))
