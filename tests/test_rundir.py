"""Taking a workdir, in one process: fingerprints, the lock, the input ledger, one-line errors."""

import errno
import json
import os
import sys

import jax.numpy as jnp
import ml_collections
import pytest

from rlhf_jax import checkpoint, errors, fingerprint, ledger, rundir
from rlhf_jax.lock import WorkdirBusy, WorkdirLock


def _config(**over):
    config = ml_collections.ConfigDict({
        "experiment": "x", "seed": 0, "num_steps": 10, "log_every": 5, "eval_every": 5,
        "checkpoint_every": 5, "keep_checkpoints": 2, "mesh": {"data": -1},
        "init_from": "", "tokenizer": {"path": ""}, "data": {"data_dir": "/cache/a",
                                                            "prompts_file": ""},
        "optim": {"learning_rate": 0.1}})
    config.update(over)
    return config


def _save(workdir, step):
    ckpt = checkpoint.Checkpointer(workdir, every_steps=1, handle_sigterm=False)
    ckpt.save(step, {"params": {"w": jnp.zeros(2)}})
    ckpt.close()


def test_fields_leave_out_cadence_and_caches_and_hash_files(tmp_path):
    fields = fingerprint.fields_of(_config())
    assert set(fields) == {"experiment", "seed", "num_steps", "init_from", "tokenizer.path",
                           "data.prompts_file", "optim.learning_rate"}
    assert fingerprint.fields_of(_config(log_every=1, data={"data_dir": "/elsewhere"})) == fields
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('{"prompt": "x"}\n')
    b.write_text('{"prompt": "x"}\n')
    same = fingerprint.fields_of(_config(data={"prompts_file": str(a)}))
    assert same == fingerprint.fields_of(_config(data={"prompts_file": str(b)}))
    b.write_text('{"prompt": "y"}\n')
    assert same != fingerprint.fields_of(_config(data={"prompts_file": str(b)}))


def test_a_run_field_stands_for_that_run_and_its_step(tmp_path):
    up = str(tmp_path / "up")
    _save(up, 5)
    fingerprint.write(up, {"digest": "abc", "fields": {}})
    assert fingerprint.identity("run", up) == ["abc at step 5"]
    _save(up, 8)  # the upstream run went on: whoever started from it is stale
    assert fingerprint.fields_of(_config(init_from=up))["init_from"] == ["abc at step 8"]


def test_compare_binds_only_after_a_checkpoint(tmp_path, capsys):
    work = str(tmp_path / "w")
    os.makedirs(work)
    record = rundir.compare(_config(), work)
    fingerprint.write(work, record)
    record = rundir.compare(_config(seed=1), work)  # no checkpoint yet: starts over
    assert "the earlier attempt saved no checkpoint" in capsys.readouterr().out
    assert record["fields"]["seed"] == 1
    _save(work, 5)
    with pytest.raises(rundir.ConfigMismatch, match=r"holds a run of another config: "
                       r"seed 0 -> 1, optim.learning_rate 0.1 -> 0.2. Use a new --workdir"):
        rundir.compare(_config(seed=1, optim={"learning_rate": 0.2}), work)


def test_extend_is_asked_for_by_name_and_kept_in_the_record(tmp_path):
    work = str(tmp_path / "w")
    os.makedirs(work)
    fingerprint.write(work, rundir.compare(_config(), work))
    _save(work, 10)
    with pytest.raises(rundir.ConfigMismatch, match="or add --extend"):
        rundir.compare(_config(num_steps=20), work)
    rundir.set_extend(True)
    try:
        record = rundir.compare(_config(num_steps=20), work)
        assert record["extended"] == [{"num_steps": [10, 20]}]
        with pytest.raises(rundir.ConfigMismatch, match="num_steps=8 is below the latest"):
            rundir.compare(_config(num_steps=8), work)
        with pytest.raises(rundir.ConfigMismatch, match="seed 0 -> 2"):
            rundir.compare(_config(num_steps=20, seed=2), work)  # only num_steps may change
    finally:
        rundir.set_extend(False)


def test_preflight_checks_every_named_path_before_anything_is_written(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_text("not a tokenizer")
    with pytest.raises(ValueError, match=r"bad.model is not a SentencePiece model"):
        rundir.preflight(_config(tokenizer={"path": str(bad)}))
    with pytest.raises(FileNotFoundError, match=r"config.data.prompts_file='/nope.jsonl': no "
                                                r"such file"):
        rundir.preflight(_config(data={"prompts_file": "/nope.jsonl"}))
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"config.init_from=.*empty_run' holds no "
                                                r"checkpoint; run that phase first"):
        rundir.preflight(_config(init_from=str(empty)))
    up = str(tmp_path / "up")
    _save(up, 1)
    (tmp_path / "up" / "tokenizer.model").write_text("garbage")
    with pytest.raises(ValueError, match=r"up/tokenizer.model is not a SentencePiece model"):
        rundir.preflight(_config(init_from=up))
    assert sorted(os.listdir(tmp_path)) == ["bad.model", "empty_run", "up"]


def test_lock_names_its_holder_and_is_free_after_release(tmp_path):
    work = str(tmp_path / "w")
    first = WorkdirLock(work).acquire()
    with pytest.raises(WorkdirBusy, match=rf"workdir {work} is in use by pid {os.getpid()} "
                                          r"on host .* \(one process per workdir\)"):
        WorkdirLock(work).acquire()
    first.release()
    assert open(os.path.join(work, ".lock")).read() == ""  # a clean end leaves no holder
    with WorkdirLock(work):
        holder = json.loads(open(os.path.join(work, ".lock")).read())
        assert holder["pid"] == os.getpid()


def test_ledger_counts_replace_and_land_in_the_workdir(tmp_path, capsys):
    previous = ledger.bind(str(tmp_path))
    try:
        assert ledger.record_prompts("probe prompts", [3, 9, 12], budget=8) == 2
        ledger.record_prompts("probe prompts", [3, 9, 12], budget=8)  # the same data again
        assert capsys.readouterr().err.count("probe prompts: 2 cut of 3") == 1
        ledger.record("train records", total=10, skipped=1, why="bad lines")
        saved = json.load(open(tmp_path / "inputs.json"))
        assert saved["probe prompts"]["cut"] == 2 and saved["train records"]["skipped"] == 1
        assert "longest 12" in saved["probe prompts"]["why"]
    finally:
        ledger.bind(previous)


def test_one_line_errors():
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as e:
            raise ValueError("RESOURCE_EXHAUSTED: writing ocdbt\n  spec: {...}") from e
    except ValueError as e:
        chained = e
    assert errors.no_space(chained)
    assert errors.one_line(chained, "/w").startswith("no space left on device writing in /w.")
    assert errors.no_space(ValueError("Failed to write 12 bytes: No space left on device"))
    long = ValueError("first line\n" + "spec " * 200)
    assert errors.one_line(long) == "first line"
    assert errors.one_line(KeyError("tensor x is missing")) == "tensor x is missing"
    assert errors.one_line(ValueError("x" * 1000)).endswith("...")
    assert len(errors.one_line(ValueError("x" * 1000))) == errors.MAX_CHARS


def test_writer_threads_closed_loop_is_dropped_and_other_unraisables_are_kept(capsys,
                                                                            monkeypatch):
    def unraisable(message):
        class Raises:
            def __del__(self):
                raise RuntimeError(message)

        seen = []
        monkeypatch.setattr(sys, "unraisablehook", seen.append)
        Raises()  # collected at once: Python hands its error to the hook
        monkeypatch.undo()
        return seen[0]

    errors.quiet_unraisable(unraisable("Event loop is closed"))
    assert capsys.readouterr().err == ""
    errors.quiet_unraisable(unraisable("a real problem"))
    assert "RuntimeError: a real problem" in capsys.readouterr().err
