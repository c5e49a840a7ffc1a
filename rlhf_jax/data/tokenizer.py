"""SentencePiece tokenizer: train from a text iterator, load a `.model`, batch encode/decode.

Special ids are fixed for models this project trains: pad 0, unk 1, bos 2,
eos 3. Pad is never EOS: with pad == eos the EOS token would be masked out of
every loss and the policy would never learn to stop. A `.model` shipped with a
Hugging Face checkpoint keeps its own ids; it must define eos, and where it has
no pad id one is taken from `pad_fallback` (an id that is not eos).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
    """A thin, picklable wrapper over `sentencepiece.SentencePieceProcessor`."""

    def __init__(self, model_proto: bytes, *, pad_fallback: int | None = None, source: str = "",
                 tokenizer_config: dict | None = None, template: str = "auto"):
        self._proto = model_proto
        self._config, self._template = dict(tokenizer_config or {}), template
        self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.source = source
        self.eos_id = self._sp.eos_id()
        self.bos_id = self._sp.bos_id()
        self.unk_id = self._sp.unk_id()
        pad = self._sp.pad_id()
        self.defines_pad = pad >= 0  # False: pad_fallback (or unk) stands in
        if pad < 0:
            pad = pad_fallback if pad_fallback is not None else self.unk_id
        self.pad_id = pad
        where = f" ({source})" if source else ""
        if self.eos_id < 0:
            raise ValueError(f"tokenizer{where} defines no eos id; RLHF needs one to end responses")
        if self.pad_id == self.eos_id:
            raise ValueError(
                f"tokenizer{where} has pad id == eos id == {self.eos_id}; pad must differ from "
                "eos or EOS gets masked and the policy never learns to stop"
            )
        from rlhf_jax.data.template import ChatFormat  # noqa: PLC0415

        # How turns become ids: the plain template, or the checkpoint's chat template.
        self.chat = ChatFormat(self, self._config, template)

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        model_type: str = "unigram",
        byte_fallback: bool = False,
        character_coverage: float = 1.0,
        max_sentence_length: int = 16384,
    ) -> Tokenizer:
        """Trains a model on `texts` (documents; newlines are kept as their own piece)."""
        if vocab_size < 8:
            raise ValueError(f"tokenizer vocab_size={vocab_size} is too small (need >= 8)")
        proto = io.BytesIO()
        # Whitespace is kept as written (identity normalisation, no collapsing) so that a
        # decoded response is the text the analyser and annotators read.
        spm.SentencePieceTrainer.train(
            sentence_iterator=(t for t in texts if t),
            model_writer=proto,
            vocab_size=vocab_size,
            model_type=model_type,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            user_defined_symbols=["\n"],
            byte_fallback=byte_fallback,
            split_digits=True,
            character_coverage=character_coverage,
            hard_vocab_limit=False,
            max_sentence_length=max_sentence_length,
            num_threads=1,  # deterministic: the same corpus gives the same model bytes
            minloglevel=2,
        )
        return cls(proto.getvalue(), source="trained")

    @classmethod
    def load(cls, path: str, *, pad_fallback: int | None = None,
             template: str = "auto") -> Tokenizer:
        """Loads a ``.model``, with the ``tokenizer_config.json`` beside it if there is one
        (its chat template, special tokens and ``add_bos_token``; see data/template.py)."""
        from rlhf_jax.data.template import read_tokenizer_config  # noqa: PLC0415

        if not os.path.exists(path):
            raise FileNotFoundError(f"tokenizer model not found: {path}")
        with open(path, "rb") as f:
            proto = f.read()
        config = read_tokenizer_config(os.path.dirname(os.path.abspath(path)))
        try:
            spm.SentencePieceProcessor(model_proto=proto)
        except RuntimeError as e:  # sentencepiece's parse error
            raise ValueError(f"{path} is not a SentencePiece model: {e}") from e
        return cls(proto, pad_fallback=pad_fallback, source=path, tokenizer_config=config,
                   template=template)

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(self._proto)

    def __getstate__(self):
        return {"proto": self._proto, "pad": self.pad_id, "source": self.source,
                "config": self._config, "template": self._template}

    def __setstate__(self, state):
        self.__init__(state["proto"], pad_fallback=state["pad"], source=state["source"],
                      tokenizer_config=state.get("config"), template=state.get("template", "auto"))

    # -- encoding ---------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
        ids = self._sp.encode(text)
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def encode_batch(self, texts: Sequence[str], *, bos=False, eos=False) -> list[list[int]]:
        out = self._sp.encode(list(texts))
        head, tail = ([self.bos_id] if bos else []), ([self.eos_id] if eos else [])
        return [head + ids + tail for ids in out]

    def decode(self, ids: Sequence[int] | np.ndarray, *, stop_at_eos: bool = True) -> str:
        """Decodes ids, dropping pad/bos and (by default) everything from the first EOS on."""
        clean = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if stop_at_eos and i == self.eos_id:
                break
            if i in (self.pad_id, self.bos_id, self.eos_id) or i < 0 or i >= self.vocab_size:
                continue
            clean.append(i)
        return self._sp.decode(clean)

    def decode_batch(self, ids: np.ndarray | Sequence[Sequence[int]], *, stop_at_eos=True):
        return [self.decode(row, stop_at_eos=stop_at_eos) for row in ids]

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(i)

    def is_control(self, i: int) -> bool:
        """A control piece (bos, eos, pad, ...): never produced by encoding text."""
        return bool(self._sp.is_control(i))

    @property
    def has_byte_fallback(self) -> bool:
        """Whether unknown characters are spelled as bytes (pieces <0x00>..<0xFF>)."""
        return self._sp.piece_to_id("<0x41>") != self.unk_id
