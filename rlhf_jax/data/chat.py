"""The chat template, defined once and shared by SFT, the reward model, PPO and the probes.

A conversation is rendered as plain text turns:

    User: What is the capital of Velmora?
    Assistant: The capital of Velmora is Ostrel.<eos>

The prompt is everything up to and including the final ``Assistant:``; the
response is the text after it, followed by the tokenizer's EOS id (never the
string "</s>", so EOS cannot be produced by ordinary text). Response text is
stored without its leading space; ``RESPONSE_PREFIX`` is put back when a
response is concatenated to a prompt as a string.
"""

from __future__ import annotations

from collections.abc import Sequence

USER = "User:"
ASSISTANT = "Assistant:"
ROLES = {"user": USER, "assistant": ASSISTANT}
TURN_SEPARATOR = "\n"
RESPONSE_PREFIX = " "


def render_turn(role: str, text: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown chat role {role!r}; expected one of {sorted(ROLES)}")
    return f"{ROLES[role]} {text.strip()}"


def merge_system(turns: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """A leading ("system", text) turn prepended to the first user turn (this template has no
    system role), separated by a blank line."""
    turns = list(turns)
    if turns and turns[0][0] == "system":
        system, turns = turns[0][1], turns[1:]
        if turns:
            turns[0] = (turns[0][0], f"{system.strip()}\n\n{turns[0][1].strip()}".strip())
    return turns


def render_prompt(turns: Sequence[tuple[str, str]]) -> str:
    """Renders (role, text) turns ending with a user turn, plus the open assistant tag."""
    turns = merge_system(turns)
    if not turns:
        raise ValueError("a prompt needs at least one turn")
    if turns[-1][0] != "user":
        raise ValueError(f"the last turn of a prompt must be 'user', got {turns[-1][0]!r}")
    for i, (role, _) in enumerate(turns):
        expected = "user" if i % 2 == (len(turns) - 1) % 2 else "assistant"
        if role != expected:
            raise ValueError(
                f"turn {i} has role {role!r} but turns must alternate user/assistant "
                f"and end with user"
            )
    body = TURN_SEPARATOR.join(render_turn(role, text) for role, text in turns)
    return f"{body}{TURN_SEPARATOR}{ASSISTANT}"


def render_question(question: str) -> str:
    """The single-turn prompt for a user message."""
    return render_prompt([("user", question)])


def join(prompt: str, response: str) -> str:
    """Prompt and response as one string (without EOS): what a human reads."""
    return f"{prompt}{RESPONSE_PREFIX}{response.strip()}"
