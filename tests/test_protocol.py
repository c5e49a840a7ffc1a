"""The lab's one sampling protocol: no lab prompt is cut, every sampling phase reads it."""

import pytest

from configs import quickstart
from configs.lab import eval as eval_cfg
from configs.lab import ppo as ppo_cfg
from configs.lab import ppo_seeds as ppo_seeds_cfg
from configs.lab import recall as recall_cfg
from configs.lab import reward as reward_cfg
from configs.lab import sft as sft_cfg
from configs.local import ppo_jsonl
from experiments import pipeline
from rlhf_jax.data.tokenizer import Tokenizer
from rlhf_jax.lab import config as lab_config
from rlhf_jax.lab import corpus, datasets, protocol
from rlhf_jax.lab.prompts import make_prompts
from rlhf_jax.lab.world import build_world

PHASES = {"sft": sft_cfg, "reward": reward_cfg, "ppo": ppo_cfg, "ppo_seeds": ppo_seeds_cfg,
          "eval": eval_cfg, "recall": recall_cfg}


def _sites(config):
    """{where: value} of every sampling field of a phase config, after protocol.apply."""
    out = {}
    for path, field, what in protocol.SITES[config.experiment]:
        node = protocol._node(config, path)
        out[(path, field)] = (node[field], what)
    return out


def _agrees(config, proto):
    want = protocol.values(proto)
    for where, (value, what) in _sites(config).items():
        assert value == want[what], (config.experiment, where, value, want[what])


@pytest.fixture(scope="module")
def lab():
    cfg = lab_config.default_lab_config()
    world = build_world(cfg)
    train, _ = corpus.split_corpus(corpus.pretraining_corpus(world, cfg), cfg)
    # The tokenizer the lab pipeline trains: configs/lab/pretrain.py's size, on the same text.
    from configs.lab import pretrain  # noqa: PLC0415

    tcfg = pretrain.get_config().tokenizer
    tok = Tokenizer.train(train, tcfg.vocab_size, byte_fallback=tcfg.byte_fallback)
    return cfg, make_prompts(world, cfg), tok


def test_no_lab_prompt_is_cut_under_the_default_protocol(lab):
    cfg, prompts, tok = lab
    longest = protocol.check_prompts(tok, prompts, cfg.protocol.prompt_len, "prompts")
    # Business plans and two-turn pushback prompts are the longest; all of them fit.
    by_family = {}
    for p in prompts:
        by_family.setdefault(p.family, []).append(len(tok.chat.prompt_ids(p.turns)))
    assert longest == max(max(v) for v in by_family.values())
    assert max(by_family["business"]) > 64 and max(by_family["pushback"]) > 64
    assert longest <= cfg.protocol.prompt_len


def test_a_prompt_over_the_budget_is_an_error_naming_its_family(lab):
    _, prompts, tok = lab
    business = [p for p in prompts if p.family == "business"]
    n = len(tok.chat.prompt_ids(business[0].turns))
    with pytest.raises(ValueError, match=rf"of {len(business)} lab probe prompts are longer "
                       rf"than lab.protocol.prompt_len={n - 1} tokens \(longest \d+: a "
                       r"business prompt\); the lab never cuts a prompt"):
        protocol.check_prompts(tok, business, n - 1, "probe prompts")


@pytest.mark.parametrize("name", sorted(PHASES))
def test_every_sampling_phase_reads_the_protocol(name):
    config = PHASES[name].get_config()
    config.lab.protocol.prompt_len, config.lab.protocol.max_new_tokens = 120, 40
    config.lab.protocol.temperature = 0.9
    protocol.apply(config)
    _agrees(config, config.lab.protocol)
    protocol.apply(config)  # idempotent: the values it set agree with it


def test_the_pipeline_hands_every_phase_and_eval_the_same_protocol(tmp_path):
    config = quickstart.get_config()
    config.lab.protocol.max_new_tokens = 50
    subs = pipeline.phase_configs(config, str(tmp_path))
    for phase in ("sft", "reward", "ppo"):
        _agrees(subs[phase], config.lab.protocol)
        assert subs[phase].lab.protocol.max_new_tokens == 50
    ev = pipeline._eval_config(config, str(tmp_path), "rlhf", "ppo")
    _agrees(ev, config.lab.protocol)
    # The reward model scores what PPO samples: a prompt and a full response.
    assert subs["reward"].data.seq_len == subs["ppo"].data.prompt_len + 50
    assert subs["sft"].data.seq_len == ev.eval.score_len == 128 + 50


def test_a_phase_setting_its_own_budget_is_refused():
    config = ppo_cfg.get_config()
    with config.ppo.unlocked():
        config.ppo.max_new_tokens = 32
    with pytest.raises(ValueError, match=r"config.ppo.max_new_tokens=32 differs from "
                       r"lab.protocol.max_new_tokens \(96\): every lab phase samples under "
                       r"one protocol; set --config.lab.protocol.\* instead"):
        protocol.apply(config)
    config = reward_cfg.get_config()
    with config.data.unlocked():
        config.data.seq_len = 128
    with pytest.raises(ValueError, match=r"config.data.seq_len=128 differs from "
                       r"lab.protocol.prompt_len \+ lab.protocol.max_new_tokens \(224\)"):
        protocol.apply(config)


def test_protocol_out_of_range_or_past_the_context_is_refused():
    config = ppo_cfg.get_config()
    config.lab.protocol.max_new_tokens = 200
    with pytest.raises(ValueError, match=r"prompt_len \+ max_new_tokens = 328 is longer than "
                       r"model.max_len=256"):
        protocol.apply(config)
    config.lab.protocol.max_new_tokens = 0
    with pytest.raises(ValueError, match="must be positive"):
        protocol.apply(config)
    config.lab.protocol.max_new_tokens, config.lab.protocol.temperature = 8, 0.0
    with pytest.raises(ValueError, match=r"temperature=0.0 must be > 0"):
        protocol.apply(config)


def test_an_old_lab_config_without_a_protocol_is_refused():
    config = ppo_cfg.get_config()
    del config.lab["protocol"]
    with pytest.raises(ValueError, match="config.lab has no protocol"):
        protocol.apply(config)


def test_other_data_sources_keep_their_own_settings():
    config = ppo_jsonl.get_config()
    before = config.to_dict()
    protocol.apply(config)
    assert config.to_dict() == before


def test_the_protocol_is_not_part_of_the_data_hash(tmp_path):
    cfg = lab_config.default_lab_config()
    other = cfg.copy_and_resolve_references()
    other.protocol.max_new_tokens = 12
    assert datasets.fingerprint(cfg) == datasets.fingerprint(other)
    assert datasets.lab_dir(cfg, str(tmp_path)) == datasets.lab_dir(other, str(tmp_path))
    # The data built under one protocol is read under another, not refused as different.
    root = datasets.build(cfg, str(tmp_path))
    assert datasets.build(other, str(tmp_path)) == root
    assert datasets.load_prompts(other, str(tmp_path), "probe") == datasets.load_prompts(
        cfg, str(tmp_path), "probe")
    other.seed = 1
    assert datasets.fingerprint(cfg) != datasets.fingerprint(other)
