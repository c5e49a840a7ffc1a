"""Hugging Face folders that are damaged or say what this model does not compute.

Each bad folder is one error naming the file; the two silent bugs (a Mistral's
window dropped on export, a Gemma's SiLU read as tanh-GELU) are checked against
the config files, and against transformers' own reading of them where
transformers is installed.
"""

import dataclasses
import json
import os

import pytest

from rlhf_jax.models import hf_export, hf_import
from tests.test_hf_checkpoints import GEMMA, LLAMA, random_tensors, write_checkpoint

MISTRAL = {**LLAMA, "architectures": ["MistralForCausalLM"], "model_type": "mistral",
           "sliding_window": 16}


def test_truncated_config_json_names_the_file(tmp_path):
    folder = write_checkpoint(tmp_path / "a", LLAMA, random_tensors(LLAMA))
    path = os.path.join(folder, "config.json")
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    with pytest.raises(ValueError, match=rf"^{path}: not valid JSON \(.* at line 1, column "
                                         r"\d+\); is the file complete\?"):
        hf_import.load_hf_checkpoint(folder)


def test_missing_field_names_the_file_and_the_field(tmp_path):
    config = {k: v for k, v in LLAMA.items() if k != "intermediate_size"}
    folder = write_checkpoint(tmp_path / "a", config, random_tensors(LLAMA))
    with pytest.raises(ValueError, match=rf"^{folder}/config.json: no 'intermediate_size' "
                                         r"field\(s\), which LlamaForCausalLM needs$"):
        hf_import.load_hf_checkpoint(folder)


def test_truncated_safetensors_names_the_file(tmp_path):
    folder = write_checkpoint(tmp_path / "a", LLAMA, random_tensors(LLAMA))
    path = os.path.join(folder, "model.safetensors")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ValueError, match=rf"^{path}: not a readable safetensors file \(.*\); "
                                         r"is the file complete\?"):
        hf_import.load_hf_checkpoint(folder)


def test_mistral_window_survives_import_and_export(tmp_path):
    folder = write_checkpoint(tmp_path / "a", MISTRAL, random_tensors(MISTRAL))
    cfg, _, params = hf_import.load_hf_checkpoint(folder)
    assert cfg.sliding_window == 16 and cfg.max_len == 16
    out = tmp_path / "b"
    hf_export.export_hf(str(out), cfg, params)  # the architecture follows the window
    exported = json.loads((out / "config.json").read_text())
    assert exported["architectures"] == ["MistralForCausalLM"]
    assert exported["sliding_window"] == 16
    assert hf_import.load_hf_checkpoint(str(out))[0] == cfg
    with pytest.raises(ValueError, match=r"sliding_window=16 \(a Mistral checkpoint's\); as "
                                         r"LlamaForCausalLM it would attend past the window"):
        hf_export.export_hf(str(tmp_path / "c"), cfg, params, architecture="LlamaForCausalLM")
    with pytest.raises(ValueError, match=r"model.sliding_window=8 must be unset or an integer "
                                         r">= model.max_len=16"):
        dataclasses.replace(cfg, sliding_window=8).validate()


@pytest.mark.parametrize("fields, accepted", [
    ({"hidden_activation": "gelu_pytorch_tanh"}, True),
    ({"hidden_act": "gelu"}, True),  # the legacy value, meant as tanh-GELU
    ({"hidden_act": "gelu_pytorch_tanh", "hidden_activation": None}, True),
    ({"hidden_act": "silu"}, False),
    ({"hidden_act": "gelu_pytorch_tanh", "hidden_activation": "silu"}, False),
])
def test_gemma_activation_is_read_from_both_fields(fields, accepted):
    base = {k: v for k, v in GEMMA.items() if k not in ("hidden_act", "hidden_activation")}
    config = {**base, **fields}
    if accepted:
        assert hf_import.config_from_hf(config).activation == "gelu_tanh"
    else:
        with pytest.raises(ValueError, match="this model implements tanh-approximate GELU only"):
            hf_import.config_from_hf(config)


def test_transformers_reads_the_fields_as_the_importer_assumes(tmp_path):
    transformers = pytest.importorskip("transformers")
    from transformers.activations import ACT2FN

    silu = transformers.GemmaConfig(**{k: v for k, v in GEMMA.items()
                                       if k not in ("architectures", "model_type")},
                                    hidden_act="silu")
    mlp = transformers.models.gemma.modeling_gemma.GemmaMLP(silu)
    assert type(mlp.act_fn) is type(ACT2FN["silu"])  # so the importer must refuse it
    folder = write_checkpoint(tmp_path / "a", MISTRAL, random_tensors(MISTRAL))
    cfg, _, params = hf_import.load_hf_checkpoint(folder)
    hf_export.export_hf(str(tmp_path / "b"), cfg, params)
    loaded = transformers.AutoConfig.from_pretrained(str(tmp_path / "b"))
    assert loaded.sliding_window == 16
