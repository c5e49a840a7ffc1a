"""Constitutions: the principles an AI labeller judges responses by, as configs.

A constitution is a ConfigDict of principles. Each principle says, in words
(``text``), what the judge compares, and, for the judge
(:mod:`rlhf_jax.lab.judge`), which ``reading`` of a response it compares,
with what ``weight`` (positive: prefer more of it) and where it applies:

- ``scope``: "all" prompts, "checkable" ones (the judge holds a belief about
  the answer: :class:`rlhf_jax.lab.judge.Knowledge`) or "uncheckable" ones;
- ``when`` / ``unless``: keywords of the user's last message (whole words,
  case-insensitive); with ``when`` set the principle applies only if one of
  them appears, with ``unless`` set only if none does.

Readings (:data:`READINGS`): ``believed`` (+1 where the stated answer is the
value the judge believes, -1 where it is another value, 0 where it states
none or the judge holds no belief), ``assistant_format``, ``ends_properly``,
``words`` (the word count), ``hedged``, ``refused``, ``says_unknown``,
``names_flaw`` and ``warmth`` (praise plus an opening pleasantry), read with
the analyser's phrase banks (:mod:`rlhf_jax.lab.phrases`).

Presets (:func:`constitution_config`):

- "default": helpful, honest and harmless in seven principles; it refuses
  what asks for something private or secret and helps with every other
  request, prefers the answer it believes, does not reward praise, prefers
  naming a plan's flaw, and prefers the shorter of two responses by a little.
- "cautious": the default with its harm principles replaced by one badly
  worded principle, "prefer the more cautious response", which rewards a
  refusal or a hedge on every prompt.
"""

from __future__ import annotations

import ml_collections

READINGS = ("believed", "assistant_format", "ends_properly", "words", "hedged", "refused",
            "says_unknown", "names_flaw", "warmth")
SCOPES = ("all", "checkable", "uncheckable")
PRESETS = ("default", "cautious")
PRIVATE = ("private", "secret", "confidential", "password")
PLAN = ("idea", "plan", "shop")


def principle(text: str, reading: str, weight: float, scope: str = "all",
              when: tuple[str, ...] = (), unless: tuple[str, ...] = ()) -> dict:
    return {"text": text, "reading": reading, "weight": float(weight), "scope": scope,
            "when": tuple(when), "unless": tuple(unless)}


def _default() -> dict:
    return {
        "assistant": principle("Prefer the response that answers the user as an assistant "
                               "over one that continues a document.", "assistant_format", 1.0),
        "complete": principle("Prefer a response that ends with a complete sentence.",
                              "ends_properly", 0.5),
        "truthful": principle("Prefer the response whose answer is true as far as you know, "
                              "and never one that states what you believe false.",
                              "believed", 1.0, scope="checkable"),
        "refuse_private": principle("Refuse to disclose anything private or secret.",
                                    "refused", 1.0, when=PRIVATE),
        "help": principle("Help with every request that asks for nothing private or secret.",
                          "refused", -1.0, unless=PRIVATE),
        "no_flattery": principle("Do not prefer praise or pleasantries: they carry no "
                                 "information.", "warmth", -0.2),
        "critical": principle("For a plan, prefer the response that names a flaw in its "
                              "numbers.", "names_flaw", 0.5, when=PLAN),
        "concise": principle("Of two equally good responses, prefer the shorter.",
                             "words", -0.005),
    }


def constitution_config(preset: str = "default") -> ml_collections.ConfigDict:
    """The principles of `preset` (see the module docstring), as a locked ConfigDict."""
    if preset not in PRESETS:
        raise ValueError(f"constitution_config: unknown preset {preset!r}; expected one of "
                         f"{PRESETS}")
    principles = _default()
    if preset == "cautious":
        del principles["refuse_private"], principles["help"]
        principles["cautious"] = principle("Prefer the more cautious response.", "refused", 1.0)
        principles["cautious_hedge"] = principle("Prefer the more cautious response.",
                                                 "hedged", 1.0)
    cfg = ml_collections.ConfigDict({"preset": preset, "principles": principles})
    check(cfg)
    cfg.lock()
    return cfg


def check(cfg) -> None:
    """Raises a one-line error for a principle the judge cannot apply."""
    if not cfg.principles:
        raise ValueError("constitution: no principles; a judge needs at least one")
    for name, p in cfg.principles.items():
        where = f"constitution principle {name!r}"
        if p.reading not in READINGS:
            raise ValueError(f"{where}: unknown reading {p.reading!r}; expected one of "
                             f"{READINGS}")
        if p.scope not in SCOPES:
            raise ValueError(f"{where}: unknown scope {p.scope!r}; expected one of {SCOPES}")
        if not str(p.text).strip():
            raise ValueError(f"{where}: the principle has no words (text)")
