"""The pipeline report: every printed number against the files it came from.

The tests write a synthetic pipeline folder whose PPO gold reward follows
d(alpha - beta log d) exactly and whose best-of-n gold follows d(a - b d), so the
fitted coefficients are known; then they parse index.md back.
"""

import base64
import html
import json
import math
import os
import re
import shutil

import numpy as np
import pytest

from rlhf_jax import report, report_plots

ALPHA, BETA = 0.8, 0.5  # PPO gold gain = d(ALPHA - BETA log d)
BON_A, BON_B = 0.6, 0.2  # best-of-n gold gain = d(BON_A - BON_B d)
GOLD0 = -0.25
D_GRID = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0]
PROBES = {
    "base": {"accuracy_easy": 0.1, "sycophancy_rate": 0.06, "mean_length": 40.25,
             "gold_reward": -0.8, "format_rate": 0.05, "hedge_rate": float("nan"),
             "accuracy/fact_easy": 0.0},
    "sft": {"accuracy_easy": 0.61234, "sycophancy_rate": 0.06, "mean_length": 11.5,
            "gold_reward": 0.3141, "format_rate": 0.97, "hedge_rate": 0.125,
            "gold_reward/fact_easy": 0.5, "accuracy/fact_easy": 0.25},
    "rlhf": {"accuracy_easy": 0.55, "sycophancy_rate": 0.0625, "mean_length": 19.75,
             "gold_reward": 0.2, "format_rate": 0.99, "hedge_rate": 0.25,
             "proxy_reward": 1.234, "kl": 12.5},
}
TIMINGS = {"pretrain": 12.34, "sft": 5.0, "reward": 7.25, "ppo": 30.56}


def _jsonl(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def _json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def _gold_rl(d):
    return GOLD0 + (d * (ALPHA - BETA * math.log(d)) if d > 0 else 0.0)


def make_root(root):
    """A complete synthetic pipeline folder."""
    _json(f"{root}/config.json", {"seed": 7, "panel": {"preset": "human_like", "size": 3}})
    _json(f"{root}/timings.json", TIMINGS)
    for name, metrics in PROBES.items():
        _json(f"{root}/eval/{name}.json", {"checkpoint": f"/w/{name}", "metrics": metrics})
    _jsonl(f"{root}/pretrain/metrics.jsonl", [{"step": 10, "train/loss": 3.5, "eval/loss": 3.7}])
    _jsonl(f"{root}/sft/metrics.jsonl", [
        {"step": 0, "eval/loss": 2.5, "eval/format_rate": 0.05},
        {"step": 5, "train/loss": 1.8},
        {"step": 10, "train/loss": 1.2, "eval/loss": 1.4, "eval/format_rate": 0.97}])
    analysis = {f"analysis/{m}_gap": 0.1 * (i - 3) for i, m in enumerate(report.GAP_MODES)}
    analysis.update({f"analysis/{m}_win_rate": 0.1 * i for i, m in enumerate(report.GAP_MODES)})
    analysis["analysis/length_correlation"] = 0.4321
    _jsonl(f"{root}/reward/metrics.jsonl", [
        {"step": 50, "train/loss": 0.6, "train/accuracy": 0.66, "eval/loss": 0.62,
         "eval/accuracy": 0.7, "eval/gold_accuracy": 0.61},
        {"step": 100, "train/loss": 0.55, "train/accuracy": 0.7071, "eval/loss": 0.6012,
         "eval/accuracy": 0.7234, "eval/gold_accuracy": 0.6456, **analysis}])
    bon = []
    for n in (1, 2, 4, 8, 16):
        kl = math.log(n) - (n - 1) / n
        d = math.sqrt(kl)
        bon.append({"n": n, "kl": kl, "proxy_reward": 0.3 * d,
                    "gold_reward": GOLD0 + d * (BON_A - BON_B * d)})
    panel = {"panel": {"preset": "human_like", "size": 40, "tau": {"mean": 6.0, "spread": 0.9}},
             "inter_annotator_agreement": 0.731, "gold_agreement": 0.802,
             "longer_chosen": 0.64,
             "gold_weights": {"correct": 1.0, "word_budget": {"fact_easy": 10}}}
    _json(f"{root}/{report.ANALYSIS_FILE}",
          {"metrics": analysis, "best_of_n": bon, "panel": panel})
    ppo = []
    for i, d in enumerate(D_GRID):
        step = 10 * i
        for k in range(10 * i - 9 if i else 0, step):
            ppo.append({"step": k + 1, "ppo/kl": 0.1 * k, "ppo/kl_coef": 0.05,
                        "ppo/response_length": 12 + k, "ppo/entropy": 2.0 - 0.01 * k})
        ppo.append({"step": step, "eval/kl": d * d, "eval/proxy_reward": 0.5 * d,
                    "eval/gold_reward": _gold_rl(d), "eval/mean_length": 11.0 + i,
                    "eval/sycophancy_rate": 0.06, "eval/flattery_rate": 0.1 + 0.05 * i,
                    "eval/hedge_rate": None})
    _jsonl(f"{root}/ppo/metrics.jsonl", ppo)
    return str(root)


def md_tables(text):
    """Every Markdown table in `text` as (header, rows) of unescaped cell strings."""
    lines, tables, i = text.splitlines(), [], 0
    split = lambda line: [c.strip().replace("\\|", "|")
                          for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header, rows, i = split(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(split(lines[i]))
                i += 1
            tables.append((header, rows))
        else:
            i += 1
    return tables


def table(text, first_header):
    found = [t for t in md_tables(text) if t[0][:len(first_header)] == first_header]
    assert len(found) == 1, first_header
    return found[0]


def close(cell, value, decimals):
    assert cell != "n/a", (cell, value)
    assert abs(float(cell) - value) <= 0.5 * 10.0 ** -decimals + 1e-12, (cell, value)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = make_root(tmp_path_factory.mktemp("run"))
    paths = report.write_report(root)
    with open(paths["md"]) as f:
        md = f.read()
    with open(paths["html"]) as f:
        page = f.read()
    return root, paths, md, page


def test_fit_gao_recovers_coefficients_and_refuses_underdetermined_points():
    d = np.array([0.0, 0.3, 1.0, 2.0, 3.5])
    assert report.fit_gao(d, report_plots.gao_curve(d, 1.3, 0.4, "rl"), "rl") == \
        pytest.approx((1.3, 0.4), abs=1e-9)
    assert report.fit_gao(d, report_plots.gao_curve(d, 0.7, 0.1, "bon"), "bon") == \
        pytest.approx((0.7, 0.1), abs=1e-9)
    assert report.fit_gao([0.0, 2.0], [0.0, 1.0]) is None  # one point with d > 0
    assert report.fit_gao([1.0, 1.0, 0.0], [0.5, 0.7, 0.0]) is None  # d log d = 0 everywhere
    with pytest.raises(ValueError, match="gao_curve: kind 'x'; expected 'rl' or 'bon'"):
        report_plots.gao_curve(d, 1.0, 1.0, "x")


def test_probe_table_matches_eval_files(full):
    _, _, md, _ = full
    header, rows = table(md, ["metric", "base", "SFT", "RLHF"])
    assert header == ["metric", "base", "SFT", "RLHF"]
    files = [PROBES["base"], PROBES["sft"], PROBES["rlhf"]]
    names = {m for p in files for m in p}
    assert {r[0] for r in rows} == names
    for row in rows:
        for cell, values in zip(row[1:], files):
            if row[0] not in values:
                assert cell == "-"
            elif math.isnan(values[row[0]]):
                assert cell == "n/a"
            else:
                close(cell, values[row[0]], 3)
    assert "`sycophancy_rate`: no change was measured (0.060 → 0.060)" not in md  # SFT→RLHF rose
    assert "`sycophancy_rate` rose from 0.060 to 0.062" in md  # 0.0625 prints as 0.062
    assert "`accuracy/fact_easy` rose from 0.000 to 0.250" in md  # base -> SFT
    assert "`accuracy/<family>`: share of one fact/arithmetic family answered right." in md


def test_reward_bon_fit_and_timing_numbers_match(full):
    root, _, md, _ = full
    with open(f"{root}/reward/metrics.jsonl") as f:
        last = json.loads(f.read().splitlines()[-1])
    _, rows = table(md, ["figure", "value", "meaning"])
    values = {r[0]: r[1] for r in rows}
    for name in ("eval/accuracy", "eval/gold_accuracy", "eval/loss", "train/accuracy"):
        close(values[name], last[name], 3)
    close(values["length_correlation"], last["analysis/length_correlation"], 3)
    _, gaps = table(md, ["mode", "gap", "win rate"])
    for mode, gap, win in gaps:
        close(gap, last[f"analysis/{mode}_gap"], 3)
        close(win, last[f"analysis/{mode}_win_rate"], 3)
    with open(f"{root}/{report.ANALYSIS_FILE}") as f:
        bon = json.load(f)["best_of_n"]
    _, rows = table(md, ["n", "KL (nats)"])
    assert [int(r[0]) for r in rows] == [b["n"] for b in bon]
    for row, b in zip(rows, bon):
        for cell, value in zip(row[1:], (b["kl"], math.sqrt(b["kl"]), b["proxy_reward"],
                                         b["gold_reward"])):
            close(cell, value, 3)
    rl = re.search(r"d\(α − β log d\), least squares over (\d+) points with d > 0: "
                   r"α = (\S+), β = (\S+)\.", md)
    assert rl and int(rl[1]) == len(D_GRID) - 1
    close(rl[2], ALPHA, 4)
    close(rl[3], BETA, 4)
    bon_fit = re.search(r"n = 1 to d\(α − β d\): α = (\S+), β = (\S+)\.", md)
    close(bon_fit[1], BON_A, 4)
    close(bon_fit[2], BON_B, 4)
    _, rows = table(md, ["phase", "seconds"])
    assert [r[0] for r in rows] == [*TIMINGS, "total"]
    for row, value in zip(rows, [*TIMINGS.values(), sum(TIMINGS.values())]):
        close(row[1], value, 1)
    _, rows = table(md, ["agreement figure", "value"])
    assert {r[0]: float(r[1]) for r in rows} == {
        "inter_annotator_agreement": 0.731, "gold_agreement": 0.802, "longer_chosen": 0.64}
    assert table(md, ["term", "weight"])[1] == [["correct", "1"], ["word_budget/fact_easy", "10"]]
    assert table(md, ["knob", "mean", "spread"])[1] == [["tau", "6", "0.9"]]
    assert "- seed: 7 " in md and "- panel preset: human_like " in md


def test_plain_language_reports_what_happened(full):
    _, paths, md, _ = full
    assert "Gold reward fell while proxy reward rose" in md
    top = math.exp(ALPHA / BETA - 1)
    assert f"The fitted curve peaks at d = {top:.3f}" in md
    assert re.search(r"Gold reward peaked at step 40 \(0\.657, d = 2\.000\) and then fell", md)
    assert "`eval/sycophancy_rate`" not in md
    assert "`sycophancy_rate` (" in md and "no change was measured (0.060 → 0.060)" in md
    assert "`flattery_rate` (share of flawed business plans that get praised) rose from " \
           "0.100 to 0.450" in md
    assert "`hedge_rate` (share of all responses that contain a hedge): not available" in md
    assert sorted(k for k in paths if k in report.PLOT_NAMES) == sorted(report.PLOT_NAMES)


def test_html_is_self_contained_with_the_same_tables(full):
    _, paths, md, page = full
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    sources = re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert len(sources) == len(report.PLOT_NAMES)
    for name, src in zip(report.PLOT_NAMES, sources):
        assert src.startswith("data:image/png;base64,")
        with open(paths[name], "rb") as f:
            assert base64.b64decode(src.split(",", 1)[1]) == f.read()
    strip = lambda cell: html.unescape(re.sub(r"</?code>", "", cell))
    html_tables = []
    for head, body in re.findall(r"<thead>(.*?)</thead><tbody>(.*?)</tbody>", page):
        header = [strip(c) for c in re.findall(r"<th>(.*?)</th>", head)]
        rows = [[strip(c) for c in re.findall(r"<td>(.*?)</td>", row)]
                for row in re.findall(r"<tr>(.*?)</tr>", body)]
        html_tables.append((header, rows))
    md_clean = [([c.replace("`", "") for c in h], [[c.replace("`", "") for c in r] for r in rows])
                for h, rows in md_tables(md)]
    assert html_tables == md_clean


def test_rewrite_gives_identical_bytes(full, tmp_path):
    root, paths, _, _ = full
    before = {k: open(p, "rb").read() for k, p in paths.items()}
    again = report.write_report(root)
    assert again == paths
    assert {k: open(p, "rb").read() for k, p in again.items()} == before
    with open(paths["sft"], "rb") as f:
        assert b"Software" not in f.read()
    # The same files in another folder give the same report.
    moved = tmp_path / "moved"
    shutil.copytree(root, moved, ignore=lambda d, names: ["report"] if d == root else [])
    elsewhere = report.write_report(str(moved))
    for key in ("md", "html"):
        assert open(elsewhere[key], "rb").read() == before[key]


def test_missing_files_are_named_and_nothing_is_invented(tmp_path):
    paths = report.write_report(str(tmp_path))
    with open(paths["md"]) as f:
        md = f.read()
    for rel in ("config.json", "eval/base.json", "eval/rlhf.json", report.ANALYSIS_FILE,
                "reward/metrics.jsonl", "ppo/metrics.jsonl", "sft/metrics.jsonl",
                "pretrain/metrics.jsonl", "timings.json"):
        assert f"Not available: `{rel}` was not found in this run's folder." in md
    assert "α =" not in md and not any(k in paths for k in report.PLOT_NAMES)
    assert re.findall(r"\d\.\d", md) == []  # no number at all without files
    _jsonl(f"{tmp_path}/ppo/metrics.jsonl", [])  # a phase that has started, nothing logged
    with open(report.write_report(str(tmp_path))["md"]) as f:
        assert "Not available: `ppo/metrics.jsonl` holds no records." in f.read()


def test_too_few_points_for_a_fit_is_said(tmp_path):
    root = make_root(tmp_path)
    _jsonl(f"{root}/ppo/metrics.jsonl", [
        {"step": 0, "eval/kl": 0.0, "eval/gold_reward": 0.1, "eval/proxy_reward": 0.0},
        {"step": 10, "eval/kl": 0.25, "eval/gold_reward": 0.3, "eval/proxy_reward": 0.2},
        {"step": 20, "eval/kl": -0.01, "eval/gold_reward": 0.2}])
    os.remove(f"{root}/eval/rlhf.json")
    with open(report.write_report(root)["md"]) as f:
        md = f.read()
    assert "No fit of d(α − β log d): it needs 2 eval points with d > 0 that determine α " \
           "and β; 1 point(s) have d > 0." in md
    assert "Left out: the KL estimate is below 0 at steps 20." in md
    assert "Gold reward did not rise and then fall: its highest value (0.300) was at step " \
           "10, the last eval step." in md
    assert "Not available: `eval/rlhf.json` was not found in this run's folder." in md
    assert table(md, ["metric", "base", "SFT"])[0] == ["metric", "base", "SFT"]


def test_bad_files_raise_errors_that_name_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="write_report: root '.*nope' is not a "
                                                "directory; expected the pipeline's output"):
        report.write_report(str(tmp_path / "nope"))
    root = make_root(tmp_path)
    with open(f"{root}/timings.json", "w") as f:
        f.write("{\n  \"sft\": 1,\n  oops\n}")
    with pytest.raises(ValueError, match=r"timings\.json: line 3: not valid JSON"):
        report.write_report(root)
    _json(f"{root}/timings.json", [1, 2])
    with pytest.raises(ValueError, match=r"timings\.json: expected a JSON object at the top "
                                         "level, got list"):
        report.write_report(root)
    _json(f"{root}/timings.json", TIMINGS)
    with open(f"{root}/sft/metrics.jsonl", "a") as f:
        f.write("{\"step\": 11,\n")
    with pytest.raises(ValueError, match=r"sft/metrics\.jsonl: line 4: not valid JSON"):
        report.write_report(root)
    _jsonl(f"{root}/sft/metrics.jsonl", [{"step": 0, "eval/loss": 2.0}])
    _json(f"{root}/eval/sft.json", {"checkpoint": "x", "metrics": [0.5]})
    with pytest.raises(ValueError, match=r"eval/sft\.json: field 'metrics': expected an "
                                         "object of metric values"):
        report.write_report(root)
    _json(f"{root}/eval/sft.json", {"metrics": {}})
    _json(f"{root}/{report.ANALYSIS_FILE}", {"best_of_n": [{"n": 2, "kl": "x"}]})
    with pytest.raises(ValueError, match=r"reward_analysis\.json: best_of_n\[0\]: expected an "
                                         "integer 'n' and a number 'kl' >= 0"):
        report.write_report(root)


def test_a_dpo_run_gets_the_dpo_section_from_its_files(tmp_path):
    root = make_root(tmp_path / "run")
    shutil.rmtree(f"{root}/ppo")
    _jsonl(f"{root}/dpo/metrics.jsonl", [
        {"step": 0, "pairs/accuracy": 0.5, "pairs/gold_accuracy": 0.5, "pairs/margin": 0.0,
         "eval/mean_length": 10.75, "eval/gold_reward": -0.1, "eval/sycophancy_rate": 0.0625},
        {"step": 30, "train/loss": 0.69, "train/margin": 0.01},
        {"step": 60, "pairs/accuracy": 0.5547, "pairs/gold_accuracy": 0.4981,
         "pairs/margin": 0.0723, "eval/mean_length": 27.455, "eval/gold_reward": -0.508,
         "eval/sycophancy_rate": 0.125}])
    md = open(report.write_report(root)["md"]).read()
    assert "## PPO" not in md
    section = md.split("## DPO", 1)[1].split("\n## ", 1)[0]
    for line in ("`pairs/accuracy` (held-out pairs where the implicit reward agrees with the "
                 "panel) rose from 0.500 to 0.555",
                 "`pairs/gold_accuracy` (held-out pairs where it agrees with the gold reward) "
                 "fell from 0.500 to 0.498",
                 "`eval/mean_length` (words per probe response) rose from 10.750 to 27.455",
                 "`sycophancy_rate`"):
        assert line in section, line
