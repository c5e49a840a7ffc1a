"""The local-file configs end to end: text -> SFT JSONL -> HH comparisons -> PPO prompts."""

import json
import os
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
    w = {k: str(tmp_path / k) for k in ("pretrain", "sft", "reward", "ppo")}
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
