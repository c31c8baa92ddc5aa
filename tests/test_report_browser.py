"""report.html for a first-time reader (issue 19, item 8), checked in its HTML and figures and in a real
headless Chromium at 1400 px: a non-blank page, no horizontal overflow of the leaderboard, no legend that scrolls.

Chromium comes from Debian's packages (`apt-get install chromium`; .ci/run installs it); where it is absent the
browser test skips and says so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_bench import K, synthetic_table

from acd_env.tables import save_table

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WIDTH = 1400
AGENTS = ["greedy", "random", "oracle", "ranker", "magnitude", "ucb", "test_bench:DiagGreedy"]
PROTOCOLS = ["zero-shot", "train-test", "stream"]
RAW_COLUMNS = ("efficiency_lo", "p_gt_greedy", "reached80", "eff_patching", "step_ms", "iqm_hi", "status")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from benchmarks.bench import BenchConfig, run_bench

    folder = tmp_path_factory.mktemp("report")
    tables = folder / "tables"
    for i, task in enumerate(("ioi", "agreement")):
        save_table(synthetic_table(task, "train", 6, seed=10 * i), tables / f"{task}-train.npz")
        save_table(synthetic_table(task, "test", 4, seed=10 * i + 1), tables / f"{task}-test.npz")
    cfg = BenchConfig(
        model="synthetic",
        tables=str(tables),
        k=K,
        budget=5,
        seeds=[0, 1],
        agents=AGENTS,
        protocols=PROTOCOLS,
        reps=100,
        progress=False,
        out=str(folder / "run"),
        tracks=["features"],
    )
    result = run_bench(cfg, echo=lambda s: None)
    result["cfg"] = cfg
    result["html"] = (Path(result["out"]) / "report.html").read_text()
    return result


def test_report_is_written_for_a_newcomer(run):
    text = run["html"]
    headings = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", text)]
    assert "Efficiency (95 % CI)" in headings and "P(beats greedy)" in headings
    assert not [h for h in headings if "_" in h or h in RAW_COLUMNS], headings  # column names in words
    assert "Picks scored by patching KL" in headings and "Picks scored by steering KL" in headings
    assert "How to read this." in text and "Agents, metrics and protocols" in text
    from agents import available_agents
    from benchmarks.report import AGENT_NOTES, glossary_html

    assert set(available_agents()) <= set(AGENT_NOTES)  # one line for every agent of the zoo
    assert "nearly linear" in glossary_html(["atp"], ["zero-shot"])  # why atp sits next to the oracle
    assert "not applicable: needs fit(tables)" in text  # ranker in zero-shot and stream: the reason, in words
    for metric in ("IQM", "AUC", "recall@B", "steps→80 %", "P(&gt;X)"):
        assert f"<b>{metric}</b>" in text, metric
    # the configuration is a table of words, with the command line, date and versions
    config = re.search(r'<table class="config">(.*?)</table>', text).group(1)
    assert "['" not in config and "{'" not in config
    for label in ("Command line", "Date", "Versions", "Seeds", "Interventions per episode (B)"):
        assert f"<th>{label}</th>" in config, label
    command = re.search(r"<code>(acd bench .*?)</code>", config).group(1)
    assert "--model synthetic" in command and "--seeds 2" in command and "--budget 5" in command
    assert "torch: " in config and "circuit-tracer: " in config


def test_readme_has_one_line_per_agent_and_metric():
    """Item 7: the README's "Agents and metrics" section names every agent of the zoo and every metric."""
    from agents import available_agents

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("## Agents and metrics, in one line each", 1)[1].split("\n## ", 1)[0]
    for agent in available_agents():
        assert f"- `{agent}`: " in section, agent
    for metric in ("efficiency", "IQM", "AUC", "recall@B", "steps→80 %", "P(>X)", "nearly linear"):
        assert metric in section, metric
    quick = text.split("## Quick start", 1)[1]
    assert quick.index("source .venv/bin/activate") < quick.index("\nacd bench")  # said before the first acd


def test_command_line_reproduces_the_config(run):
    import shlex

    from benchmarks.bench import _names
    from benchmarks.cli import build_parser
    from benchmarks.report import command_line

    cfg = run["cfg"]
    args = build_parser().parse_args(shlex.split(command_line(cfg))[1:])
    assert _names(args.agents) == cfg.agents and _names(args.protocols) == cfg.protocols
    assert args.seeds == cfg.seeds and args.budget == cfg.budget and args.k == cfg.k
    assert args.tables == cfg.tables and args.reps == cfg.reps and args.model == cfg.model


def test_figures_rank_their_legends_and_label_their_axes(run):
    from benchmarks.report import agent_color, curve_figures, diagnostics_figure, learning_curve_figure

    board = run["board"]
    for protocol, fig in curve_figures(board, PROTOCOLS, run["cfg"].agents).items():
        shown = [t for t in fig.data if t.showlegend]
        order = [t.name for t in sorted(shown, key=lambda t: t.legendrank)]
        scores = {
            r["agent"]: r["efficiency"] for r in board if r["protocol"] == protocol and r["status"] == "ok"
        }
        assert order == sorted(scores, key=lambda a: (-scores[a], a)), (protocol, order, scores)
        oracle = next(t for t in shown if t.name == "oracle")
        assert oracle.line.dash == "dash" and oracle.line.color == "#000000"
        assert all(a.text and "/" not in a.text for a in fig.layout.annotations)  # panel titles in words
        assert fig.layout.yaxis.title.text and fig.layout.yaxis2.title.text
    assert agent_color("oracle") != agent_color("atp") and agent_color("aif") != agent_color("atp")
    from test_bench import read_jsonl

    rows = read_jsonl(Path(run["out"]) / "results.jsonl")
    diag = diagnostics_figure(rows, PROTOCOLS, run["cfg"].agents, board)
    titles = [a.text for a in diag.layout.annotations]
    assert titles and not [t for t in titles if "aif/" in t or "_" in t], titles
    assert diag.layout.yaxis.title.text and diag.layout.yaxis2.title.text
    learning = learning_curve_figure(rows, PROTOCOLS, run["cfg"].agents)
    entries = sum(1 for t in learning.data if t.showlegend)
    assert learning.layout.height >= 200 + 24 * entries  # room for every legend entry: it never scrolls


MEASURE = """<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var tables = Array.from(document.querySelectorAll("table.board")).map(function (t) {
      var box = t.parentElement;
      return {scrollWidth: box.scrollWidth, clientWidth: box.clientWidth, table: t.scrollWidth,
              right: t.getBoundingClientRect().right};
    });
    var scrollbars = Array.from(document.querySelectorAll(".legend .scrollbar")).map(function (s) {
      return s.getBoundingClientRect().height;
    });
    var pre = document.createElement("pre");
    pre.id = "acd-measure";
    pre.textContent = JSON.stringify({innerWidth: window.innerWidth, page: document.documentElement.scrollWidth,
      tables: tables, scrollbars: scrollbars, plots: document.querySelectorAll(".js-plotly-plot").length});
    document.body.appendChild(pre);
  }, 300);
});
</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(
    not Path(CHROMIUM).is_file(),
    reason=f"headless Chromium is not installed ({CHROMIUM} is absent); install it with "
    "`apt-get install chromium` (Debian) to check report.html in a real browser",
)
def test_report_in_headless_chromium_at_1400px(run, tmp_path):
    image = pytest.importorskip(
        "PIL.Image", reason="Pillow (matplotlib's dependency) is needed to read the PNG"
    )
    report = Path(run["out"]) / "report.html"
    shot = tmp_path / "report.png"
    proc = chromium(
        f"--window-size={WIDTH},2400",
        "--hide-scrollbars",
        f"--screenshot={shot}",
        report.as_uri(),
        profile=tmp_path / "p1",
    )
    assert shot.is_file(), proc.stderr[-2000:]
    with image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (WIDTH, 2400)
        pixels = list(rgb.resize((350, 600)).getdata())
    inked = sum(1 for p in pixels if min(p) < 200) / len(pixels)
    assert inked > 0.03 and len(set(pixels)) > 50, (inked, len(set(pixels)))  # text, tables and plots drawn

    page = tmp_path / "measured.html"
    page.write_text(report.read_text().replace("</body>", MEASURE + "</body>"))
    proc = chromium(f"--window-size={WIDTH},1000", "--dump-dom", page.as_uri(), profile=tmp_path / "p2")
    found = re.search(r'<pre id="acd-measure">([^<]*)</pre>', proc.stdout)
    assert found, (proc.stdout[-500:], proc.stderr[-2000:])
    m = json.loads(found.group(1))
    assert m["innerWidth"] == WIDTH and m["plots"] >= 3, m
    assert m["page"] <= WIDTH, m  # no horizontal scroll of the page
    assert len(m["tables"]) == len(PROTOCOLS), m
    for t in m["tables"]:
        assert t["scrollWidth"] <= t["clientWidth"] and t["right"] <= WIDTH, m  # the table fits: nothing cut
    assert not [h for h in m["scrollbars"] if h > 0], m  # every legend shows all its entries
