"""The pipeline report: ``R/report/index.md`` and a self-contained ``index.html``.

`write_report(root)` reads what the lab pipeline leaves under `root` (each
phase's ``metrics.jsonl``, ``reward/report/reward_analysis.json``,
``eval/{base,sft,rlhf}.json``, ``timings.json``, ``config.json``, each phase's
``inputs.json``) and writes
one document twice: as Markdown with PNGs beside it, and as one HTML file
with the same text and tables and the PNGs embedded as ``data:`` URIs.

Every number in it is read from those files or computed from them (the Gao et
al. fits, first-to-last changes); a missing file or a fit without enough
points is said in words. Effects are reported as measured, including those
that did not appear: a change is called a rise or a fall only when the two
printed values differ. Writing twice from the same files gives the same bytes.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from rlhf_jax import phases as phase_table
from rlhf_jax import report_plots as plots
from rlhf_jax import report_run as run
from rlhf_jax.metrics import METRICS_FILE, read_metrics
from rlhf_jax.report_plots import Document

PHASES = phase_table.ALL
CHECKPOINTS = (("base", "eval/base.json"), ("SFT", "eval/sft.json"),
               ("RLHF", "eval/rlhf.json"))
ANALYSIS_FILE = "reward/report/reward_analysis.json"
FAILURE_RATES = ("sycophancy_rate", "capitulation_rate", "flattery_rate",
                 "over_refusal_benign", "over_refusal_risky", "hedge_rate",
                 "hallucination_rate")
GAP_MODES = ("sycophancy", "capitulation", "flattery", "verbosity", "hedging",
             "over_refusal", "hallucination")
HEADLINE = ("accuracy_easy", "assistant_accuracy_easy", "accuracy_hard", *FAILURE_RATES,
            "refusal_disallowed", "format_rate", "mean_length", "gold_reward", "proxy_reward",
            "kl")
PLOT_NAMES = ("reward_vs_kl", "length", "failure_modes", "kl_beta", "sft")

# One sentence per probe metric (rlhf_jax/lab/probes.py defines them).
MEANING = {
    "accuracy_easy": "share of easy fact/arithmetic questions answered right",
    "assistant_accuracy_easy": "share of easy fact/arithmetic questions answered right, "
                               "as an assistant (a document continuation that happens "
                               "to name the answer does not count)",
    "accuracy_hard": "share of hard fact/arithmetic questions answered right",
    "sycophancy_rate": "share of prompts with a wrong user belief where the answer agrees "
                       "with that belief",
    "capitulation_rate": "share of pushback prompts with a wrong belief where the answer "
                         "moves to it",
    "flattery_rate": "share of flawed business plans that get praised",
    "over_refusal_benign": "share of benign requests refused",
    "over_refusal_risky": "share of risky-looking but allowed requests refused",
    "refusal_disallowed": "share of disallowed requests refused (higher is better)",
    "hedge_rate": "share of all responses that contain a hedge",
    "hallucination_rate": "share of unanswerable questions answered with neither "
                          "\"I don't know\" nor a refusal",
    "format_rate": "share of responses written as an assistant turn",
    "mean_length": "mean response length in words",
    "gold_reward": "mean gold reward (the lab's exact definition of helpful)",
    "proxy_reward": "mean reward-model score (what PPO maximises)",
    "kl": "KL divergence to the reference (SFT) policy per sequence, in nats",
}
AGREEMENT_MEANING = {
    "n_pairs": "pairs the agreement figures are computed on",
    "num_pairs": "labelled comparison pairs",
    "inter_annotator_agreement": "share of pairs two different members label alike",
    "inter_annotator_agreement_expected": "the same, as expected from the members' "
                                          "choice probabilities",
    "gold_agreement": "share of pairs where a member picks the gold reward's favourite",
    "accuracy_ceiling": "the best expected accuracy of any reward model against this "
                        "panel's labels (mean of max(p, 1 − p), p the members' mean P(A > B))",
    "accuracy_ceiling_from_agreement": "the same estimated from inter-annotator agreement a "
                                       "alone: (1 + sqrt(2a − 1)) / 2",
    "gold_agreement_hard": "gold agreement on hard (uncheckable) questions",
    "gold_agreement_other": "gold agreement on all other families",
    "label_agrees_with_gold": "share of training labels that match the gold preference",
    "gold_ties": "share of pairs the gold reward scores equal",
    "offpolicy_pairs": "share of pairs whose second response is not a policy sample",
    "longer_chosen": "share of pairs differing in length where the longer one is chosen",
    "agreeing_chosen": "share where the response agreeing with the user is chosen",
    "warm_chosen": "share where the warmer (praise, pleasantries) response is chosen",
    "hedged_chosen": "share where the hedged response is chosen",
    "refused_chosen": "share where the refusal is chosen",
    "refused_chosen_risky": "share where the refusal is chosen on risky-looking requests",
}


def fit_gao(d, r, kind: str = "rl") -> tuple[float, float] | None:
    """Least-squares (alpha, beta) of r = d(alpha - beta log d) ("rl") or d(alpha - beta d)
    ("bon") over the points with d > 0; None when they do not determine both.

    Both forms are linear in (alpha, beta). Fewer than two points with d > 0, or
    points that leave the system rank-deficient (every d = 1 for "rl"), give None.
    """
    d, r = np.asarray(d, float), np.asarray(r, float)
    keep = (d > 0) & np.isfinite(d) & np.isfinite(r)
    d, r = d[keep], r[keep]
    if len(d) < 2:
        return None
    second = d * np.log(d) if kind == "rl" else d * d
    design = np.stack([d, -second], axis=1)  # [N, 2]
    solution, _, rank, _ = np.linalg.lstsq(design, r, rcond=None)
    if rank < 2:
        return None
    return float(solution[0]), float(solution[1])


def _num(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value, digits: int = 3) -> str:
    """A number with fixed decimals; "n/a" for a missing or non-finite one."""
    value = _num(value)
    return "n/a" if value is None else f"{value:.{digits}f}"


def _general(value) -> str:
    value = _num(value)
    return "n/a" if value is None else f"{value:.4g}"


def _direction(first, last) -> int:
    """+1 / -1 when the printed (3-decimal) values rise / fall, 0 when equal or missing."""
    a, b = _fmt(first), _fmt(last)
    return 0 if "n/a" in (a, b) or a == b else (1 if float(b) > float(a) else -1)


def _change(name: str, first, last) -> str:
    """'<name> rose from a to b' / 'fell' / 'no change was measured: a → b'."""
    a, b = _fmt(first), _fmt(last)
    if "n/a" in (a, b):
        return f"{name}: not available ({a} → {b})"
    if a == b:
        return f"{name}: no change was measured ({a} → {b})"
    return f"{name} {'rose' if _direction(first, last) > 0 else 'fell'} from {a} to {b}"


_read_json = run.read_json


def _read_phase(root: str, phase: str) -> list[dict] | None:
    path = os.path.join(root, phase, METRICS_FILE)
    if not os.path.exists(path):
        return None
    try:
        return read_metrics(os.path.join(root, phase))
    except json.JSONDecodeError:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                try:
                    if line.strip():
                        json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}: line {lineno}: not valid JSON ({e.msg})") from e
        raise


def _series(records: list[dict] | None, name: str) -> plots.Series:
    """(steps, values) of one metric, finite values only, in file order."""
    records = records or []
    return plots.finite([r.get("step") for r in records if name in r],
                        [r.get(name) for r in records if name in r])


def _last(records: list[dict] | None, name: str) -> float | None:
    values = _series(records, name)[1]
    return values[-1] if values else None


class _Inputs:
    """Everything the report reads, loaded once; None where a file is missing."""

    def __init__(self, root: str):
        self.root = root
        self.phases = {p: _read_phase(root, p) for p in PHASES}
        self.evals = {name: _read_json(root, rel) for name, rel in CHECKPOINTS}
        self.analysis = _read_json(root, ANALYSIS_FILE)

    def missing_phase(self, phase: str) -> str:
        """The sentence for a phase whose metrics.jsonl is missing or holds no record."""
        if self.phases[phase] is None:
            return self.missing(f"{phase}/{METRICS_FILE}")
        return f"Not available: `{phase}/{METRICS_FILE}` holds no records."

    def missing(self, rel: str) -> str:
        """The sentence for a file that is not there."""
        # Paths relative to the root keep the report identical wherever the folder lives.
        return f"Not available: `{rel}` was not found in this run's folder."


def _claims_section(doc: Document, inp: _Inputs):
    """The article's claims this one run can show: single-seed values, no intervals."""
    from rlhf_jax.lab import claims  # noqa: PLC0415

    metrics = {n: (inp.evals[n] or {}).get("metrics") for n, _ in CHECKPOINTS}
    metrics = {n: m if isinstance(m, dict) else None for n, m in metrics.items()}
    if metrics["base"] is None and metrics["SFT"] is None:
        return  # the probe section says what is missing
    run_arm = {"rlhf": metrics["RLHF"], "ppo": [], "reward": None}
    result = {"base": metrics["base"], "sft": metrics["SFT"], "arms": {"run": run_arm}}
    rows = [(c.claim, f"{c.treatment} vs {c.control}", c.metric, c.value(result))
            for c in claims.default_claims(())]
    gain = lambda m: claims.rlhf_gain(result, "run", m)  # noqa: E731
    rows += [("what RLHF changed (this panel, no control)", "RLHF vs SFT", m, gain(m))
             for m in (*FAILURE_RATES, "mean_length", "gold_reward")]
    doc.heading(2, "Claims this run can show")
    doc.para("One seed and one panel: each value is a single paired difference, with no "
             "interval and no unbiased control, so none is a result on its own. The claims "
             "experiment (configs/lab/claims.py) measures every claim over seeds against a "
             "control panel, with 95% intervals and verdicts.")
    doc.table(["claim", "treatment vs control", "metric", "value (one seed)"],
              [[c, t, m, "n/a" if v is None else f"{v:+.3f}"] for c, t, m, v in rows])


def _probe_section(doc: Document, inp: _Inputs):
    doc.heading(2, "Probes: base, SFT and RLHF checkpoints")
    doc.para("The same held-out probe prompts, sampled from each checkpoint under one protocol "
             "and scored by the response analyser and the gold reward; `-` marks a metric a "
             "file does not have, `n/a` one it stores as NaN (an empty probe set).")
    tables = {}
    for name, rel in CHECKPOINTS:
        data = inp.evals[name]
        if data is None:
            doc.para(inp.missing(rel))
            continue
        if not isinstance(data.get("metrics"), dict):
            raise ValueError(f"{os.path.join(inp.root, rel)}: field 'metrics': expected an "
                             "object of metric values")
        tables[name] = data["metrics"]
    if not tables:
        return
    seen = list(dict.fromkeys(k for t in tables.values() for k in t
                              if not k.startswith(("se/", "n/"))))
    names = [m for m in HEADLINE if m in seen] + [m for m in seen if m not in HEADLINE]
    doc.table(["metric", *tables], [[m, *(_with_se(t, m) for t in tables.values())]
                                    for m in names])
    if any(k.startswith("se/") for t in tables.values() for k in t):
        doc.para("± is the standard error over the metric's probe prompts (one sample "
                 "each): the noise of the probe set, not the spread over seeds.")
    glossary = [f"`{m}`: {MEANING[m]}." for m in names if m in MEANING]
    if any(m.startswith("accuracy/") for m in names):
        glossary.append("`accuracy/<family>`: share of one fact/arithmetic family answered "
                        "right.")
    if any(m.startswith("gold_reward/") for m in names):
        glossary.append("`gold_reward/<family>`: mean gold reward on one prompt family.")
    if any(m.startswith(("covered/", "uncovered/")) for m in names):
        glossary.append("`covered/*`, `uncovered/*`: the same on prompts whose family and "
                        "entity the SFT demonstrations did or did not cover (extrapolation).")
    doc.items(glossary)
    for before, after, watched in (("base", "SFT", ("format_rate", "accuracy_easy",
                                                     "accuracy/fact_easy",
                                                     "assistant_accuracy_easy", "gold_reward")),
                                   ("SFT", "RLHF", (*FAILURE_RATES, "mean_length",
                                                    "gold_reward", "proxy_reward"))):
        if before in tables and after in tables:
            doc.para(f"From {before} to {after} (a change is named only where the printed "
                     "values differ; probe sets are finite, so small changes may be noise):")
            doc.items([_change(f"`{m}`", tables[before].get(m), tables[after].get(m))
                       for m in watched if m in tables[before] or m in tables[after]])


def _with_se(metrics: dict, name: str) -> str:
    if name not in metrics:
        return "-"
    se = _num(metrics.get(f"se/{name}"))
    return _fmt(metrics[name]) + (f" ± {_fmt(se)}" if se is not None else "")


def _best_of_n(inp: _Inputs):
    """(rows as (n, kl, d, proxy, gold), fit (alpha, beta, baseline) or None, fit note)."""
    rows = []
    for i, row in enumerate(inp.analysis.get("best_of_n") or []):
        n, kl = (row.get("n"), _num(row.get("kl"))) if isinstance(row, dict) else (None, None)
        if not isinstance(n, int) or kl is None or kl < 0:
            raise ValueError(f"{os.path.join(inp.root, ANALYSIS_FILE)}: best_of_n[{i}]: "
                             "expected an integer 'n' and a number 'kl' >= 0")
        rows.append((n, kl, math.sqrt(kl), _num(row.get("proxy_reward")),
                     _num(row.get("gold_reward"))))
    base = [r[4] for r in rows if r[0] == 1 and r[4] is not None]
    if not base:
        return rows, None, "No best-of-n fit: there is no n = 1 row to measure the gain from."
    points = [(r[2], r[4] - base[0]) for r in rows if r[4] is not None]
    fit = fit_gao([p[0] for p in points], [p[1] for p in points], "bon")
    if fit is None:
        return rows, None, "No best-of-n fit: fewer than 2 rows with d > 0."
    return rows, (*fit, base[0]), (
        f"Fit of the gold gain over n = 1 to d(α − β d): α = {fit[0]:.4f}, β = {fit[1]:.4f}.")


def _reward_section(doc: Document, inp: _Inputs):
    doc.heading(2, "Reward model")
    recs = inp.phases["reward"]
    if not recs:
        doc.para(inp.missing_phase("reward"))
    analysis = {k[len("analysis/"):]: v for r in recs or [] for k, v in r.items()
                if k.startswith("analysis/")}
    if inp.analysis is not None:
        analysis.update({k.removeprefix("analysis/"): v
                         for k, v in (inp.analysis.get("metrics") or {}).items()})
    figures = [
        ("eval/accuracy", _last(recs, "eval/accuracy"), "share of held-out pairs where the "
         "reward model prefers the response the panel labelled better"),
        ("eval/accuracy_ceiling", _last(recs, "eval/accuracy_ceiling"), "the highest "
         "expected accuracy any model can reach on those pairs: the mean over pairs of "
         "max(p, 1 − p), p the panel's mean chance of labelling A better"),
        ("eval/gold_accuracy", _last(recs, "eval/gold_accuracy"), "share of held-out pairs "
         "where it prefers the response the gold reward scores higher"),
        ("eval/loss", _last(recs, "eval/loss"), "Bradley–Terry loss on held-out pairs "
         "(chance is log 2)"),
        ("train/accuracy", _last(recs, "train/accuracy"), "agreement with the panel's labels "
         "on the last logged training batch"),
        ("length_correlation", analysis.get("length_correlation"), "correlation between "
         "score and length in words over SFT samples; above 0, longer scores higher"),
    ]
    if recs or analysis:
        doc.table(["figure", "value", "meaning"], [[n, _fmt(v), m] for n, v, m in figures])
    doc.para("Failure-mode gaps: the mean score of a failure response minus that of an "
             "honest one to the same prompt, and the share of prompts where the failure "
             "scores higher; a positive gap is a preference PPO can amplify.")
    gaps = [(m, _num(analysis.get(f"{m}_gap")), analysis.get(f"{m}_win_rate"))
            for m in GAP_MODES]
    if all(g is None for _, g, _ in gaps):
        doc.para("Not available: no `analysis/*_gap` figures were found.")
    else:
        doc.table(["mode", "gap", "win rate"], [[m, _fmt(g), _fmt(w)] for m, g, w in gaps])
        liked = [f"{m} ({_fmt(g)})" for m, g, _ in gaps if g is not None and g > 0]
        doc.para("The reward model prefers the failure on average for: " + ", ".join(liked)
                 + "." if liked else "The reward model prefers the honest response on "
                 "average for every mode measured.")
    doc.heading(3, "Best-of-n")
    if inp.analysis is None:
        doc.para(inp.missing(ANALYSIS_FILE))
        return
    rows, _, note = _best_of_n(inp)
    doc.para("Best-of-n keeps the reward model's favourite of n SFT samples per prompt; "
             "KL = log n − (n − 1)/n is the analytic bound of its KL to the SFT policy.")
    doc.table(["n", "KL (nats)", "d = sqrt(KL)", "proxy reward", "gold reward"],
              [[str(n), _fmt(kl), _fmt(d), _fmt(p), _fmt(g)] for n, kl, d, p, g in rows])
    if rows:
        doc.items([_change("proxy reward", rows[0][3], rows[-1][3]),
                   _change("gold reward", rows[0][4], rows[-1][4])])
    doc.para(note)


def _panel_section(doc: Document, inp: _Inputs):
    doc.heading(2, "Annotator panel and gold reward")
    report = (inp.analysis or {}).get("panel")
    if not isinstance(report, dict):
        doc.para(inp.missing(ANALYSIS_FILE) if inp.analysis is None
                 else f"Not available: `{ANALYSIS_FILE}` has no `panel` object.")
        return
    settings = report.get("panel") or {}
    doc.para(f"Preset `{settings.get('preset', 'n/a')}`, {settings.get('size', 'n/a')} "
             "members; each member's knob is drawn around the mean with the given spread "
             "(standard deviation).")
    knobs = [(k, v) for k, v in sorted(settings.items()) if isinstance(v, dict)]
    doc.table(["knob", "mean", "spread"],
              [[k, _general(v.get("mean")), _general(v.get("spread"))] for k, v in knobs])
    figures = [(k, v) for k, v in sorted(report.items()) if _num(v) is not None]
    doc.para("Agreement figures of the panel on the comparison pairs:")
    doc.table(["agreement figure", "value", "meaning"],
              [[k, _general(v), AGREEMENT_MEANING.get(k, "")] for k, v in figures])
    weights = report.get("gold_weights")
    if not isinstance(weights, dict):
        doc.para(f"Not available: `{ANALYSIS_FILE}` has no `gold_weights` object.")
        return
    doc.para("Gold reward weights, added when a response has the property (a right answer "
             "= 1); past `word_budget/<family>` words, each word adds `length_per_word`.")
    flat = [(f"{k}/{s}" if isinstance(v, dict) else k, w) for k, v in sorted(weights.items())
            for s, w in (sorted(v.items()) if isinstance(v, dict) else [(None, v)])]
    doc.table(["term", "weight"], [[k, _general(w)] for k, w in flat])


def _overoptimisation(doc: Document, inp: _Inputs, recs: list[dict]):
    """Proxy and gold reward against d = sqrt(eval/kl), the Gao et al. RL fit, and the figure."""
    proxy, gold, negative = ([], []), ([], []), []
    for r in recs:
        kl = _num(r.get("eval/kl"))
        if kl is None:
            continue
        if kl < 0:
            negative.append(str(r.get("step")))
            continue
        for name, points in (("eval/proxy_reward", proxy), ("eval/gold_reward", gold)):
            if _num(r.get(name)) is not None:
                points[0].append(math.sqrt(kl))
                points[1].append(r[name])
    steps = [r.get("step") for r in recs if _num(r.get("eval/kl")) is not None
             and _num(r.get("eval/kl")) >= 0 and _num(r.get("eval/gold_reward")) is not None]
    doc.para("Proxy reward is the reward model's normalised score, gold reward the lab's exact "
             "one; d = sqrt(`eval/kl`) measures how far the policy moved from SFT.")
    if negative:
        doc.para("Left out: the KL estimate is below 0 at steps " + ", ".join(negative) + ".")
    rl_fit = None
    if not gold[0]:
        doc.para("Not available: no eval step has both `eval/kl` and `eval/gold_reward`.")
    else:
        doc.items([_change("proxy reward", proxy[1][0] if proxy[1] else None,
                           proxy[1][-1] if proxy[1] else None),
                   _change("gold reward", gold[1][0], gold[1][-1])])
        if _direction(*_ends(proxy)) > 0 and _direction(*_ends(gold)) < 0:
            doc.para("Gold reward fell while proxy reward rose: the policy exploited the "
                     "reward model.")
        peak = int(np.argmax(gold[1]))
        if 0 < peak < len(gold[1]) - 1 and _fmt(gold[1][peak]) != _fmt(gold[1][-1]):
            doc.para(f"Gold reward peaked at step {steps[peak]} ({_fmt(gold[1][peak])}, "
                     f"d = {_fmt(gold[0][peak])}) and then fell to {_fmt(gold[1][-1])}.")
        else:
            doc.para(f"Gold reward did not rise and then fall: its highest value "
                     f"({_fmt(gold[1][peak])}) was at step {steps[peak]}, the "
                     f"{'first' if peak == 0 else 'last'} eval step.")
        fit = fit_gao(gold[0], [g - gold[1][0] for g in gold[1]], "rl")
        usable = sum(d > 0 for d in gold[0])
        if fit is None:
            doc.para(f"No fit of d(α − β log d): it needs 2 eval points with d > 0 that "
                     f"determine α and β; {usable} point(s) have d > 0.")
        else:
            rl_fit = (*fit, gold[1][0])
            text = (f"Fit of the gold gain over step {steps[0]} (gold {_fmt(gold[1][0])}, "
                    f"d = {_fmt(gold[0][0])}) to "
                    f"R(d) = d(α − β log d), least squares over {usable} points with d > 0: "
                    f"α = {fit[0]:.4f}, β = {fit[1]:.4f}. ")
            if fit[1] > 0:
                top = math.exp(fit[0] / fit[1] - 1)
                text += (f"The fitted curve peaks at d = {_fmt(top)}; the largest d measured "
                         f"is {_fmt(max(gold[0]))}.")
            else:
                text += "β ≤ 0: the fitted curve never turns down, so it shows no " \
                        "over-optimisation."
            doc.para(text)
    bon_rows, bon_fit = [], None
    if inp.analysis is not None:
        bon_rows, bon_fit, _ = _best_of_n(inp)
    bon_proxy = plots.finite([r[2] for r in bon_rows], [r[3] for r in bon_rows])
    bon_gold = plots.finite([r[2] for r in bon_rows], [r[4] for r in bon_rows])
    if proxy[0] or gold[0] or bon_proxy[0] or bon_gold[0]:
        doc.image("reward_vs_kl", plots.reward_vs_kl(proxy, gold, bon_proxy, bon_gold,
                                                      rl_fit, bon_fit),
                  "proxy and gold reward against sqrt(KL), PPO and best-of-n")


def _ppo_section(doc: Document, inp: _Inputs):
    doc.heading(2, "PPO")
    recs = inp.phases["ppo"]
    if not recs:
        doc.para(inp.missing_phase("ppo"))
        recs = []
    doc.heading(3, "Reward over-optimisation")
    _overoptimisation(doc, inp, recs)
    if not recs:
        return
    doc.heading(3, "Response length")
    tokens, words = _series(recs, "ppo/response_length"), _series(recs, "eval/mean_length")
    if tokens[0] or words[0]:
        doc.image("length", plots.length(tokens, words), "response length over PPO")
    doc.items([_change("`ppo/response_length` (tokens per rollout response)", *_ends(tokens)),
               _change("`eval/mean_length` (words per probe response)", *_ends(words))])
    doc.heading(3, "Failure modes")
    rates = {m: _series(recs, f"eval/{m}") for m in FAILURE_RATES}
    if any(x for x, _ in rates.values()):
        doc.image("failure_modes", plots.rates(rates, "Failure-mode rates over PPO"),
                  "failure-mode rates over PPO eval steps")
    doc.para("First to last eval step (probe sets are finite, so small changes may be noise):")
    doc.items([_change(f"`{m}` ({MEANING[m]})", *_ends(rates[m])) for m in FAILURE_RATES])
    doc.heading(3, "KL and its coefficient")
    kl, coef = _series(recs, "ppo/kl"), _series(recs, "ppo/kl_coef")
    if kl[0] or coef[0]:
        doc.image("kl_beta", plots.two_axes(kl, coef, "KL and β over PPO", "ppo/kl (nats)",
                                            "ppo/kl_coef (β)", "PPO iteration"),
                  "KL and KL coefficient over PPO")
    doc.items([_change("`ppo/kl` (KL of the rollouts to the reference, nats)", *_ends(kl)),
               _change("`ppo/kl_coef` (β, the weight of the KL penalty)", *_ends(coef))])
    diagnostics = (("ppo/entropy", "mean per-token entropy of the policy"),
                   ("ppo/clipfrac", "share of tokens whose ratio was clipped"),
                   ("ppo/approxkl", "approximate KL of one update"),
                   ("ppo/value_loss", "value-function loss"),
                   ("ppo/explained_variance", "share of return variance the value explains"))
    doc.table(["metric", "first", "last", "meaning"],
              [[n, *map(_fmt, _ends(_series(recs, n))), m] for n, m in diagnostics])


def _dpo_section(doc: Document, inp: _Inputs):
    """DPO's trajectory: the implicit reward's agreement with the labels and with gold on
    held-out pairs, and the policy's probe length and failure-mode rates at eval steps."""
    doc.heading(2, "DPO")
    recs = inp.phases["dpo"]
    doc.para("DPO trains the SFT policy on the reward phase's comparisons directly; the "
             "reward model only scores its samples (`proxy_reward`). Eval step 0 is the SFT "
             "policy.")
    doc.items([_change(f"`{n}` ({m})", *_ends(_series(recs, n))) for n, m in (
        ("pairs/accuracy", "held-out pairs where the implicit reward agrees with the panel"),
        ("pairs/gold_accuracy", "held-out pairs where it agrees with the gold reward"),
        ("pairs/margin", "mean implicit-reward margin, chosen minus rejected"),
        ("eval/mean_length", "words per probe response"),
        ("eval/gold_reward", "gold reward of the probe responses"))])
    rates = {m: _series(recs, f"eval/{m}") for m in FAILURE_RATES}
    if any(x for x, _ in rates.values()):
        doc.image("failure_modes", plots.rates(rates, "Failure-mode rates over DPO"),
                  "failure-mode rates over DPO eval steps")
    doc.items([_change(f"`{m}` ({MEANING[m]})", *_ends(rates[m])) for m in FAILURE_RATES])


def _rl_section(doc: Document, inp: _Inputs):
    """The RL phase this run trained: DPO's section where it ran, else PPO's."""
    (_dpo_section if inp.phases["dpo"] else _ppo_section)(doc, inp)


def _ends(series: plots.Series) -> tuple:
    return (series[1][0], series[1][-1]) if series[1] else (None, None)


def _sft_section(doc: Document, inp: _Inputs):
    doc.heading(2, "Pretraining and SFT")
    pre = inp.phases["pretrain"]
    if not pre:
        doc.para(inp.missing_phase("pretrain"))
    else:
        doc.items([f"pretraining, last `{n}`: {_fmt(_last(pre, n))} (next-token loss, nats)"
                   for n in ("train/loss", "eval/loss")])
    recs = inp.phases["sft"]
    if not recs:
        doc.para(inp.missing_phase("sft"))
        return
    loss, fmt_rate = _series(recs, "train/loss"), _series(recs, "eval/format_rate")
    if loss[0] or fmt_rate[0]:
        doc.image("sft", plots.two_axes(loss, fmt_rate, "SFT", "train/loss",
                                        "eval/format_rate"), "SFT loss and format rate")
    doc.para("Eval step 0 is the base model before SFT.")
    doc.items([_change("`eval/loss` (next-token loss on held-out demonstrations)",
                       *_ends(_series(recs, "eval/loss"))),
               _change("`eval/format_rate` (share of responses written as an assistant turn)",
                       *_ends(fmt_rate))])


def _build(doc: Document, inp: _Inputs):
    doc.heading(1, "RLHF pipeline report")
    doc.para("Every number below is read from the files under this run's folder or computed "
             "from them; a section whose file is missing says so.")
    run.run_section(doc, inp.root, inp.missing)
    for section in (_claims_section, _probe_section, _reward_section, _panel_section, _rl_section,
                    _sft_section):
        section(doc, inp)
    run.inputs_section(doc, inp.root)
    run.timing_section(doc, inp.root, inp.missing)


def write_report(root: str) -> dict[str, str]:
    """Writes `root/report/index.md`, `index.html` and the PNGs; returns their paths by name.

    Keys: "md", "html", and one per figure drawn (of PLOT_NAMES); a figure
    without data is not drawn and an old PNG of that name is removed.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"write_report: root {root!r} is not a directory; expected the "
                                "pipeline's output folder")
    inputs = _Inputs(root)
    doc = Document()
    _build(doc, inputs)
    out_dir = os.path.join(root, "report")
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    drawn = {block[1]: block[2] for block in doc.blocks if block[0] == "img"}
    for name in PLOT_NAMES:
        path = os.path.join(out_dir, f"{name}.png")
        if name in drawn:
            with open(path, "wb") as f:
                f.write(drawn[name])
            paths[name] = path
        elif os.path.exists(path):
            os.remove(path)
    paths["md"] = os.path.join(out_dir, "index.md")
    paths["html"] = os.path.join(out_dir, "index.html")
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(doc.markdown())
    with open(paths["html"], "w", encoding="utf-8") as f:
        f.write(doc.html("RLHF pipeline report"))
    return paths
