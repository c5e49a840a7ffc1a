"""How a conversation becomes token ids: the plain template, or a checkpoint's own.

Two formats, one interface (:class:`ChatFormat`):

- **plain** (:mod:`rlhf_jax.data.chat`): ``User: …\\nAssistant:``, the lab's
  and the default for tokenizers this project trains. The reply is its text
  and the EOS id.
- **a checkpoint's chat template**: the Jinja ``chat_template`` of the
  ``tokenizer_config.json`` shipped beside ``tokenizer.model`` (imported with
  a Hugging Face folder), rendered as transformers renders it
  (``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``), in
  a sandbox. The rendered text holds special tokens as strings ("<s>",
  "<start_of_turn>"); it is split on them, each becomes its id and the text
  between is encoded by SentencePiece, as transformers' tokenizers do. The
  reply is what the whole conversation adds to the rendered prompt, and ends
  with the EOS id (appended when the template does not end the turn with it),
  so a policy learns to stop where the sampler stops.

BOS: a template writes its own (``{{ bos_token }}``); the plain template gets
one in front when the tokenizer config says ``add_bos_token`` (Llama, Gemma).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from rlhf_jax.data import chat

CONFIG_FILE = "tokenizer_config.json"
GENERATION_FILE = "generation_config.json"
SIDE_FILES = (CONFIG_FILE, GENERATION_FILE, "special_tokens_map.json")
TEMPLATES = ("auto", "plain")


def _content(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token if isinstance(token, str) else None


def read_json(path: str) -> dict:
    """A JSON object file of a checkpoint folder ({} when there is none; an error naming it
    when it is not valid JSON)."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def read_tokenizer_config(folder: str) -> dict:
    """The folder's tokenizer_config.json ({} when there is none)."""
    return read_json(os.path.join(folder, CONFIG_FILE))


class ChatFormat:
    """Turns -> ids for one tokenizer: ``prompt_ids(turns)`` and ``reply_ids(turns, text)``."""

    def __init__(self, tok, tokenizer_config: dict | None = None, template: str = "auto"):
        if template not in TEMPLATES:
            raise ValueError(f"tokenizer.template={template!r}; expected one of {list(TEMPLATES)}")
        cfg = tokenizer_config or {}
        self.tok = tok
        source = cfg.get("chat_template")
        if isinstance(source, list):  # named templates: the default one
            source = next((t["template"] for t in source if t.get("name") == "default"), None)
        self.template = source if template == "auto" and source else None
        self.add_bos = bool(cfg.get("add_bos_token", False)) and tok.bos_id >= 0
        self.strings = {name: _content(cfg.get(f"{name}_token")) or
                        (tok.id_to_piece(i) if i >= 0 else None)
                        for name, i in (("bos", tok.bos_id), ("eos", tok.eos_id),
                                        ("unk", tok.unk_id), ("pad", tok.pad_id))}
        self.specials = self._special_ids(cfg)
        self._compiled = None

    @property
    def name(self) -> str:
        return "chat_template" if self.template else "plain"

    def _special_ids(self, cfg: dict) -> dict[str, int]:
        out = {}
        for i in range(self.tok.vocab_size):
            if self.tok.is_control(i):
                out[self.tok.id_to_piece(i)] = i
        for i, token in (cfg.get("added_tokens_decoder") or {}).items():
            text = _content(token)
            if text and int(i) < self.tok.vocab_size:
                out[text] = int(i)
        ids = {"bos": self.tok.bos_id, "eos": self.tok.eos_id, "unk": self.tok.unk_id,
               "pad": self.tok.pad_id}
        for name, text in self.strings.items():  # "<bos>" in the config, "<s>" in the model
            if text and ids[name] >= 0:
                out.setdefault(text, ids[name])
        return out

    def encode_text(self, text: str) -> list[int]:
        """Ids of rendered text: special-token strings become their ids, the rest is encoded."""
        if not self.specials:
            return self.tok.encode(text)
        pattern = "|".join(re.escape(s) for s in sorted(self.specials, key=len, reverse=True))
        ids, pos = [], 0
        for m in re.finditer(pattern, text):
            if m.start() > pos:
                ids += self.tok.encode(text[pos:m.start()])
            ids.append(self.specials[m.group(0)])
            pos = m.end()
        if pos < len(text):
            ids += self.tok.encode(text[pos:])
        return ids

    def _render(self, turns: Sequence[tuple[str, str]], add_generation_prompt: bool) -> str:
        if self._compiled is None:
            from jinja2.exceptions import TemplateError  # noqa: PLC0415
            from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

            def raise_exception(message):
                raise TemplateError(message)

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=["jinja2.ext.loopcontrols"])
            env.globals["raise_exception"] = raise_exception
            self._compiled = env.from_string(self.template)
        messages = [{"role": role, "content": text} for role, text in turns]
        return self._compiled.render(messages=messages,
                                     add_generation_prompt=add_generation_prompt,
                                     **{f"{k}_token": v or "" for k, v in self.strings.items()})

    def prompt_ids(self, turns: Sequence[tuple[str, str]]) -> list[int]:
        """The ids a reply to `turns` (ending with a user turn) is sampled after."""
        if self.template is None:
            ids = self.tok.encode(chat.render_prompt(turns))
            return [self.tok.bos_id, *ids] if self.add_bos else ids
        return self.encode_text(self._render(turns, add_generation_prompt=True))

    def reply_ids(self, turns: Sequence[tuple[str, str]], reply: str) -> list[int]:
        """The ids of `reply` after :meth:`prompt_ids` of `turns`, ending with EOS."""
        eos = self.tok.eos_id
        if self.template is None:
            return self.tok.encode(reply) + [eos]
        prompt = self.prompt_ids(turns)
        whole = self.encode_text(self._render([*turns, ("assistant", reply.strip())], False))
        if whole[: len(prompt)] != prompt:
            raise ValueError(
                "the chat template renders the prompt differently once the reply follows it, "
                "so the reply's tokens cannot be told apart; use --config.tokenizer.template="
                "plain")
        ids = whole[len(prompt):]
        return ids if ids and ids[-1] == eos else [*ids, eos]
