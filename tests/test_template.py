"""Chat formats: the plain template, a checkpoint's Jinja template, BOS, and transformers' view."""

import json
import os

import pytest

from rlhf_jax.data import batching, chat
from rlhf_jax.data.jsonl import SFTRecord
from rlhf_jax.data.tokenizer import Tokenizer
from tests import tiny_hf

TURNS = (("user", "What is the capital of Velolne?"), ("assistant", "It is Nevels."),
         ("user", "Tell me the capital of Velolne."))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: tiny_hf.make(arch, str(root / arch)) for arch in tiny_hf.ARCHS}


def _pieces(tok, ids):
    return [tok.id_to_piece(i) for i in ids]


def test_plain_format_is_the_lab_template_and_adds_bos_only_when_asked(tmp_path):
    tok = Tokenizer.train([f"User: the mill {i} turns\nAssistant: yes" for i in range(40)], 48)
    assert tok.chat.name == "plain" and not tok.chat.add_bos
    assert tok.chat.prompt_ids(TURNS) == tok.encode(chat.render_prompt(TURNS))
    assert tok.chat.reply_ids(TURNS, "yes") == tok.encode("yes") + [tok.eos_id]
    tok.save(str(tmp_path / "tokenizer.model"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
    with_bos = Tokenizer.load(str(tmp_path / "tokenizer.model"))
    assert with_bos.chat.prompt_ids(TURNS) == [tok.bos_id, *tok.chat.prompt_ids(TURNS)]


def test_llama_template_renders_special_tokens_as_ids(folders):
    tok = Tokenizer.load(os.path.join(folders["llama"], "tokenizer.model"))
    assert tok.chat.name == "chat_template"
    prompt = tok.chat.prompt_ids((("system", "Answer in one sentence."), TURNS[0]))
    assert prompt[0] == tok.bos_id and prompt.count(tok.bos_id) == 1  # the template's own
    assert tok.decode(prompt).startswith("<<SYS>> Answer in one sentence. <</SYS>> [INST]")
    reply = tok.chat.reply_ids(TURNS[:1], "It is Nevels.")
    assert reply[-1] == tok.eos_id and tok.eos_id not in reply[:-1]  # "</s>" became the id
    assert tok.decode(reply) == "It is Nevels."
    plain = Tokenizer.load(os.path.join(folders["llama"], "tokenizer.model"), template="plain")
    assert plain.chat.name == "plain" and plain.chat.prompt_ids(TURNS[:1])[0] == tok.bos_id


def test_gemma_reply_ends_its_turn_then_eos(folders):
    tok = Tokenizer.load(os.path.join(folders["gemma"], "tokenizer.model"))
    prompt = tok.chat.prompt_ids(TURNS)
    assert _pieces(tok, prompt[:2]) == ["<bos>", "<start_of_turn>"]
    assert tok.decode(prompt).endswith("<end_of_turn>\n<start_of_turn>model\n")
    reply = tok.chat.reply_ids(TURNS, "It is Nevels.")
    assert _pieces(tok, reply[-3:]) == ["<end_of_turn>", "\n", "<eos>"]
    with pytest.raises(Exception, match="System role not supported"):
        tok.chat.prompt_ids((("system", "x"), ("user", "y")))


def test_sft_loss_covers_the_reply_only(folders):
    tok = Tokenizer.load(os.path.join(folders["gemma"], "tokenizer.model"))
    record = SFTRecord(TURNS, "It is Nevels.")
    ex = batching.tokenize_sft(tok, record, max_len=256)
    n = len(tok.chat.prompt_ids(TURNS))
    assert list(ex["tokens"][:n]) == tok.chat.prompt_ids(TURNS)
    assert list(ex["tokens"][n:]) == tok.chat.reply_ids(TURNS, "It is Nevels.")
    assert ex["loss_mask"][:n].sum() == 0 and ex["loss_mask"][n:].all()


def test_a_template_that_changes_the_prompt_after_a_reply_is_refused(tmp_path):
    folder = tiny_hf.make("llama", str(tmp_path))
    path = os.path.join(folder, "tokenizer_config.json")
    config = json.load(open(path))
    config["chat_template"] = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
                               "{% if add_generation_prompt %} ASSISTANT:{% endif %}")
    json.dump(config, open(path, "w"))
    tok = Tokenizer.load(os.path.join(folder, "tokenizer.model"))
    with pytest.raises(ValueError, match="renders the prompt differently once the reply "
                                         "follows it.*--config.tokenizer.template=plain"):
        tok.chat.reply_ids(TURNS[:1], "It is Nevels.")


@pytest.mark.parametrize("arch", sorted(tiny_hf.ARCHS))
def test_prompts_equal_transformers_apply_chat_template(arch, folders):
    transformers = pytest.importorskip("transformers")
    ours = Tokenizer.load(os.path.join(folders[arch], "tokenizer.model"))
    theirs = transformers.AutoTokenizer.from_pretrained(folders[arch])
    for turns in (TURNS[:1], TURNS):
        messages = [{"role": r, "content": t} for r, t in turns]
        ids = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if not isinstance(ids, list) else ids
        assert ours.chat.prompt_ids(turns) == list(ids), arch
