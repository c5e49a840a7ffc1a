"""JSONL/text readers: fixture formats parse to the right turns; bad lines name file:line."""

import json
import os

import pytest

from rlhf_jax.data import chat, jsonl
from rlhf_jax.data.jsonl import DataError, PreferenceRecord, SFTRecord, TextRecord

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")


def fixture(name):
    return os.path.join(FIXTURES, name)


def test_sft_prompt_response():
    result = jsonl.read_sft_jsonl(fixture("sft_prompt_response.jsonl"))
    path = fixture("sft_prompt_response.jsonl")
    assert result.skipped == {}
    assert result.records == [
        SFTRecord(
            (("user", "What is the capital of Velmora?"),),
            "The capital of Velmora is Ostrel.",
            f"{path}:1",
        ),
        # line 2 is blank; responses are stripped
        SFTRecord((("user", "What is 17 + 25?"),), "42", f"{path}:3"),
    ]


def test_sft_chat_with_system_message():
    records = jsonl.read_sft_jsonl(fixture("sft_chat.jsonl")).records
    assert records[0].turns == (("user", "Hi there"),)
    assert records[0].response == "Hello! How can I help?"
    assert records[1].turns == (
        ("system", "Answer briefly."),
        ("user", "What is 2 + 2?"),
        ("assistant", "4"),
        ("user", "Are you sure? I think it is 5."),
    )
    assert records[1].response == "Yes, 2 + 2 is 4."
    # The plain template has no system role: the system text opens the first user turn.
    assert chat.render_prompt(records[1].turns).startswith(
        "User: Answer briefly.\n\nWhat is 2 + 2?\nAssistant: 4\nUser: Are you sure?")


def test_prompts_read_as_sft_records_do(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"prompt": "Name a colour."}\n'
        '{"messages": [{"role": "system", "content": "Be brief."}, '
        '{"role": "user", "content": "Hi"}]}\n'
        '{"messages": [{"role": "user", "content": "Hi"}, '
        '{"role": "assistant", "content": "Hello"}]}\n')
    with pytest.raises(jsonl.DataError, match=r"prompts.jsonl:3: no final user message: a prompt "
                                              r"must end with a user message"):
        jsonl.read_prompt_jsonl(str(path))
    records = jsonl.read_prompt_jsonl(str(path), skip_bad=True)
    assert [r.turns for r in records.records] == [
        (("user", "Name a colour."),), (("system", "Be brief."), ("user", "Hi"))]
    assert records.skipped == {"no final user message": 1}


def test_preference_pairs_and_hh_prompt():
    records = jsonl.read_preference_jsonl(fixture("pref_pairs.jsonl")).records
    assert records[0] == PreferenceRecord(
        (("user", "Name a colour."),),
        "Blue.",
        "I cannot help with that.",
        fixture("pref_pairs.jsonl") + ":1",
    )
    assert records[1].turns == (("user", "What is 3 + 4?"),)
    assert (records[1].chosen, records[1].rejected) == ("7", "8")


def test_preference_hh_multi_turn():
    records = jsonl.read_preference_jsonl(fixture("pref_hh.jsonl")).records
    assert records[0].turns == (("user", "What is the capital of Velmora?"),)
    assert (records[0].chosen, records[0].rejected) == ("Ostrel.", "I am not sure.")
    assert records[1].turns == (
        ("user", "I think the capital of Velmora is Tarn."),
        ("assistant", "It is Ostrel."),
        ("user", "Are you sure?"),
    )
    assert records[1].chosen == "Yes, the capital is Ostrel."
    assert records[1].rejected == "You are right, it is Tarn."


def test_text_corpus_folder():
    records = jsonl.read_text_corpus(os.path.join(FIXTURES, "corpus")).records
    assert [r.text for r in records] == [
        "The first document.\nIt has two lines.",
        "The second document.",
        "A third document from JSONL.",
    ]
    assert records[2] == TextRecord(
        "A third document from JSONL.", os.path.join(FIXTURES, "corpus", "b.jsonl") + ":1"
    )


HH_Q = "\n\nHuman: q\n\nAssistant: "
SFT_BAD = [
    ('{"prompt": "a", "response": "b"', "malformed JSON", "Expecting"),
    ('["a", "b"]', "wrong type", "a line must be a JSON object, got array"),
    ('{"prompt": "a"}', "missing field", "no 'response' field"),
    ('{"prompt": 3, "response": "b"}', "wrong type", "field 'prompt' must be a string, got number"),
    ('{"prompt": "a", "response": "  "}', "empty response", "field 'response' is empty"),
    ('{"prompt": "", "response": "b"}', "empty prompt", "field 'prompt' is empty"),
    ('{"messages": {}}', "wrong type", "field 'messages' must be an array, got object"),
    ('{"messages": [3]}', "wrong type", "messages[0] must be an object, got number"),
    ('{"messages": [{"role": "user"}]}', "missing field", "messages[0] has no 'content' field"),
    (
        '{"messages": [{"role": "user", "content": 1}]}',
        "wrong type",
        "messages[0].content must be a string, got number",
    ),
    (
        '{"messages": [{"role": "bot", "content": "x"}]}',
        "unknown role",
        "messages[0].role is 'bot'; expected user/assistant/system",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]}',
        "turns do not alternate",
        "messages[1] has role 'user' where 'assistant' was expected",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}]}',
        "no final assistant message",
        "a demonstration must end with an assistant message",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"}, '
        '{"role": "assistant", "content": "y"}]}',
        "misplaced system message",
        "messages[1] is a system message after the first user turn",
    ),
    (
        '{"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "y"}]}',
        "empty turn",
        "user turn 0 is empty",
    ),
    (
        '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}',
        "empty response",
        "the final assistant message is empty",
    ),
]
PREF_BAD = [
    ('{"prompt": "a", "chosen": "b"}', "missing field", "no 'rejected' field"),
    ('{"prompt": "a", "chosen": "", "rejected": "c"}', "empty response", "'chosen' is empty"),
    (
        '{"prompt": "\\n\\nHuman: a", "chosen": "b", "rejected": "c"}',
        "malformed dialogue",
        "must end with an open 'Assistant:' turn",
    ),
    ('{"chosen": "x"}', "missing field", "no 'rejected' field"),
    ('{"chosen": 1, "rejected": "x"}', "wrong type", "field 'chosen' must be a string"),
    (
        json.dumps({"chosen": "Human: q", "rejected": HH_Q + "b"}),
        "malformed dialogue",
        "field 'chosen' must start with '\\n\\nHuman:'",
    ),
    (
        json.dumps({"chosen": HH_Q + "a\n\nAssistant: b", "rejected": HH_Q + "b"}),
        "turns do not alternate",
        "field 'chosen': turn 2 is 'Assistant' where 'Human' was expected",
    ),
    (
        json.dumps({"chosen": HH_Q + "a\n\nHuman: more", "rejected": HH_Q + "b"}),
        "no final assistant message",
        "field 'chosen' must end with an 'Assistant:' turn",
    ),
    (
        json.dumps({"chosen": HH_Q + "a", "rejected": HH_Q}),
        "empty response",
        "field 'rejected': the final assistant turn is empty",
    ),
    (
        json.dumps({"chosen": HH_Q + "a", "rejected": "\n\nHuman: other\n\nAssistant: b"}),
        "HH prompts differ",
        "first difference at turn 0",
    ),
    (
        json.dumps(
            {"chosen": "\n\nHuman: \n\nAssistant: a", "rejected": "\n\nHuman: \n\nAssistant: b"}
        ),
        "empty turn",
        "field 'chosen': user turn 0 is empty",
    ),
]
TEXT_BAD = [
    ('{"text": ""}', "empty text", "field 'text' is empty"),
    ('{"body": "x"}', "missing field", "no 'text' field"),
]
READERS = {
    "sft": jsonl.read_sft_jsonl,
    "pref": jsonl.read_preference_jsonl,
    "text": jsonl.read_text_corpus,
}
CASES = (
    [("sft", *c) for c in SFT_BAD]
    + [("pref", *c) for c in PREF_BAD]
    + [("text", *c) for c in TEXT_BAD]
)


@pytest.mark.parametrize("reader,line,kind,detail", CASES)
def test_bad_line_raises_with_file_and_line(tmp_path, reader, line, kind, detail):
    good = {
        "sft": '{"prompt": "p", "response": "r"}',
        "pref": '{"prompt": "p", "chosen": "c", "rejected": "r"}',
        "text": '{"text": "t"}',
    }[reader]
    path = tmp_path / "data.jsonl"
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(DataError) as err:
        READERS[reader](str(path))
    assert str(err.value).startswith(f"{path}:3: {kind}: ")
    assert detail in str(err.value)
    assert kind in jsonl.PROBLEMS
    result = READERS[reader](str(path), skip_bad=True)
    assert result.skipped == {kind: 1}
    assert len(result.records) == 2


def test_skip_bad_counts_by_problem(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        "not json\n"
        '{"prompt": "a", "response": ""}\n'
        '{"prompt": "a", "response": "b"}\n'
        "{broken\n"
        '{"prompt": "a"}\n'
    )
    result = jsonl.read_sft_jsonl(str(path), skip_bad=True)
    assert [r.source for r in result.records] == [f"{path}:3"]
    assert result.skipped == {"malformed JSON": 2, "empty response": 1, "missing field": 1}


def test_path_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope: not found \(expected a file or a folder of"):
        jsonl.read_sft_jsonl(str(tmp_path / "nope"))
    with pytest.raises(DataError, match=r"folder holds no \.jsonl files"):
        jsonl.read_sft_jsonl(str(tmp_path))
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DataError, match=r"notes\.md: unsupported file type \(expected \.jsonl\)"):
        jsonl.read_sft_jsonl(str(tmp_path))


def test_non_utf8_and_line_separators(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "caf\xe9", "response": "b"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not UTF-8 text \(invalid continuation byte"):
        jsonl.read_sft_jsonl(str(path))
    # U+2028 inside a JSON string is one line, not two.
    path = tmp_path / "sep.jsonl"
    path.write_text('{"prompt": "a\u2028b", "response": "c"}\r\n{"prompt": "d", "response": "e"}\n')
    records = jsonl.read_sft_jsonl(str(path)).records
    assert [r.source for r in records] == [f"{path}:1", f"{path}:2"]
    assert records[0].turns == (("user", "a\u2028b"),)
