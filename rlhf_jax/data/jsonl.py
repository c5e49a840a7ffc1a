"""Readers for local text, SFT and preference files, with errors that name file and line.

Every reader takes a file or a folder (its files read in sorted name order) and
returns a `ReadResult`: the parsed records and a `skipped` count per problem.
A bad line raises `DataError("<file>:<line>: <problem>: <detail>")`; with
`skip_bad=True` it is left out and counted under its problem instead, so
nothing is dropped without a trace. Blank lines in JSONL files are not records
and are ignored.

Formats:

- Text corpus: `.txt` files hold documents separated by one or more blank
  lines (a file without a blank line is a single document); `.jsonl` files
  hold `{"text": str}` lines.
- SFT: `{"prompt": str, "response": str}` or chat
  `{"messages": [{"role": "user"|"assistant"|"system", "content": str}, ...]}`
  ending with an assistant message. System messages may only open the
  conversation; they become one leading ("system", text) turn, which a
  checkpoint's chat template renders as its system role and the plain template
  prepends to the first user turn, separated by a blank line.
- Prompts (PPO, sampling): `{"prompt": str}` or chat `{"messages": [...]}`
  ending with a user message, system messages as for SFT.
- Preferences: `{"prompt": str, "chosen": str, "rejected": str}` (a prompt in
  HH form, "\\n\\nHuman: ...\\n\\nAssistant:", is split into turns), or
  Anthropic HH-RLHF `{"chosen": dialogue, "rejected": dialogue}`, two full
  dialogues that share every turn but the final assistant one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable

Turns = tuple[tuple[str, str], ...]


class DataError(ValueError):
    """Bad input data; the message starts with "<file>:<line>:" where a line is known."""


@dataclasses.dataclass(frozen=True)
class TextRecord:
    """One pretraining document."""

    text: str
    source: str = ""  # "<file>:<line>" (JSONL) or "<file>#<document index>" (txt)


@dataclasses.dataclass(frozen=True)
class SFTRecord:
    """A demonstration: prompt turns ending with a user turn, and the assistant's reply."""

    turns: Turns
    response: str
    source: str = ""


@dataclasses.dataclass(frozen=True)
class PreferenceRecord:
    """A labelled comparison of two replies to the same prompt turns."""

    turns: Turns
    chosen: str
    rejected: str
    source: str = ""


@dataclasses.dataclass(frozen=True)
class RankedRecord:
    """K replies to the same prompt turns with their ranks (0 = best; ties share a rank)."""

    turns: Turns
    responses: tuple[str, ...]
    ranks: tuple[int, ...]
    source: str = ""


@dataclasses.dataclass
class ReadResult:
    """What a reader returns: the records, and how many lines were skipped per problem."""

    records: list
    skipped: dict[str, int]


class _Bad(Exception):
    """A problem with one line; `kind` is the key it is counted under with skip_bad."""

    def __init__(self, kind: str, detail: str):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


# -- files ------------------------------------------------------------------------------------


def _list_files(path: str, suffixes: tuple[str, ...]) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise DataError(f"{path}: not found (expected a file or a folder of {'/'.join(suffixes)})")
    files = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.startswith(".") or os.path.isdir(full):
            continue
        if not name.endswith(suffixes):
            raise DataError(f"{full}: unsupported file type (expected {' or '.join(suffixes)})")
        files.append(full)
    if not files:
        raise DataError(f"{path}: folder holds no {' or '.join(suffixes)} files")
    return files


def _read_jsonl(path: str, parse: Callable[[dict, str], object], skip_bad: bool) -> ReadResult:
    records, skipped = [], {}
    for file in _list_files(path, (".jsonl",)):
        for lineno, line in enumerate(_lines(file), start=1):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            try:
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _Bad("malformed JSON", str(e)) from None
                if not isinstance(obj, dict):
                    raise _Bad("wrong type", f"a line must be a JSON object, got {_kind(obj)}")
                records.append(parse(obj, where))
            except _Bad as bad:
                if not skip_bad:
                    raise DataError(f"{where}: {bad.kind}: {bad.detail}") from None
                skipped[bad.kind] = skipped.get(bad.kind, 0) + 1
    return ReadResult(records, skipped)


def _lines(file: str) -> list[str]:
    with open(file, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8").split("\n")  # not splitlines(): JSON strings may hold U+2028
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{file}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _kind(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def _string(obj: dict, key: str, expected: str, *, empty_kind: str | None = None) -> str:
    if key not in obj:
        raise _Bad("missing field", f"no {key!r} field (expected {expected})")
    value = obj[key]
    if not isinstance(value, str):
        raise _Bad("wrong type", f"field {key!r} must be a string, got {_kind(value)}")
    if not value.strip():
        kind = empty_kind or f"empty {key}"
        raise _Bad(kind, f"field {key!r} is empty")
    return value.strip()


# -- text corpus -------------------------------------------------------------------------------


def read_text_corpus(path: str, skip_bad: bool = False) -> ReadResult:
    """Reads documents from a `.txt`/`.jsonl` file or folder into `TextRecord`s."""
    records, skipped = [], {}

    def parse(obj, where):
        return TextRecord(_string(obj, "text", '{"text": str}', empty_kind="empty text"), where)

    for file in _list_files(path, (".txt", ".jsonl")):
        if file.endswith(".jsonl"):
            part = _read_jsonl(file, parse, skip_bad)
            records.extend(part.records)
            for kind, n in part.skipped.items():
                skipped[kind] = skipped.get(kind, 0) + n
            continue
        text = "\n".join(_lines(file))
        docs = [d.strip("\n") for d in re.split(r"\n[ \t]*\n", text) if d.strip()]
        records.extend(TextRecord(d, f"{file}#{i}") for i, d in enumerate(docs))
    return ReadResult(records, skipped)


# -- SFT ---------------------------------------------------------------------------------------

_SFT_FORMAT = '{"prompt": str, "response": str} or {"messages": [...]}'


def _parse_messages(messages, final: str = "assistant") -> Turns:
    """The turns of a chat record, ending with a `final` turn; a leading system turn stays."""
    if not isinstance(messages, list):
        raise _Bad("wrong type", f"field 'messages' must be an array, got {_kind(messages)}")
    system, turns = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _Bad("wrong type", f"messages[{i}] must be an object, got {_kind(m)}")
        for key in ("role", "content"):
            if key not in m:
                raise _Bad("missing field", f"messages[{i}] has no {key!r} field")
            if not isinstance(m[key], str):
                raise _Bad(
                    "wrong type", f"messages[{i}].{key} must be a string, got {_kind(m[key])}"
                )
        role, content = m["role"], m["content"]
        if role not in ("user", "assistant", "system"):
            raise _Bad(
                "unknown role", f"messages[{i}].role is {role!r}; expected user/assistant/system"
            )
        if role == "system":
            if turns:
                raise _Bad(
                    "misplaced system message",
                    f"messages[{i}] is a system message after "
                    "the first user turn; system messages may only open the conversation",
                )
            system.append(content.strip())
            continue
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise _Bad(
                "turns do not alternate",
                f"messages[{i}] has role {role!r} where {expected!r} was expected",
            )
        turns.append((role, content.strip()))
    if not turns or turns[-1][0] != final:
        what = "a demonstration" if final == "assistant" else "a prompt"
        article = "an" if final == "assistant" else "a"
        raise _Bad(f"no final {final} message", f"{what} must end with {article} {final} message")
    for i, (role, text) in enumerate(turns[:-1] if final == "assistant" else turns):
        if not text:
            raise _Bad("empty turn", f"{role} turn {i} is empty")
    if final == "assistant" and not turns[-1][1]:
        raise _Bad("empty response", "the final assistant message is empty")
    lead = [("system", "\n\n".join(system).strip())] if system else []
    return tuple(lead + turns)


def _parse_sft(obj: dict, where: str) -> SFTRecord:
    if "messages" in obj:
        turns = _parse_messages(obj["messages"])
        return SFTRecord(turns[:-1], turns[-1][1], where)
    prompt = _string(obj, "prompt", _SFT_FORMAT)
    response = _string(obj, "response", _SFT_FORMAT, empty_kind="empty response")
    return SFTRecord((("user", prompt),), response, where)


def read_sft_jsonl(path: str, skip_bad: bool = False) -> ReadResult:
    """Reads SFT demonstrations (prompt/response or chat messages) into `SFTRecord`s."""
    return _read_jsonl(path, _parse_sft, skip_bad)


# -- prompts ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """Prompt turns ending with a user turn (a leading system turn allowed), to sample from."""

    turns: Turns
    source: str = ""


def _parse_prompt(obj: dict, where: str) -> PromptRecord:
    if "messages" in obj:
        return PromptRecord(_parse_messages(obj["messages"], final="user"), where)
    prompt = _string(obj, "prompt", '{"prompt": str} or {"messages": [...]} ending with a user '
                                    "message")
    return PromptRecord((("user", prompt),), where)


def read_prompt_jsonl(path: str, skip_bad: bool = False) -> ReadResult:
    """Reads prompts ({"prompt"} or chat {"messages"}, as SFT records without the reply)."""
    return _read_jsonl(path, _parse_prompt, skip_bad)


# -- preferences -------------------------------------------------------------------------------

_HH_MARKER = re.compile(r"\n\n(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _split_hh(text: str, field: str) -> list[tuple[str, str]]:
    """Splits "\\n\\nHuman: a\\n\\nAssistant: b..." into alternating (role, text) turns."""
    parts = _HH_MARKER.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise _Bad(
            "malformed dialogue",
            f"field {field!r} must start with '\\n\\nHuman:' (Anthropic HH format)",
        )
    turns = []
    for i in range(1, len(parts), 2):
        role = _HH_ROLES[parts[i]]
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if role != expected:
            raise _Bad(
                "turns do not alternate",
                f"field {field!r}: turn {len(turns)} is {parts[i]!r} where "
                f"{'Human' if expected == 'user' else 'Assistant'!r} was expected",
            )
        turns.append((role, parts[i + 1].strip()))
    return turns


def _hh_prompt(turns: list[tuple[str, str]], field: str) -> Turns:
    for i, (role, text) in enumerate(turns):
        if not text:
            raise _Bad("empty turn", f"field {field!r}: {role} turn {i} is empty")
    return tuple(turns)


def _parse_preference(obj: dict, where: str) -> PreferenceRecord:
    if "prompt" in obj:
        fmt = '{"prompt": str, "chosen": str, "rejected": str}'
        prompt = _string(obj, "prompt", fmt)
        chosen = _string(obj, "chosen", fmt, empty_kind="empty response")
        rejected = _string(obj, "rejected", fmt, empty_kind="empty response")
        if _HH_MARKER.search("\n\n" + prompt):
            turns = _split_hh("\n\n" + prompt, "prompt")
            if turns[-1] != ("assistant", ""):
                raise _Bad(
                    "malformed dialogue",
                    "an HH-style 'prompt' must end with an open 'Assistant:' turn",
                )
            return PreferenceRecord(_hh_prompt(turns[:-1], "prompt"), chosen, rejected, where)
        return PreferenceRecord((("user", prompt),), chosen, rejected, where)
    fmt = 'HH {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}'
    sides = {}
    for field in ("chosen", "rejected"):
        if field not in obj:
            raise _Bad("missing field", f"no {field!r} field (expected {fmt} or a 'prompt' field)")
        if not isinstance(obj[field], str):
            raise _Bad("wrong type", f"field {field!r} must be a string, got {_kind(obj[field])}")
    for field in ("chosen", "rejected"):
        turns = _split_hh(obj[field], field)
        if turns[-1][0] != "assistant":
            raise _Bad(
                "no final assistant message", f"field {field!r} must end with an 'Assistant:' turn"
            )
        if not turns[-1][1]:
            raise _Bad("empty response", f"field {field!r}: the final assistant turn is empty")
        sides[field] = turns
    prompt_c, prompt_r = sides["chosen"][:-1], sides["rejected"][:-1]
    if prompt_c != prompt_r:
        n = next(
            (i for i, (a, b) in enumerate(zip(prompt_c, prompt_r)) if a != b),
            min(len(prompt_c), len(prompt_r)),
        )
        raise _Bad(
            "HH prompts differ",
            f"'chosen' and 'rejected' dialogues differ before their final assistant "
            f"turns (first difference at turn {n})",
        )
    return PreferenceRecord(
        _hh_prompt(prompt_c, "chosen"), sides["chosen"][-1][1], sides["rejected"][-1][1], where
    )


def read_preference_jsonl(path: str, skip_bad: bool = False) -> ReadResult:
    """Reads preference pairs (prompt/chosen/rejected or Anthropic HH) into `PreferenceRecord`s."""
    return _read_jsonl(path, _parse_preference, skip_bad)


# The problem names that `ReadResult.skipped` may count.
PROBLEMS = (
    "malformed JSON",
    "wrong type",
    "missing field",
    "empty text",
    "empty prompt",
    "empty response",
    "empty turn",
    "unknown role",
    "misplaced system message",
    "turns do not alternate",
    "no final assistant message",
    "no final user message",
    "malformed dialogue",
    "HH prompts differ",
)
