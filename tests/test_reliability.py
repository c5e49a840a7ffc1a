"""Runs that cannot lie, on the toy experiment: each case is a real process, killed or not.

SIGKILL after a checkpoint and SIGTERM at any moment (in a step, in an
evaluation), a rerun with another config, an extension, a double launch, a
lock left by a killed run, a damaged checkpoint, a full disk, and the
one-line errors.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rlhf_jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cmd(workdir, *args):
    return [sys.executable, "-m", "experiments.run", "--config=tests/toy_regression.py",
            f"--workdir={workdir}", *args]


def _run(workdir, *args, env=None):
    return subprocess.run(_cmd(workdir, *args), cwd=ROOT, capture_output=True, text=True,
                          env=env)


def _ok(workdir, *args):
    out = _run(workdir, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _error_line(out) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    return lines[0]


def _wait_for(predicate, proc, timeout=120):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, "the run ended before the test could act"
        assert time.time() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.02)


def _steps(workdir):
    return [r["step"] for r in read_metrics(workdir)]


def _final_w(workdir):
    return np.load(os.path.join(workdir, "final_w.npy"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = str(tmp_path_factory.mktemp("ref") / "run")
    _ok(ref)
    return ref


def test_sigkill_after_checkpoint_resumes_bitwise(reference, tmp_path):
    killed = str(tmp_path / "killed")
    slow = "--config.sleep_s=0.05"
    proc = subprocess.Popen(_cmd(killed, slow), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _wait_for(lambda: os.path.isdir(os.path.join(killed, "checkpoints", "10")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(killed, "final_w.npy"))
    out = _ok(killed, slow)
    assert "resumed at step" in out.stdout
    np.testing.assert_array_equal(_final_w(reference), _final_w(killed))
    assert _steps(killed) == list(range(1, 41))  # every step once, as if never killed


def test_sigterm_writes_checkpoint_at_signal_then_resumes(reference, tmp_path):
    term = str(tmp_path / "term")
    # Periodic saves off: the only checkpoint can come from the signal.
    opts = ["--config.sleep_s=0.05", "--config.checkpoint_every=0"]
    proc = subprocess.Popen(_cmd(term, *opts), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_steps(term)) >= 5, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM: checkpoint saved at step" in err
    saved = [int(d) for d in os.listdir(os.path.join(term, "checkpoints")) if d.isdigit()]
    assert len(saved) == 1 and 5 <= saved[0] < 40
    _ok(term, *opts)
    np.testing.assert_array_equal(_final_w(reference), _final_w(term))


def test_rerun_with_another_config_is_refused_and_changes_nothing(reference, tmp_path):
    work = str(tmp_path / "w")
    shutil.copytree(reference, work)  # a moved workdir keeps its fingerprint
    before = {f: open(os.path.join(work, f), "rb").read() for f in
              ("config.json", "fingerprint.json", "metrics.jsonl")}
    out = _run(work, "--config.learning_rate=0.1", "--config.seed=3")
    assert out.returncode == 1
    line = _error_line(out)
    assert line == (f"error: workdir {work} holds a run of another config: seed 0 -> 3, "
                    "learning_rate 0.05 -> 0.1. Use a new --workdir for this config")
    for f, content in before.items():
        assert open(os.path.join(work, f), "rb").read() == content
    # Cadence is not part of the fingerprint: the same run, logged less often.
    _ok(work, "--config.log_every=5", "--config.checkpoint_every=20")


def test_num_steps_needs_extend_then_continues(reference, tmp_path):
    work = str(tmp_path / "w")
    shutil.copytree(reference, work)
    out = _run(work, "--config.num_steps=50")
    assert out.returncode == 1
    assert _error_line(out).endswith(
        "num_steps 40 -> 50. Use a new --workdir for this config or add --extend to continue "
        "this run to the new num_steps")
    out = _ok(work, "--config.num_steps=50", "--extend")
    assert "extending num_steps 40 -> 50 (--extend)" in out.stdout
    assert "resumed at step 40" in out.stdout
    assert _steps(work) == list(range(1, 51))
    record = json.load(open(os.path.join(work, "fingerprint.json")))
    assert record["fields"]["num_steps"] == 50
    assert record["extended"] == [{"num_steps": [40, 50]}]
    out = _run(work, "--config.num_steps=45", "--extend")
    assert "num_steps=45 is below the latest checkpoint" in _error_line(out)


def test_a_failed_first_attempt_does_not_bind_the_workdir(tmp_path):
    work = str(tmp_path / "w")
    out = _run(work, "--config.fail_at=3", "--config.checkpoint_every=10")
    assert _error_line(out) == "error: toy: config.fail_at=3"
    assert out.returncode == 1
    out = _ok(work, "--config.learning_rate=0.1")
    assert "the earlier attempt saved no checkpoint and had another config" in out.stdout
    assert _steps(work) == list(range(1, 41))


def test_second_launch_is_refused_while_the_first_runs(reference, tmp_path):
    work = str(tmp_path / "w")
    slow = "--config.sleep_s=0.4"  # 16 s: the second launch starts well before the end
    first = subprocess.Popen(_cmd(work, slow), cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(_steps(work)) >= 2, first)
    second = _run(work, slow)
    assert second.returncode == 1
    line = _error_line(second)
    assert line.startswith(f"error: workdir {work} is in use by pid {first.pid} on host ")
    assert line.endswith("; wait for that run to end or stop it (one process per workdir)")
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    assert _steps(work) == list(range(1, 41))
    np.testing.assert_array_equal(_final_w(reference), _final_w(work))


def test_lock_of_a_killed_run_is_taken_over(reference, tmp_path):
    work = str(tmp_path / "w")
    proc = subprocess.Popen(_cmd(work, "--config.sleep_s=0.05"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for(lambda: os.path.isdir(os.path.join(work, "checkpoints", "10")), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    out = _ok(work, "--config.sleep_s=0.05")
    assert f"took over the lock of pid {proc.pid} on host" in out.stdout
    assert "which is no longer running" in out.stdout
    np.testing.assert_array_equal(_final_w(reference), _final_w(work))
    assert _steps(work) == list(range(1, 41))


def test_sigterm_during_an_evaluation_saves_that_step(tmp_path):
    ref, work = str(tmp_path / "ref"), str(tmp_path / "w")
    opts = ["--config.eval_every=5", "--config.checkpoint_every=0",
            "--config.eval_sleep_s=0.8"]
    _ok(ref, *opts)
    proc = subprocess.Popen(_cmd(work, *opts), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Step 5's evaluation takes 0.8 s: the signal lands inside it.
    _wait_for(lambda: 4 in _steps(work), proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM: checkpoint saved at step 5 (toy); rerun the same command to resume." in err
    assert os.listdir(os.path.join(work, "checkpoints")) == ["5"]
    assert "eval/w_norm" in read_metrics(work)[-1] and _steps(work)[-1] == 5
    _ok(work, *opts)
    np.testing.assert_array_equal(_final_w(ref), _final_w(work))
    assert read_metrics(work) == read_metrics(ref)


def _damage_data(step_dir):
    for sub in ("params", "opt_state"):
        d = os.path.join(step_dir, sub, "d")
        for name in os.listdir(d):
            with open(os.path.join(d, name), "r+b") as f:
                f.truncate(20)


def _garbage_metadata(step_dir):
    with open(os.path.join(step_dir, "params", "_METADATA"), "w") as f:
        f.write("not json")


@pytest.mark.parametrize("damage", [_damage_data, _garbage_metadata])
def test_damaged_latest_checkpoint_falls_back_to_the_step_before(reference, tmp_path, damage):
    work = str(tmp_path / "w")
    shutil.copytree(reference, work)
    os.remove(os.path.join(work, "final_w.npy"))
    damage(os.path.join(work, "checkpoints", "40"))
    out = _ok(work)
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("checkpoint:")]
    assert len(lines) == 1 and len(lines[0]) < 600, out.stderr[-3000:]
    assert lines[0].startswith(f"checkpoint: step 40 in {work}/checkpoints cannot be read (")
    assert lines[0].endswith(f"moved it to {work}/checkpoints.unreadable/40 and resumed from "
                             "step 30")
    assert "resumed at step 30" in out.stdout
    np.testing.assert_array_equal(_final_w(reference), _final_w(work))
    assert _steps(work) == list(range(1, 41))


def test_every_checkpoint_damaged_is_one_line_and_nothing_moves(reference, tmp_path):
    work = str(tmp_path / "w")
    shutil.copytree(reference, work)
    for step in ("30", "40"):
        _garbage_metadata(os.path.join(work, "checkpoints", step))
    out = _run(work)
    assert out.returncode == 1
    line = _error_line(out)
    assert line.startswith(f"error: checkpoint steps 40 and 30 in {work}/checkpoints both fail "
                           "to restore (")
    assert line.endswith("so the config probably differs from the run that wrote them: use a "
                         "new workdir")
    assert sorted(os.listdir(os.path.join(work, "checkpoints"))) == ["30", "40"]


def test_errors_are_one_line_and_the_traceback_is_there_on_request(tmp_path):
    out = _run(str(tmp_path / "a"), "--config.fail_at=2", "--config.fail_kind=bug")
    line = _error_line(out)
    assert line.startswith("error: TypeError: unsupported operand type(s) for +: 'NoneType' "
                           "and 'int' (at tests/toy_regression.py:")
    assert line.endswith("[RLHF_JAX_TRACEBACK=1 shows the traceback]")
    out = _run(str(tmp_path / "b"), "--config.fail_at=2", "--traceback")
    assert "Traceback (most recent call last)" in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "error: toy: config.fail_at=2"
    env = {**os.environ, "RLHF_JAX_TRACEBACK": "1"}
    out = _run(str(tmp_path / "c"), "--config.fail_at=2", env=env)
    assert "Traceback (most recent call last)" in out.stderr and out.returncode == 1


@pytest.fixture
def tiny_disk(tmp_path):
    """A 200 KiB tmpfs; skipped where this process may not mount one."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], capture_output=True)


def test_full_disk_is_one_line_and_the_rerun_resumes(reference, tiny_disk):
    work = str(tiny_disk / "w")
    out = _run(work, "--config.checkpoint_every=1")
    assert out.returncode == 1
    assert _error_line(out) == (f"error: no space left on device writing in {work}. Free some "
                                "space and rerun the same command: the run resumes from its "
                                "last checkpoint")
    assert len(out.stderr.strip().splitlines()) <= 3, out.stderr[-3000:]
    subprocess.run(["mount", "-o", "remount,size=20m", str(tiny_disk)], check=True)
    _ok(work, "--config.checkpoint_every=1")
    np.testing.assert_array_equal(_final_w(reference), _final_w(work))
    assert _steps(work) == list(range(1, 41))
