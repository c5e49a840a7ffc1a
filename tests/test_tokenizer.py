"""SentencePiece tokenizer: train, save, load, encode/decode round trips, special ids."""

import pytest

from rlhf_jax.data import chat
from rlhf_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

CORPUS = [
    f"Country {name} has the capital {cap}. It was founded in {1700 + i}.\n"
    f"User: What is the capital of {name}?\nAssistant: The capital of {name} is {cap}."
    for i, (name, cap) in enumerate(
        [("Velmora", "Ostrel"), ("Qarn", "Tessa"), ("Brisk", "Olun"), ("Mirel", "Fane")] * 20
    )
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, vocab_size=160)


def test_special_ids_distinct(tok):
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (PAD_ID, EOS_ID, BOS_ID)
    assert len({tok.pad_id, tok.eos_id, tok.bos_id, tok.unk_id}) == 4


def test_round_trip_and_newlines(tok):
    text = "User: What is the capital of Velmora?\nAssistant: The capital is Ostrel."
    assert tok.decode(tok.encode(text)) == text


def test_prompt_plus_response_equals_joined_text(tok):
    prompt = chat.render_question("What is the capital of Qarn?")
    response = "The capital of Qarn is Tessa."
    assert tok.encode(prompt) + tok.encode(response) == tok.encode(chat.join(prompt, response))


def test_eos_bos_and_batch(tok):
    ids = tok.encode("Velmora", bos=True, eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    batch = tok.encode_batch(["Qarn", "Brisk Olun"], eos=True)
    assert [b[-1] for b in batch] == [EOS_ID, EOS_ID]
    assert tok.decode_batch(batch) == ["Qarn", "Brisk Olun"]
    # Decoding stops at EOS and drops padding.
    assert tok.decode(tok.encode("Qarn") + [EOS_ID] + tok.encode("Brisk") + [PAD_ID]) == "Qarn"


def test_save_load_deterministic(tok, tmp_path):
    path = str(tmp_path / "tok.model")
    tok.save(path)
    loaded = Tokenizer.load(path)
    assert loaded.encode(CORPUS[0]) == tok.encode(CORPUS[0])
    again = Tokenizer.train(CORPUS, vocab_size=160)
    assert again._proto == tok._proto


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer model not found"):
        Tokenizer.load(str(tmp_path / "none.model"))
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="is not a SentencePiece model"):
        Tokenizer.load(str(bad))
    with pytest.raises(ValueError, match="vocab_size=4 is too small"):
        Tokenizer.train(CORPUS, vocab_size=4)


def test_chat_template_errors():
    with pytest.raises(ValueError, match="last turn of a prompt must be 'user'"):
        chat.render_prompt([("user", "a"), ("assistant", "b")])
    with pytest.raises(ValueError, match="must alternate"):
        chat.render_prompt([("user", "a"), ("user", "b")])
    with pytest.raises(ValueError, match="unknown chat role"):
        chat.render_turn("system", "x")
    assert chat.render_prompt([("user", "a"), ("assistant", "b"), ("user", "c")]) == (
        "User: a\nAssistant: b\nUser: c\nAssistant:"
    )


def test_pad_equal_to_eos_is_refused():
    import io

    import sentencepiece as spm

    proto = io.BytesIO()
    # A model without a pad id, like the Llama tokenizer.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=proto,
                                   vocab_size=120, pad_id=-1, unk_id=0, bos_id=1, eos_id=2,
                                   hard_vocab_limit=False, minloglevel=2)
    tok = Tokenizer(proto.getvalue())
    assert tok.pad_id == tok.unk_id != tok.eos_id  # the fallback is unk, never eos
    with pytest.raises(ValueError, match="pad id == eos id == 2; pad must differ from eos"):
        Tokenizer(proto.getvalue(), pad_fallback=2)
