"""summary.png: the benchmarks' figures as one chart, kitebox beside its baseline in every panel.

Called by run_all.py (`draw(summary, data, path)`); also on its own, from the JSON of a run:

    .venv/bin/python benchmarks/chart.py [benchmarks/results]
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

KITEBOX = "#1f6fb4"
KITEBOX_LIGHT = "#8fb8dc"
BASELINE = "#c9762c"
OTHER = "#9a9a9a"


def _not_run(ax, title: str, reason: str) -> None:
    ax.set_title(title, fontsize=11, fontweight="bold")
    ax.axis("off")
    ax.text(0.5, 0.5, "not run:\n" + textwrap.fill(reason or "?", 38), ha="center", va="center", fontsize=9,
            color="#a00", transform=ax.transAxes)


def _label_bars(ax, bars, fmt="{:g}", fontsize=8) -> None:
    for bar in bars:
        height = bar.get_height()
        ax.annotate(fmt.format(height), (bar.get_x() + bar.get_width() / 2, height), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=fontsize)


def _ratio_note(ax, text: str) -> None:
    ax.text(0.98, 0.97, text, ha="right", va="top", fontsize=9, fontweight="bold", color=KITEBOX,
            transform=ax.transAxes, bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": KITEBOX_LIGHT})


def _secret_fetch(ax, data) -> None:
    ax.set_title("Secret fetch: 3 namespaces × 20 parameters", fontsize=11, fontweight="bold")
    delays = (0, 30)
    k = [next(r["median_ms"] for r in data if r["delay_ms"] == d and r["reader"].startswith("kitebox")) for d in delays]
    n = [next(r["median_ms"] for r in data if r["delay_ms"] == d and r["reader"].startswith("naive")) for d in delays]
    x = range(len(delays))
    _label_bars(ax, ax.bar([i - 0.2 for i in x], k, 0.4, color=KITEBOX, label="kitebox (concurrent)"), "{:.0f}")
    _label_bars(ax, ax.bar([i + 0.2 for i in x], n, 0.4, color=BASELINE, label="naive (sequential)"), "{:.0f}")
    ax.set_xticks(list(x), [f"+{d} ms round trip" for d in delays])
    ax.set_ylabel("median wall time, ms (lower is better)")
    ax.set_ylim(0, max(n) * 1.35)
    ax.legend(fontsize=8, loc="upper left")
    _ratio_note(ax, "\n".join(f"+{d} ms: {b / a:.1f}× faster" for d, a, b in zip(delays, k, n)))


def _job_start(ax, data) -> None:
    ax.set_title("Job start: spawn → first command line", fontsize=11, fontweight="bold")
    stats = data["stats"]
    docker, kitebox = stats["docker run"]["median_ms"], stats["kitebox job"]["median_ms"]
    ssm = stats["ssm fetch"]["median_ms"]
    own = max(0.0, kitebox - docker - ssm)
    ax.bar([0], [docker], 0.55, color=BASELINE, label="bare docker run")
    ax.bar([1], [docker], 0.55, color=OTHER, label="…of which the container (docker run)")
    ax.bar([1], [ssm], 0.55, bottom=[docker], color=KITEBOX_LIGHT, label="…SSM fetch")
    ax.bar([1], [own], 0.55, bottom=[docker + ssm], color=KITEBOX, label="…kitebox's own work")
    ax.annotate(f"{docker:.0f}", (0, docker), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    ax.annotate(f"{kitebox:.0f}", (1, kitebox), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=8)
    ax.set_xticks([0, 1], ["bare docker run", "kitebox job"])
    ax.set_ylabel(f"median ms over {data['runs']} runs (lower is better)")
    ax.set_ylim(0, kitebox * 1.45)
    ax.legend(fontsize=7.5, loc="upper left")
    _ratio_note(ax, f"{kitebox / docker:.2f}× a bare docker run")


def _proxy_phases(data):
    servers = data.get("settings", {}).get("servers") or ["asyncio"]
    names = [f"kitebox-{s}" for s in servers if f"kitebox-{s}" in data["phases"]] + ["metadataproxy-2.2.0"]
    labels = [n.replace("kitebox-", "kitebox\n").replace("metadataproxy-2.2.0", "metadataproxy\n2.2.0") for n in names]
    colors = [KITEBOX if i == 0 else KITEBOX_LIGHT for i in range(len(names) - 1)] + [BASELINE]
    return names, labels, colors


def _proxy_metric(ax, data, title, ylabel, value, fmt, word, log=False) -> None:
    """`word`: "more" (higher is better), "less" or "faster" (lower is better)."""
    ax.set_title(title, fontsize=11, fontweight="bold")
    names, labels, colors = _proxy_phases(data)
    values = [value(data["phases"][n]) for n in names]
    _label_bars(ax, ax.bar(range(len(names)), values, 0.6, color=colors), fmt)
    ax.set_xticks(range(len(names)), labels, fontsize=8.5)
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(min(values) / 2, max(values) * 4)
    else:
        ax.set_ylim(0, max(values) * 1.3)
    k, m = values[0], values[-1]
    _ratio_note(ax, f"kitebox {(k / m if word == 'more' else m / k):.1f}× {word}")


def _latency(ax, data) -> None:
    ax.set_title("Proxy latency, same load (closed loop)", fontsize=11, fontweight="bold")
    names, labels, colors = _proxy_phases(data)
    width = 0.38
    for j, (key, hatch) in enumerate((("p50_ms", ""), ("p99_ms", "//"))):
        values = [data["phases"][n][key] for n in names]
        bars = ax.bar([i + (j - 0.5) * width for i in range(len(names))], values, width, color=colors,
                      hatch=hatch, edgecolor="white", label=key.replace("_ms", ""))
        _label_bars(ax, bars, "{:.1f}", fontsize=7.5)
    ax.set_xticks(range(len(names)), labels, fontsize=8.5)
    ax.set_yscale("log")
    ax.set_ylabel("ms, log scale (lower is better)")
    top = max(data["phases"][n]["p99_ms"] for n in names)
    ax.set_ylim(min(data["phases"][n]["p50_ms"] for n in names) / 2, top * 6)
    ax.legend(fontsize=8, loc="upper left", title="plain p50, hatched p99", title_fontsize=7.5)
    k, m = data["phases"][names[0]], data["phases"][names[-1]]
    _ratio_note(ax, f"p50 {m['p50_ms'] / k['p50_ms']:.0f}× / p99 {m['p99_ms'] / k['p99_ms']:.0f}× lower")


def _cold(ax, data) -> None:
    _proxy_metric(ax, data, "Cold first request: new job, new role", "ms, log scale (lower is better)",
                  lambda p: p["cold_first_request"]["ms"], "{:.1f}", "faster", log=True)
    names, _, _ = _proxy_phases(data)
    prefetch = data["phases"][names[0]].get("cold_register_with_prefetch_ms")
    if prefetch is not None:
        ax.text(0.02, 0.80, f"kitebox calls STS at registration ({prefetch:.0f} ms,\nbefore the job's first "
                "command); metadataproxy\ncalls it on the job's first request", fontsize=7.5, color="#444",
                transform=ax.transAxes, va="top")


def draw(summary: dict, data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9.2))
    status = summary["benchmarks"]
    panels = [
        (axes[0][0], "ssm_fetch", "Secret fetch", _secret_fetch),
        (axes[0][1], "job_start", "Job start", _job_start),
        (axes[0][2], "proxy", "Proxy throughput",
         lambda ax, d: _proxy_metric(ax, d, "Proxy throughput (cached credentials)", "requests/s (higher is better)",
                                     lambda p: p["rps"], "{:,.0f}", "more")),
        (axes[1][0], "proxy", "Proxy latency", _latency),
        (axes[1][1], "proxy", "Proxy memory",
         lambda ax, d: _proxy_metric(ax, d, "Proxy memory after the run", "RSS, MiB (lower is better)",
                                     lambda p: p["rss_kib"] / 1024, "{:.0f}", "less")),
        (axes[1][2], "proxy", "Cold first request", _cold),
    ]
    for ax, name, title, drawer in panels:
        if name not in status:
            _not_run(ax, title, "not asked for (--only)")
        elif status[name]["status"] != "ok" or not data.get(name):
            _not_run(ax, title, status[name].get("reason") or "no data")
        else:
            drawer(ax, data[name])
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
    machine = summary["machine"]
    fig.suptitle(f"kitebox vs its baselines, side by side in one run — {summary['generated_at'][:10]}, "
                 f"{machine['cpus']} cores, {summary['mode']} mode", fontsize=13, fontweight="bold")
    fig.text(0.5, 0.005, f"`{summary['command']}` · summary.json next to this chart has every figure; "
             "moto over HTTP stands in for AWS (SSM, STS +50 ms)", ha="center", fontsize=8.5, color="#444")
    fig.tight_layout(rect=(0, 0.02, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results"
    summary = json.loads((results / "summary.json").read_text())
    data = {}
    for name, info in summary["benchmarks"].items():
        if info["status"] == "ok":
            data[name] = json.loads((results / info["source"]).read_text())
    draw(summary, data, results / "summary.png")
    print(f"wrote {results / 'summary.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
