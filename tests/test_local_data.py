"""The local-file configs end to end: text -> SFT JSONL -> HH comparisons -> PPO prompts."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from rlhf_jax.metrics import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--config.tokenizer.vocab_size=400", "--config.model.vocab_size=400",
         "--config.data.seq_len=64", "--config.log_every=1", "--config.optim.warmup_steps=0"]
CITIES = [("Velmora", "Ostrel"), ("Qarn", "Tessa"), ("Brisk", "Olun"), ("Mirel", "Fane"),
          ("Tovzan", "Fenith"), ("Sevdru", "Katrel")]


def _write(path, lines):
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("local")
    (d / "corpus").mkdir()
    docs = [f"{c} is a country. Its capital is {k}. People like {c}!" for c, k in CITIES] * 4
    _write(d / "corpus" / "train.txt", [x + "\n" for x in docs])
    (d / "sft").mkdir()
    _write(d / "sft" / "train.jsonl", [json.dumps(
        {"messages": [{"role": "user", "content": f"What is the capital of {c}?"},
                      {"role": "assistant", "content": f"The capital of {c} is {k}."}]})
        for c, k in CITIES * 3])
    (d / "prefs").mkdir()
    hh = [json.dumps({"chosen": f"\n\nHuman: Capital of {c}?\n\nAssistant: {k}.",
                      "rejected": f"\n\nHuman: Capital of {c}?\n\nAssistant: No idea."})
          for c, k in CITIES * 4]
    _write(d / "prefs" / "train.jsonl", hh)
    (d / "bad").mkdir()
    _write(d / "bad" / "train.jsonl", [*hh[:3], '{"chosen": "oops"', *hh[3:]])
    _write(d / "prompts.jsonl", [json.dumps({"prompt": f"What is the capital of {c}?"})
                                 for c, _ in CITIES * 3])
    return d


def _run(workdir, args):
    return subprocess.run([sys.executable, "-m", "experiments.run", f"--workdir={workdir}",
                           *args], cwd=ROOT, capture_output=True, text=True)


def test_local_chain(files, tmp_path):
    w = {k: str(tmp_path / k) for k in ("pretrain", "sft", "reward", "dpo", "ppo")}
    out = _run(w["pretrain"], ["--config=configs/local/pretrain_text.py", *SMALL,
                               f"--config.data.manual_dir={files / 'corpus'}",
                               "--config.num_steps=4", "--config.batch_size=8",
                               "--config.eval_every=4", "--config.eval.sample_tokens=4"])
    assert out.returncode == 0, out.stderr[-3000:]
    out = _run(w["sft"], ["--config=configs/local/sft_jsonl.py", *SMALL,
                          f"--config.init_from={w['pretrain']}",
                          f"--config.data.manual_dir={files / 'sft'}",
                          "--config.num_steps=3", "--config.batch_size=8",
                          "--config.eval_every=3"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "eval/loss" in read_metrics(w["sft"])[-1]
    out = _run(w["reward"], ["--config=configs/local/reward_jsonl.py", *SMALL,
                             f"--config.init_from={w['sft']}",
                             f"--config.data.manual_dir={files / 'prefs'}",
                             "--config.num_steps=3", "--config.batch_size=8",
                             "--config.eval_every=3", "--config.eval.batch_size=8"])
    assert out.returncode == 0, out.stderr[-3000:]
    last = read_metrics(w["reward"])[-1]
    assert {"train/loss", "eval/accuracy"} <= set(last)
    out = _run(w["dpo"], ["--config=configs/local/dpo_jsonl.py", *SMALL,
                          f"--config.init_from={w['sft']}",
                          f"--config.data.manual_dir={files / 'prefs'}",
                          "--config.num_steps=2", "--config.batch_size=8",
                          "--config.eval_every=2", "--config.eval.batch_size=8"])
    assert out.returncode == 0, out.stderr[-3000:]
    evals = [r for r in read_metrics(w["dpo"]) if "pairs/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2] and "train/margin" in evals[-1]
    out = _run(w["ppo"], ["--config=configs/local/ppo_jsonl.py",
                          "--config.model.vocab_size=400", f"--config.init_from={w['sft']}",
                          f"--config.reward_from={w['reward']}",
                          f"--config.data.prompts_file={files / 'prompts.jsonl'}",
                          "--config.num_steps=2", "--config.eval_every=2",
                          "--config.ppo.rollout_batch_size=8", "--config.ppo.max_new_tokens=6",
                          "--config.data.prompt_len=32"])
    assert out.returncode == 0, out.stderr[-3000:]
    evals = [r for r in read_metrics(w["ppo"]) if "eval/kl" in r]
    assert [r["step"] for r in evals] == [0, 2] and "eval/proxy_reward" in evals[-1]


def test_malformed_preference_line_names_file_and_line(files, tmp_path):
    sft = tmp_path / "sft"
    # No init_from needed to reach the data: the tokenizer comes from a file.
    out = _run(str(tmp_path / "pre"), ["--config=configs/local/pretrain_text.py", *SMALL,
                                       f"--config.data.manual_dir={files / 'corpus'}",
                                       "--config.num_steps=1", "--config.batch_size=8",
                                       "--config.eval.num_samples=0"])
    assert out.returncode == 0, out.stderr[-3000:]
    out = _run(str(sft), ["--config=configs/local/reward_jsonl.py", *SMALL,
                          f"--config.tokenizer.path={tmp_path / 'pre' / 'tokenizer.model'}",
                          f"--config.data.manual_dir={files / 'bad'}", "--config.num_steps=1"])
    assert out.returncode != 0
    assert f"{files / 'bad' / 'train.jsonl'}:4:" in out.stderr


@pytest.mark.parametrize("config, expected", [
    ("configs/local/sft_jsonl.py", "train.jsonl and optional validation.jsonl"),
    ("configs/local/reward_jsonl.py", "train.jsonl and optional validation.jsonl of preference"),
    ("configs/local/pretrain_text.py", "train.txt / train.jsonl"),
])
def test_missing_manual_dir_is_a_clear_error(config, expected, tmp_path):
    from rlhf_jax.data.tokenizer import Tokenizer

    tok = str(tmp_path / "tok.model")
    Tokenizer.train([f"{c} {k}." for c, k in CITIES] * 10, 64).save(tok)
    out = _run(str(tmp_path / "w"), [f"--config={config}", f"--config.tokenizer.path={tok}"])
    assert out.returncode != 0
    assert f"needs config.data.manual_dir (a folder with {expected}" in out.stderr


def _pretrain_args(files, *extra):
    return ["--config=configs/local/pretrain_text.py", *SMALL,
            f"--config.data.manual_dir={files / 'corpus'}", "--config.num_steps=1",
            "--config.batch_size=8", "--config.eval.num_samples=0", *extra]


def _one_error(out) -> str:
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert out.returncode == 1 and len(lines) == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    return lines[0]


def test_a_bad_tokenizer_is_refused_before_the_workdir_is_touched(files, tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"this is not a SentencePiece model")
    pre = tmp_path / "pre"
    out = _run(str(pre), _pretrain_args(files, f"--config.tokenizer.path={bad}"))
    assert _one_error(out).startswith(f"error: {bad} is not a SentencePiece model")
    assert not pre.exists()
    out = _run(str(pre), _pretrain_args(files))  # the same workdir, without the flag
    assert out.returncode == 0, out.stderr[-3000:]
    broken = tmp_path / "broken"  # a finished run whose tokenizer.model was damaged
    shutil.copytree(pre, broken)
    (broken / "tokenizer.model").write_bytes(b"garbage")
    sft = tmp_path / "sft"
    args = ["--config=configs/local/sft_jsonl.py", *SMALL,
            f"--config.data.manual_dir={files / 'sft'}", "--config.num_steps=1",
            "--config.batch_size=8", "--config.eval_every=1"]
    out = _run(str(sft), [*args, f"--config.init_from={broken}"])
    assert _one_error(out).startswith(f"error: {broken}/tokenizer.model is not a SentencePiece")
    assert not sft.exists()
    out = _run(str(sft), [*args, f"--config.init_from={pre}"])
    assert out.returncode == 0, out.stderr[-3000:]
    assert open(sft / "tokenizer.model", "rb").read() == open(pre / "tokenizer.model",
                                                              "rb").read()


def test_an_empty_input_file_is_named(files, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.jsonl").write_text("\n")
    out = _run(str(tmp_path / "w"), ["--config=configs/local/sft_jsonl.py", *SMALL,
                                     f"--config.data.manual_dir={empty}",
                                     f"--config.tokenizer.path={_tokenizer(tmp_path)}"])
    assert _one_error(out) == f"error: {empty / 'train.jsonl'}: holds no records"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("")
    import ml_collections

    from rlhf_jax.data import prompt_data
    from rlhf_jax.data.jsonl import DataError

    config = ml_collections.ConfigDict({"data": {"source": "jsonl", "eval_fraction": 0.1,
                                                 "prompts_file": str(prompts)}})
    with pytest.raises(DataError, match=rf"{prompts}: 0 prompt\(s\); PPO needs at least 2"):
        prompt_data.load_prompts(config, str(tmp_path), None)


def _tokenizer(tmp_path):
    from rlhf_jax.data.tokenizer import Tokenizer

    tok = str(tmp_path / "tok.model")
    Tokenizer.train([f"{c} {k}." for c, k in CITIES] * 10, 64).save(tok)
    return tok


def test_cut_examples_are_counted_in_inputs_json(files, tmp_path):
    out = _run(str(tmp_path / "sft"), ["--config=configs/local/sft_jsonl.py", *SMALL[:2],
                                       "--config.data.seq_len=12", "--config.log_every=1",
                                       "--config.optim.warmup_steps=0",
                                       f"--config.data.manual_dir={files / 'sft'}",
                                       f"--config.tokenizer.path={_tokenizer(tmp_path)}",
                                       "--config.num_steps=1", "--config.batch_size=8",
                                       "--config.eval_every=1"])
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.load(open(tmp_path / "sft" / "inputs.json"))
    train = counts["training demonstrations"]
    assert train["total"] == 17 and train["cut"] == 17, counts  # 18 lines, 1 held out
    assert "over data.seq_len=12" in train["why"]
    assert "training demonstrations: 17 cut of 17 (over data.seq_len=12" in out.stderr
