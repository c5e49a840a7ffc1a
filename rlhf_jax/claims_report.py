"""The claims report: ``W/report/claims.md``, ``claims.html`` and ``claims.json``.

`write(workdir, config, results, timings)` renders :func:`rlhf_jax.lab.claims.table`
of the results :func:`experiments.claims.collect` read: one row per claim
(treatment, control, metric, the paired difference per seed, its mean and
95% interval over seeds, the verdict), then the reward models' held-out
accuracy beside the ceiling their panels allow, the probe levels per arm, and
plots with seed bands. Every number is read from the run folders or computed
from them; the same files give the same bytes.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from matplotlib.figure import Figure

from rlhf_jax import phases as phase_table
from rlhf_jax import report_plots as plots
from rlhf_jax.lab import claims as claims_lib
from rlhf_jax.report_plots import Document

LEVELS = ("format_rate", "sycophancy_rate", "capitulation_rate", "flattery_rate", "hedge_rate",
          "over_refusal_risky", "hallucination_rate", "accuracy_hard", "mean_length",
          "gold_reward", "proxy_reward", "kl", "eos_rate", "proxy_gain",
          "proxy_gain_within_length", "length_share")
NOT_DETECTED_NOTE = (
    "A row \"not detected\" is an effect this budget cannot tell from zero, not evidence "
    "of its absence: its interval shrinks about as 1/√S with S seeds (and with more probe "
    "prompts per family for the rate rows), so more seeds are the first budget to raise.")


def _fmt(v, digits=3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:+.{digits}f}"


def _plain(v, digits=3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def _spread(values) -> str:
    x = [v for v in values if v is not None and math.isfinite(v)]
    if not x:
        return "n/a"
    sd = f" ± {np.std(x, ddof=1):.3f}" if len(x) > 1 else ""
    return f"{np.mean(x):.3f}{sd}"


def _interval_cell(values) -> str:
    """Mean [Student-t 95% interval] over seeds of per-seed values, or n/a without any."""
    iv = claims_lib.interval(values)
    return ("n/a" if not iv["n"] else
            f"{_fmt(iv['mean'])} [{_fmt(iv['low'])}, {_fmt(iv['high'])}]")


def _claims_section(doc: Document, rows: list[dict], seeds) -> None:
    doc.heading(2, "Claims")
    doc.para("Each row is a paired difference, treatment minus control, on the same seed's "
             "world, base and SFT models; `Δ m (RLHF − SFT)` is what PPO changed in m in the "
             "treatment arm minus what it changed in the control arm. The interval is "
             "Student-t 95% over seeds; the verdict reads it against the sign the article "
             "predicts (+: the difference should be above 0, −: below, 0: no decrease).")
    header = ["claim", "treatment vs control", "metric", "expected",
              *[f"seed {s}" for s in seeds], "mean [95% interval]", "verdict"]
    body = []
    for r in rows:
        exp = {1: "+", -1: "−", 0: "no decrease"}[r["expected"]]
        body.append([r["claim"], f"{r['treatment']} vs {r['control']}", r["metric"], exp,
                     *[_fmt(r["per_seed"].get(s)) for s in seeds],
                     f"{_fmt(r['mean'])} [{_fmt(r['low'])}, {_fmt(r['high'])}]"
                     + (f" ({r['missing']} missing)" if r["missing"] else ""),
                     r["verdict"]])
    doc.table(header, body)
    counts = {v: sum(r["verdict"] == v for r in rows) for v in
              (claims_lib.REPRODUCED, claims_lib.OPPOSITE, claims_lib.NOT_DETECTED,
               claims_lib.NOT_CONTRADICTED)}
    doc.para(", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" of {len(rows)} rows.")
    doc.para(NOT_DETECTED_NOTE)


def _reward_section(doc: Document, results: dict, arms) -> None:
    doc.heading(2, "Reward models against their ceiling")
    doc.para("Held-out accuracy against the panel's labels, beside the highest expected "
             "accuracy any model can reach on the same pairs (`eval/accuracy_ceiling`: mean "
             "of max(p, 1 − p), p the panel members' mean chance of labelling A better) and "
             "the estimate from inter-annotator agreement alone; mean ± sd over seeds.")
    body = []
    for arm in arms:
        recs = [results[s]["arms"].get(arm, {}).get("reward") or {} for s in results]
        if not any(recs):
            continue
        get = lambda k, recs=recs: [r.get(k) for r in recs]  # noqa: E731
        gap = [None if a is None or c is None else c - a for a, c in
               zip(get("eval/accuracy"), get("eval/accuracy_ceiling"))]
        body.append([arm, _spread(get("eval/accuracy")), _spread(get("eval/accuracy_ceiling")),
                     _spread(gap), _spread(get("panel/accuracy_ceiling_from_agreement")),
                     _spread(get("eval/gold_accuracy"))])
    doc.table(["arm (reward model)", "accuracy", "ceiling", "ceiling − accuracy",
               "ceiling from agreement", "gold accuracy"], body)


def _levels_section(doc: Document, results: dict, arms) -> None:
    doc.heading(2, "Probe levels")
    doc.para("Each checkpoint's probe metrics, mean ± sd over seeds (base and SFT are shared "
             "by every arm of a seed).")
    cols = [("base", lambda r: r["base"]), ("SFT", lambda r: r["sft"])]
    cols += [(f"RLHF {a}", lambda r, a=a: r["arms"].get(a, {}).get("rlhf")) for a in arms]
    body = [[m, *[_spread([(pick(results[s]) or {}).get(m) for s in results])
                  for _, pick in cols]] for m in LEVELS]
    doc.table(["metric", *[c for c, _ in cols]], body)


ALGORITHM_ROWS = (("gold_reward", "gain"), ("proxy_reward", "level"), ("kl", "level"),
                  ("mean_length", "gain"), ("eos_rate", "gain"), ("sycophancy_rate", "gain"),
                  ("capitulation_rate", "gain"), ("flattery_rate", "gain"),
                  ("hedge_rate", "gain"), ("over_refusal_benign", "gain"),
                  ("over_refusal_risky", "gain"), ("hallucination_rate", "gain"))


def algorithms_table(results: dict, arms, control: str | None = None) -> list[list[str]]:
    """Per metric and arm: the mean [95% interval] over seeds of what the arm's RL phase
    changed (RLHF − SFT, "gain") or of its level (proxy reward, KL to SFT). With
    `control`, the paired difference of each from the control arm's, seed by seed."""
    body = []
    for name, kind in ALGORITHM_ROWS:
        label = f"Δ {name} (RLHF − SFT)" if kind == "gain" else name
        row = [label]
        for arm in arms:
            if kind == "gain":
                value = (claims_lib.delta(arm, control, name) if control else
                         lambda r, arm=arm, name=name: claims_lib.rlhf_gain(r, arm, name))
            else:
                value = (claims_lib.arm_gap(arm, control, name) if control else
                         lambda r, arm=arm, name=name: claims_lib.rlhf_level(r, arm, name))
            row.append(_interval_cell([value(results[s]) for s in results]))
        body.append(row)
    return body


def _algorithms_section(doc: Document, results: dict, config) -> None:
    arms = list(config.arms)
    kinds = {a: phase_table.arm_algorithm(config.arms[a]) for a in arms}
    if len(set(kinds.values())) < 2:
        return
    control = config.get("control", "unbiased")
    doc.heading(2, "Algorithms")
    doc.para("What each arm's RL phase did to the SFT policy of the same seed, mean "
             "[Student-t 95% interval] over seeds. Arms of one panel share the SFT policy, "
             "the labelled comparisons and the reward model (DPO learns from the labels "
             "directly; its proxy is the reward model's score of its samples).")
    heads = [f"{a} ({kinds[a]}, {config.arms[a].panel})" for a in arms]
    doc.table(["metric", *heads], algorithms_table(results, arms))
    others = [a for a in arms if a != control]
    if control in arms and others:
        doc.para(f"The same, each arm minus the control arm `{control}` ({kinds[control]}) "
                 "on the same seed: an interval that excludes 0 is a difference the "
                 "algorithm makes.")
        doc.table(["metric", *[f"{a} − {control}" for a in others]],
                  algorithms_table(results, others, control))


LABELLER_ROWS = (
    ("labels agreeing with gold, other families", "reward", "labels/agree_with_gold_other"),
    ("labels agreeing with gold, hard families", "reward", "labels/agree_with_gold_hard"),
    ("judge's beliefs right (facts and sums it can check)", "reward", "labels/judge_right"),
    ("training labels", "reward", "labels/train_labels"),
    ("their cost (human label = 1)", "reward", "labels/train_cost"),
    ("RM accuracy against its labels", "reward", "eval/accuracy"),
    ("RM gold accuracy", "reward", "eval/gold_accuracy"),
    *((f"Δ {m} (RLHF − SFT)", "gain", m) for m in (
        "gold_reward", "sycophancy_rate", "capitulation_rate", "flattery_rate", "hedge_rate",
        "over_refusal_benign", "over_refusal_risky", "hallucination_rate", "mean_length")))


def labellers_table(results: dict, arms, control: str | None = None) -> list[list[str]]:
    """Per labeller row and arm: mean [95% interval] over seeds (held-out pairs' labels
    against gold, the training labels and their cost, the reward model's accuracies, what
    RLHF changed); with `control`, each arm minus the control arm on the same seed."""
    def get(r, arm, kind, name):
        if kind == "gain":
            return claims_lib.rlhf_gain(r, arm, name)
        return claims_lib._get(r["arms"].get(arm, {}).get("reward"), name)

    body = []
    for label, kind, name in LABELLER_ROWS:
        row = [label]
        for arm in arms:
            values = [get(results[s], arm, kind, name) for s in results]
            if control:
                values = [claims_lib._sub(v, get(results[s], control, kind, name))
                          for v, s in zip(values, results)]
            row.append(_interval_cell(values))
        body.append(row)
    return body


def _labellers_section(doc: Document, results: dict, config) -> None:
    arms = list(config.arms)
    kinds = {a: (config.arms[a].get("labeller", {}) or {}).get("kind", "panel") for a in arms}
    if "ai" not in kinds.values():
        return
    control = config.get("control", "unbiased")

    def head(a):
        spec = config.arms[a].get("labeller", {}) or {}
        who = (f"AI, {spec['constitution']['preset']} constitution" if kinds[a] == "ai"
               else f"{config.arms[a].panel} panel")
        return f"{a} ({who}{', every pair' if config.arms[a].get('all_pairs') else ''})"

    doc.heading(2, "Labellers")
    doc.para("Who labelled the comparisons: the simulated panel or an AI judge (a "
             "constitution read with the seed's pretrained model's knowledge; it sees the "
             "prompt, the two responses and its checkpoint, never gold). Label agreement "
             "with gold is over the held-out pairs gold does not tie; hard families are "
             "fact_hard and arith_hard. Mean [Student-t 95% interval] over seeds.")
    doc.table(["metric", *[head(a) for a in arms]], labellers_table(results, arms))
    others = [a for a in arms if a != control]
    if control in arms and others:
        doc.para(f"Each arm minus the control arm `{control}` on the same seed.")
        doc.table(["metric", *[f"{a} − {control}" for a in others]],
                  labellers_table(results, others, control))


def _band(ax, xs, ys, label, color):
    """Mean line and min–max band of per-seed series sampled at the same x."""
    common = sorted(set.intersection(*[set(x) for x in xs])) if xs else []
    if not common:
        return
    grid = np.array([[dict(zip(x, y))[c] for c in common] for x, y in zip(xs, ys)])
    ax.plot(common, grid.mean(0), "o-", color=color, label=f"{label} (mean of {len(xs)})",
            markersize=3)
    ax.fill_between(common, grid.min(0), grid.max(0), color=color, alpha=0.2)


def overoptimisation_plot(results: dict, arm: str) -> bytes | None:
    """Proxy and gold over PPO steps of `arm`, and best-of-n against n, with seed bands."""
    series = {"proxy": ([], []), "gold": ([], [])}
    bon = {"proxy": ([], []), "gold": ([], [])}
    for s in results:
        a = results[s]["arms"].get(arm, {})
        for key, name in (("proxy", "eval/proxy_reward"), ("gold", "eval/gold_reward")):
            pts = plots.finite([r.get("step") for r in a.get("ppo") or []],
                               [r.get(name) for r in a.get("ppo") or []])
            if pts[0]:
                series[key][0].append(pts[0])
                series[key][1].append(pts[1])
            rep = a.get("reward") or {}
            ns = sorted(int(k[len("analysis/bon"):-len("_gold")]) for k in rep
                        if k.startswith("analysis/bon") and k.endswith("_gold"))
            pts = plots.finite([math.log2(n) for n in ns],
                               [rep.get(f"analysis/bon{n}_{key}") for n in ns])
            if pts[0]:
                bon[key][0].append(pts[0])
                bon[key][1].append(pts[1])
    if not any(series[k][0] or bon[k][0] for k in series):
        return None
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, data, title, xlabel in ((axes[0], series, f"PPO ({arm})", "PPO iteration"),
                                    (axes[1], bon, "best-of-n", "log2 n")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("reward")
        _band(ax, *data["proxy"], "proxy", "tab:blue")
        _band(ax, *data["gold"], "gold", "tab:orange")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return plots._png(fig)


def write(workdir: str, config, results: dict, timings: dict | None = None) -> dict:
    """Writes the report files under ``workdir/report``; returns their paths."""
    arms = list(config.arms)
    rows = claims_lib.table(claims_lib.default_claims(arms), results)
    seeds = sorted(results)
    doc = Document()
    doc.heading(1, "The article's claims, measured")
    doc.para(f"Preset `{config.get('preset', 'default')}`, seeds {', '.join(map(str, seeds))}, "
             f"arms {', '.join(f'`{a}`' for a in arms)}; probe prompts per family "
             f"{config.lab.prompts.probe_per_family}, "
             f"{config.eval.eval.get('samples_per_prompt', 1)} sample(s) each; protocol: "
             "prompts up to "
             f"{config.lab.protocol.prompt_len} tokens, responses up to "
             f"{config.lab.protocol.max_new_tokens}, temperature "
             f"{config.lab.protocol.temperature}.")
    _claims_section(doc, rows, seeds)
    _algorithms_section(doc, results, config)
    _labellers_section(doc, results, config)
    _reward_section(doc, results, arms)
    _levels_section(doc, results, arms)
    png = overoptimisation_plot(results, "overopt") if "overopt" in arms else None
    if png is not None:
        doc.heading(2, "Over-optimisation")
        doc.para("Mean over seeds with the min–max band: PPO's proxy and gold reward at its "
                 "eval steps, and best-of-n against its reward model by n.")
        doc.image("claims_overoptimisation", png, "proxy and gold reward with seed bands")
    if timings:
        doc.heading(2, "Wall time")
        doc.para(f"{sum(timings.values()) / 60:.1f} minutes over {len(timings)} phases and "
                 "evaluations, all attempts added up (timings.json has each).")
    out = os.path.join(workdir, "report")
    os.makedirs(out, exist_ok=True)
    paths = {"md": os.path.join(out, "claims.md"), "html": os.path.join(out, "claims.html"),
             "json": os.path.join(out, "claims.json")}
    with open(paths["md"], "w") as f:
        f.write(doc.markdown())
    with open(paths["html"], "w") as f:
        f.write(doc.html("The article's claims, measured"))
    for block in doc.blocks:
        if block[0] == "img":
            with open(os.path.join(out, f"{block[1]}.png"), "wb") as f:
                f.write(block[2])
    with open(paths["json"], "w") as f:
        json.dump({"seeds": seeds, "arms": arms, "rows": rows}, f, indent=2, default=str)
    return paths
