"""Fact recall: the held-out facts, the three prompt forms and the scoring."""

import pytest

from rlhf_jax.data import chat
from rlhf_jax.lab import prompts as prompts_lib
from rlhf_jax.lab import recall
from rlhf_jax.lab import world as world_lib
from rlhf_jax.lab.config import default_lab_config


@pytest.fixture(scope="module")
def lab():
    cfg = default_lab_config()
    world = world_lib.build_world(cfg)
    prompts = prompts_lib.make_prompts(world, cfg)
    return world, prompts, recall.held_out_asks(world, prompts)


def test_held_out_facts_are_asked_by_no_training_prompt(lab):
    world, prompts, asks = lab
    every = prompts_lib._fact_asks(world, False, __import__("numpy").random.default_rng(0))
    assert 40 < len(asks) < len(every)
    trained = [p for p in prompts if p.split in ("train", "demo")]
    facts = {p.statement for p in trained if p.statement}
    assert not {a.statement for a in asks} & facts
    assert not {a.question for a in asks} & {p.question for p in trained}
    # Probe prompts are not training: their facts may be among the held-out ones.
    probes = {p.statement for p in prompts if p.split == "probe" and p.family == "fact_easy"}
    assert probes & {a.statement for a in asks}


def test_prompt_forms(lab):
    _, _, asks = lab
    ask = asks[0]
    chat_text, faq, statement, led = (recall.prompt_texts([ask], f)[0] for f in recall.FORMS)
    assert led == f"{chat_text} {statement}"
    assert chat_text == chat.render_prompt((("user", ask.question),))
    assert faq == f"Q: {ask.question}\nA:"
    assert "{" not in statement and ask.answer not in statement
    assert prompts_lib.sentence(prompts_lib.claim(ask.statement, ask.answer)).startswith(statement)
    with pytest.raises(ValueError, match=r"form='essay'; expected one of \['chat', 'faq'"):
        recall.prompt_texts([ask], "essay")


def test_accuracy_reads_the_first_line(lab):
    _, _, asks = lab
    a, b = asks[:2]
    wrong = next(c for c in b.candidates if c != b.answer)
    responses = [f" {a.answer}.\nQ: something else", f"{wrong}.\n{b.answer}"]
    assert recall.accuracy([a, b], responses) == 0.5
    assert recall.accuracy([], []) != recall.accuracy([], [])  # NaN, never 0
    with pytest.raises(ValueError, match="2 asks but 1 responses"):
        recall.accuracy([a, b], ["x"])


def test_frame_rate_looks_for_the_corpus_sentence(lab):
    _, _, asks = lab
    a, b = asks[:2]
    said = prompts_lib.sentence(prompts_lib.claim(a.statement, "Nowhere"))
    responses = [f"Happy to help! {said}", "I think it is 12."]
    assert recall.frame_rate([a, b], responses) == 0.5
    with pytest.raises(ValueError, match="1 asks but 2 responses"):
        recall.frame_rate([a], responses)


def test_lab_config_from_a_run_workdir(lab, tmp_path):
    import json  # noqa: PLC0415

    from configs.lab import recall as recall_config  # noqa: PLC0415
    from experiments import recall as recall_exp  # noqa: PLC0415

    world, _, default_asks = lab
    cfg = recall_config.get_config()
    assert recall_exp.lab_config(cfg) is cfg.lab
    # A run that trained on fewer demonstrations leaves more facts held out.
    trained = default_lab_config()
    trained.prompts.extra_demonstrations.fact_easy = 64
    run = tmp_path / "sft"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"experiment": "sft", "lab": trained.to_dict()}))
    cfg.lab_from = str(run)
    got = recall_exp.lab_config(cfg)
    assert got.prompts.extra_demonstrations.fact_easy == 64
    asks = recall.held_out_asks(world, prompts_lib.make_prompts(world, got))
    assert len(asks) > len(default_asks)
    other = tmp_path / "bench"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"experiment": "benchmark"}))
    cfg.lab_from = str(other)
    with pytest.raises(ValueError, match=r"config.json has no lab config; is it the workdir"):
        recall_exp.lab_config(cfg)
    cfg.lab_from = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"config.json not found"):
        recall_exp.lab_config(cfg)
