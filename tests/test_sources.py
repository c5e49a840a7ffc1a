"""The data-source registry: the data layer never imports the lab, and lookups name the sources."""

import ast
import pathlib
import types

import ml_collections
import pytest

import rlhf_jax.lab  # noqa: F401  (registers "lab" before any test swaps the registry)
from rlhf_jax.data import corpora, jsonl, sft_data, sources

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
    with pytest.raises(ValueError, match=r"data source kind 'prompts'; expected one of"):
        sources.get("lab", "prompts")


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

    sources.register(sources.Source("fake", corpus=corpus))  # the same name replaces it
    with pytest.raises(ValueError, match="'fake' has no sft_records"):
        sft_data.load_records(config, str(tmp_path))


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
