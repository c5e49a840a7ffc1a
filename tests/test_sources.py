"""The data-source registry: the data layer never imports the lab, and lookups name the sources."""

import ast
import pathlib
import types

import ml_collections
import pytest

import rlhf_jax.lab  # noqa: F401  (registers "lab" before any test swaps the registry)
from rlhf_jax.data import corpora, jsonl, preference_data, prompt_data, sft_data, sources

DATA_DIR = pathlib.Path(__file__).resolve().parents[1] / "rlhf_jax" / "data"


def lab_imports(source: str, package: str = "rlhf_jax.data") -> list[str]:
    """The modules of rlhf_jax.lab that `source` (a module of `package`) imports, anywhere."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            modules = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found += [m for m in modules if m == "rlhf_jax.lab" or m.startswith("rlhf_jax.lab.")]
    return found


def test_the_data_layer_does_not_import_the_lab():
    files = sorted(DATA_DIR.glob("*.py"))
    assert any(f.name == "corpora.py" for f in files)
    offenders = {f.name: lab_imports(f.read_text()) for f in files}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


@pytest.mark.parametrize("code", [
    "def f():\n    from rlhf_jax.lab import datasets\n",
    "import rlhf_jax.lab.world as w\n",
    "from rlhf_jax import lab\n",
    "from ..lab import corpus\n",
])  # fmt: skip
def test_the_import_check_sees_every_form(code):
    assert lab_imports(code)


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for one test; the real one is back afterwards."""
    monkeypatch.setattr(sources, "_REGISTRY", dict(sources._REGISTRY))


def _config(source):
    return ml_collections.ConfigDict({"seed": 0, "data": {"source": source, "data_dir": ""}})


def test_builtin_sources_are_registered():
    assert sources.names("corpus") == ["lab", "text"]
    assert sources.names("sft_records") == ["jsonl", "lab"]
    assert sources.names("prompts") == ["jsonl", "lab"]  # "jsonl" from two modules, merged
    assert sources.get("jsonl", "prompts") is prompt_data.load_jsonl_prompts


def test_an_unknown_source_names_the_expected_ones():
    with pytest.raises(ValueError, match=r"^config.data.source='books'; expected one of "
                                         r"\['lab', 'text'\]$"):
        corpora.load_corpus(_config("books"), "/nonexistent")
    with pytest.raises(ValueError, match=r"^config.data.source='books'; expected one of "
                                         r"\['jsonl', 'lab'\]$"):
        sft_data.load_records(_config("books"), "/nonexistent")


def test_a_source_without_what_is_asked_names_those_with_it():
    with pytest.raises(ValueError, match=r"^config.data.source='jsonl' has no corpus; "
                                         r"sources with one: \['lab', 'text'\]$"):
        corpora.load_corpus(_config("jsonl"), "/nonexistent")
    with pytest.raises(ValueError, match=r"^config.data.source='text' has no sft_records; "
                                         r"sources with one: \['jsonl', 'lab'\]$"):
        sft_data.load_records(_config("text"), "/nonexistent")
    with pytest.raises(ValueError, match=r"^config.data.source='text' has no prompts; "
                                         r"sources with one: \['jsonl', 'lab'\]$"):
        prompt_data.load_prompts(_config("text"), "/nonexistent", None)
    with pytest.raises(ValueError, match=r"data source kind 'reviews'; expected one of"):
        sources.get("lab", "reviews")


def test_a_registered_source_is_what_the_loaders_return(registry, tmp_path):
    calls = []
    texts = (["a train document"], ["an eval document"])
    records = ([jsonl.SFTRecord((("user", "hi"),), "hello", "r0")], [])

    def corpus(config, workdir):
        calls.append(("corpus", config.data.source, workdir))
        return texts

    sources.register(sources.Source("fake", corpus=corpus, sft_records=lambda c, w: records))
    config = _config("fake")
    assert corpora.load_corpus(config, str(tmp_path)) is texts
    assert sft_data.load_records(config, str(tmp_path)) is records
    assert calls == [("corpus", "fake", str(tmp_path))]
    assert "fake" in sources.names("corpus") and "fake" in sources.names("sft_records")

    other = (["another document"], [])
    sources.register(sources.Source("fake", corpus=lambda c, w: other))  # replaces the corpus
    assert corpora.load_corpus(config, str(tmp_path)) is other
    assert sft_data.load_records(config, str(tmp_path)) is records  # and keeps the rest
    sources.register(sources.Source("bare", corpus=corpus))
    with pytest.raises(ValueError, match="'bare' has no sft_records"):
        sft_data.load_records(_config("bare"), str(tmp_path))


def test_the_registry_is_restored_after_a_test():
    assert "fake" not in sources.names()
    assert sources.get("text", "corpus") is corpora.load_text_corpus


def test_register_takes_named_sources_only(registry):
    with pytest.raises(TypeError, match="takes a sources.Source, not dict"):
        sources.register({"name": "x"})
    with pytest.raises(ValueError, match="non-empty name"):
        sources.register(sources.Source(""))


def test_the_lab_source_holds_out_a_seeded_share_in_order(monkeypatch, tmp_path):
    from rlhf_jax.lab import datasets  # noqa: PLC0415

    def demonstrations(lab_cfg, data_dir):  # (prompt, response, style), as the lab's
        assert data_dir == str(tmp_path / "data")
        return [(types.SimpleNamespace(id=f"p{i}", turns=(("user", f"q{i}"),)), f"a{i}", "s")
                for i in range(10)]

    monkeypatch.setattr(datasets, "demonstrations", demonstrations)
    config = _config("lab")
    config.seed, config.lab, config.data.eval_fraction = 4, {}, 0.3
    train, held_out = sft_data.load_records(config, str(tmp_path))
    assert [r.source for r in held_out] == ["p1", "p3", "p5"]  # pinned: runs' data must not move
    assert [r.source for r in train] == ["p0", "p2", "p4", "p6", "p7", "p8", "p9"]
    assert held_out[0] == jsonl.SFTRecord((("user", "q1"),), "a1", "p1")


def test_the_lab_prompts_are_turns_its_probes_score_and_never_cut(monkeypatch, tmp_path):
    from rlhf_jax.lab import datasets, probes  # noqa: PLC0415

    def load_prompts(lab_cfg, data_dir, split):
        return [types.SimpleNamespace(turns=(("user", f"{split} {i}"),), family="fact_easy")
                for i in range(3 if split == "train" else 2)]

    scored = []
    monkeypatch.setattr(datasets, "load_prompts", load_prompts)
    monkeypatch.setattr(probes, "probe_metrics", lambda ps, rs, proxy_scores=None: scored.append(
        ([p.turns for p in ps], rs, proxy_scores)) or {"gold_reward": 0.5})
    tok = types.SimpleNamespace(chat=types.SimpleNamespace(
        prompt_ids=lambda turns: [0] * len(turns[0][1])))
    config = _config("lab")
    config.lab, config.data.prompt_len = {}, 7
    got = prompt_data.load_prompts(config, str(tmp_path), tok)
    assert got.train == [(("user", f"train {i}"),) for i in range(3)]
    assert got.held_out == [(("user", "probe 0"),), (("user", "probe 1"),)]
    assert got.evaluate(["a", "b"], [1.0, 2.0]) == {"gold_reward": 0.5}
    assert scored == [(got.held_out, ["a", "b"], [1.0, 2.0])]
    config.data.prompt_len = 6  # "train 0" is 7 tokens here: over the budget is an error
    with pytest.raises(ValueError, match=r"3 of 3 lab training prompts are longer than "
                                         r"lab.protocol.prompt_len=6 tokens \(longest 7: a "
                                         r"fact_easy prompt\)"):
        prompt_data.load_prompts(config, str(tmp_path), tok)


def test_sources_without_policy_probes_give_none_and_unknown_ones_an_error():
    assert sources.optional("jsonl", "policy_probes") is None
    assert sources.optional("lab", "policy_probes") is not None
    with pytest.raises(ValueError, match=r"^config.data.source='books'; expected one of "):
        sources.optional("books", "policy_probes")


def test_the_lab_preferences_carry_gold_order_normaliser_ceiling_and_analysis(monkeypatch,
                                                                               tmp_path):
    from rlhf_jax.lab import preferences  # noqa: PLC0415

    ps = [types.SimpleNamespace(id=f"p{i}", turns=(("user", f"q{i}"),)) for i in range(3)]
    cols = {"prompts": ps, "response_a": ["a0", "a1", "a2"], "response_b": ["b0", "b1", "b2"],
            "choice": [0, 1, 0], "gold_a": [1.0, 0.0, 2.0], "gold_b": [0.0, 0.0, 3.0],
            "report": {"accuracy_ceiling": 0.7}}
    monkeypatch.setattr(preferences, "lab_comparisons", lambda *a: (cols, cols))
    seen = []
    monkeypatch.setattr(preferences, "reward_analysis",
                        lambda *a, train_report: seen.append((a[-1](ps[:1], ["r"]), train_report))
                        or {"analysis/x": 1.0})
    config = _config("lab")
    got = preference_data.load_preferences(config, str(tmp_path), None, None, None, None)
    assert [(r.chosen, r.rejected) for r in got.train] == [("a0", "b0"), ("b1", "a1"),
                                                           ("a2", "b2")]
    assert [(r.chosen, r.rejected) for r in got.gold_ordered] == [("a0", "b0"), ("b2", "a2")]
    assert got.normaliser == ([p.turns for p in ps], ["a0", "a1", "a2"])
    assert got.metrics == {"accuracy_ceiling": 0.7}
    assert got.analysis(lambda turns, responses: (turns, responses)) == {"analysis/x": 1.0}
    # the driver's scorer reads turns; the training panel's report goes beside the held-out one
    assert seen == [(([ps[0].turns], ["r"]), {"accuracy_ceiling": 0.7})]
