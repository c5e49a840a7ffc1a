"""The report's rendering: figures as PNG bytes, and the document as Markdown or HTML.

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so drawing
a report neither switches the process's backend nor keeps figures alive. PNGs
are saved at a fixed DPI without the "Software" text chunk, so the same numbers
give the same bytes and a rewritten report is byte-identical.

Each figure function takes series as (x, y) lists (None entries already
removed) and returns the PNG's bytes. `Document` holds the report's blocks and
renders them twice, so the Markdown and the HTML carry the same text and tables.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

DPI = 80
Series = tuple[Sequence[float], Sequence[float]]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _empty(ax, text: str):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def gao_curve(d: np.ndarray, alpha: float, beta: float, kind: str) -> np.ndarray:
    """R(d) of Gao et al.: d(alpha - beta log d) for "rl", d(alpha - beta d) for "bon".

    At d = 0 both are 0 (the limit of d log d).
    """
    d = np.asarray(d, float)
    if kind == "rl":
        safe = np.where(d > 0, d, 1.0)
        return np.where(d > 0, d * (alpha - beta * np.log(safe)), 0.0)
    if kind == "bon":
        return d * (alpha - beta * d)
    raise ValueError(f"gao_curve: kind {kind!r}; expected 'rl' or 'bon'")


def reward_vs_kl(proxy: Series, gold: Series, bon_proxy: Series, bon_gold: Series,
                 rl_fit: tuple[float, float, float] | None,
                 bon_fit: tuple[float, float, float] | None) -> bytes:
    """Proxy and gold reward against d = sqrt(KL): PPO (left) and best-of-n (right).

    A fit is (alpha, beta, baseline): the curve drawn is baseline + R(d), since
    R(d) models the gain over the policy the optimisation starts from.
    """
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=False)
    panels = ((axes[0], "PPO (eval steps)", proxy, gold, rl_fit, "rl", "d(α − β log d)"),
              (axes[1], "best-of-n (SFT samples)", bon_proxy, bon_gold, bon_fit, "bon",
               "d(α − β d)"))  # fmt: skip
    for ax, title, prox, gld, fit, kind, formula in panels:
        ax.set_title(title)
        ax.set_xlabel("d = sqrt(KL to reference, nats)")
        ax.set_ylabel("reward")
        if not len(prox[0]) and not len(gld[0]):
            _empty(ax, "not available")
            continue
        ax.plot(prox[0], prox[1], "o-", color="tab:blue", label="proxy (reward model)")
        ax.plot(gld[0], gld[1], "s-", color="tab:orange", label="gold")
        if fit is not None:
            alpha, beta, base = fit
            top = max(list(gld[0]) + [1e-3])
            grid = np.linspace(0.0, top * 1.05, 100)
            ax.plot(grid, base + gao_curve(grid, alpha, beta, kind), "--", color="tab:red",
                    label=f"gold fit {formula}\nα = {alpha:.4f}, β = {beta:.4f}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def length(tokens: Series, words: Series) -> bytes:
    """Response length over PPO: tokens per iteration (left axis), words at evals (right)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.set_title("Response length over PPO")
    ax.set_xlabel("PPO iteration")
    ax.set_ylabel("ppo/response_length (tokens)", color="tab:blue")
    if len(tokens[0]):
        ax.plot(tokens[0], tokens[1], "-", color="tab:blue", label="tokens (rollouts)")
    right = ax.twinx()
    right.set_ylabel("eval/mean_length (words)", color="tab:green")
    if len(words[0]):
        right.plot(words[0], words[1], "o-", color="tab:green", label="words (probes)")
    if not len(tokens[0]) and not len(words[0]):
        _empty(ax, "not available")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def rates(series: dict[str, Series], title: str, ylabel: str = "rate") -> bytes:
    """Several named series on one axis (the failure-mode rates over PPO's eval steps)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    drawn = 0
    for name, (x, y) in series.items():
        if len(x):
            ax.plot(x, y, "o-", label=name, markersize=3)
            drawn += 1
    if drawn:
        ax.legend(fontsize=8)
    else:
        _empty(ax, "not available")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def two_axes(left: Series, right: Series, title: str, left_label: str, right_label: str,
             xlabel: str = "step") -> bytes:
    """Two series with their own y axes (KL and its coefficient; SFT loss and format rate)."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(left_label, color="tab:blue")
    if len(left[0]):
        ax.plot(left[0], left[1], "-", color="tab:blue")
    other = ax.twinx()
    other.set_ylabel(right_label, color="tab:red")
    if len(right[0]):
        other.plot(right[0], right[1], "o-", color="tab:red", markersize=3)
    if not len(left[0]) and not len(right[0]):
        _empty(ax, "not available")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def finite(x: Sequence, y: Sequence) -> Series:
    """The (x, y) pairs where both are finite numbers, as two lists."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y)
             if _is_number(a) and _is_number(b) and math.isfinite(a) and math.isfinite(b)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Document:
    """Headings, paragraphs, lists, tables and images, rendered as Markdown or HTML."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str):
        """A heading of `level` (1 = title)."""
        self.blocks.append(("h", level, text))

    def para(self, text: str):
        """One paragraph; `code` spans in backticks."""
        self.blocks.append(("p", text))

    def items(self, lines: list[str]):
        """A bulleted list (nothing when `lines` is empty)."""
        if lines:
            self.blocks.append(("ul", lines))

    def table(self, header: list[str], rows: list[list[str]]):
        """A table of already formatted cells; the first column is the row's name."""
        self.blocks.append(("table", header, rows))

    def image(self, name: str, png: bytes, alt: str):
        """A figure, stored as `<name>.png` beside the Markdown and inlined in the HTML."""
        self.blocks.append(("img", name, png, alt))

    def markdown(self) -> str:
        """The document as Markdown; images refer to `<name>.png` beside it."""
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append("#" * block[1] + " " + block[2])
            elif kind == "p":
                out.append(block[1])
            elif kind == "ul":
                out.append("\n".join(f"- {line}" for line in block[1]))
            elif kind == "table":
                esc = lambda cells: " | ".join(c.replace("|", "\\|") for c in cells)
                lines = [f"| {esc(block[1])} |", "|" + "---|" * len(block[1])]
                lines += [f"| {esc(row)} |" for row in block[2]]
                out.append("\n".join(lines))
            else:
                out.append(f"![{block[3]}]({block[1]}.png)")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        """The document as one HTML page: inline CSS, images as base64 data URIs."""
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                out.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "ul":
                out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in block[1])
                           + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{_inline(c)}</th>" for c in block[1])
                body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row)
                               + "</tr>" for row in block[2])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                           "</table>")
            else:
                data = base64.b64encode(block[2]).decode("ascii")
                out.append(f'<p><img alt="{html.escape(block[3])}" '
                           f'src="data:image/png;base64,{data}"></p>')
        style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
                 "table{border-collapse:collapse;margin:1em 0}"
                 "td,th{border:1px solid #bbb;padding:2px 8px;text-align:left}"
                 "img{max-width:100%}")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(out) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """HTML for one line of the document's text: escaped, `code` spans kept as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
