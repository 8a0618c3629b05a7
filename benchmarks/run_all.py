"""Every benchmark side by side in one run, and one table of ratios: kitebox against its baseline.

    secret fetch   benchmarks/ssm_fetch.py  kitebox's concurrent reader vs a naive sequential one,
                                            at 0 and 30 ms of added round trip (moto over HTTP)
    job start      benchmarks/job_start.py  `kitebox job` to the first command line vs a bare
                                            `docker run` (root, Docker, image kitebox/job:test)
    proxy          benchmarks/proxy.py      kitebox's metadata proxy vs lyft metadataproxy 2.2.0 on
                                            the same containers and moto STS: req/s, p50, p99, RSS,
                                            cold first request (root, Docker, metadataproxy venv)

Each benchmark runs as its own process with its own CLI (one after the other: on a 2-core machine
two at once would measure each other) and writes its JSON into the results directory; this
script reads those files back (only ones written during this run), prints the table, and writes
`summary.json` and `summary.png` (matplotlib, the `bench` extra). A benchmark that cannot run here
is reported as "not run: <reason>", never filled in from an older file.

    .venv/bin/python benchmarks/run_all.py            # full: the committed figures (about 5 min)
    .venv/bin/python benchmarks/run_all.py --quick    # bounded short version (about 1 min), into
                                                      # benchmarks/results/quick/ (not committed)
    .venv/bin/python benchmarks/run_all.py --only ssm_fetch proxy
    .venv/bin/python benchmarks/run_all.py --from-results   # table and chart from existing JSON

Exit status: 0 when every benchmark that was asked for ran, 1 when any was not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
JOB_IMAGE = "kitebox/job:test"
BASE_IMAGE = "kitebox/base:bookworm"
MDP_VENV = Path("/opt/kitebox-bench/metadataproxy-venv")
# benchmarks/proxy.py's baseline, installed as ../shared/reference/aws-credentials.md says: its
# pinned dependencies do not build on Python 3.11, so it gets these in a venv of its own.
MDP_PACKAGES = ["flask", "gevent", "gunicorn", "packaging", "boto3", "cachetools", "python-json-logger",
                "docker-py==1.10.6", "requests==2.31.0", "urllib3<2"]


@dataclass
class Benchmark:
    name: str
    title: str
    script: str
    full: list[str]
    quick: list[str]
    timeout: dict[str, int]  # seconds, per mode
    needs: list = field(default_factory=list)  # callables -> reason it cannot run, or None


# -- what each benchmark needs ----------------------------------------------------------------


def _root() -> str | None:
    return None if os.geteuid() == 0 else "needs root (iptables for the job network, nsenter)"


def _docker() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    return None if done.returncode == 0 else "no Docker engine answers (start dockerd: bash scripts/setup)"


def _image(name: str):
    def check() -> str | None:
        done = subprocess.run(["docker", "image", "inspect", name], capture_output=True, timeout=30)
        return None if done.returncode == 0 else f"image {name} is missing (bash scripts/test builds it)"
    return check


def _tool(name: str):
    return lambda: None if shutil.which(name) else f"{name} not found"


def _metadataproxy(venv: Path, build: bool):
    def check() -> str | None:
        if (venv / "bin" / "gunicorn").exists() and (venv / "bin" / "python").exists():
            return None
        if not build:
            return f"metadataproxy venv missing at {venv} (run with --build-metadataproxy)"
        return build_metadataproxy(venv)
    return check


def build_metadataproxy(venv: Path) -> str | None:
    """Build metadataproxy 2.2.0's venv; the reason it failed, or None."""
    print(f"building metadataproxy 2.2.0 in {venv} (PyPI)", flush=True)
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", "--no-deps", "metadataproxy==2.2.0"],
        [str(venv / "bin/python"), "-m", "pip", "install", "-q", *MDP_PACKAGES],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"metadataproxy venv could not be built: {type(error).__name__}"
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1][:160]
            return f"metadataproxy venv could not be built ({' '.join(step[2:5])}): {last}"
    return None


def benchmarks(args) -> list[Benchmark]:
    venv = Path(args.metadataproxy_venv)
    return [
        Benchmark(
            "ssm_fetch", "secret fetch", "ssm_fetch.py",
            full=["--repeats", "9"], quick=["--repeats", "3"], timeout={"full": 600, "quick": 180},
        ),
        Benchmark(
            "job_start", "job start", "job_start.py",
            full=["--runs", "15", "--image", JOB_IMAGE], quick=["--runs", "3", "--image", JOB_IMAGE],
            timeout={"full": 900, "quick": 300},
            needs=[_root, _docker, _image(JOB_IMAGE)],
        ),
        Benchmark(
            "proxy", "metadata proxy", "proxy.py",
            full=["--metadataproxy-venv", str(venv)],
            # one server, no paced phases, 2 s phases: each bounded by --seconds and --max-requests
            quick=["--seconds", "2", "--clients", "20", "--containers", "3", "--servers", "asyncio",
                   "--max-requests", "50000", "--paced", "--metadataproxy-venv", str(venv)],
            timeout={"full": 1200, "quick": 300},
            needs=[_root, _docker, _image(BASE_IMAGE), _tool("nsenter"),
                   _metadataproxy(venv, args.build_metadataproxy)],
        ),
    ]


# -- running ----------------------------------------------------------------------------------


def run_one(bench: Benchmark, mode: str, results: Path, log_dir: Path) -> dict:
    """Run one benchmark; {"status": "ok", "data": ...} or {"status": "not run", "reason": ...}."""
    for need in bench.needs:
        reason = need()
        if reason:
            return {"status": "not run", "reason": reason}
    out = results / f"{bench.name}.json"
    argv = [sys.executable, str(BENCH / bench.script), *getattr(bench, mode), "--json", str(out)]
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *argv[1:]]).replace(str(ROOT) + "/", "")
    print(f"--- {bench.title}: {command}", flush=True)
    log = log_dir / f"{bench.name}.log"
    started = time.time()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BUILDKITE_", "KITEBOX_"))}
    try:
        with open(log, "w") as handle:
            done = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=handle,
                                  stderr=subprocess.STDOUT, timeout=bench.timeout[mode], start_new_session=True)
    except subprocess.TimeoutExpired:
        return {"status": "not run", "reason": f"ran over {bench.timeout[mode]} s (log {log})", "command": command}
    took = time.time() - started
    tail = log.read_text(errors="replace").strip().splitlines()
    if done.returncode != 0:
        last = next((line for line in reversed(tail) if line.strip()), "no output")[:200]
        return {"status": "not run", "reason": f"exit {done.returncode}: {last}", "command": command}
    if not out.exists() or out.stat().st_mtime < started:
        return {"status": "not run", "reason": f"wrote no {out.name}", "command": command}
    print("\n".join(tail[-12:]), flush=True)
    return {"status": "ok", "data": json.loads(out.read_text()), "command": command, "seconds": round(took, 1)}


def from_results(bench: Benchmark, results: Path) -> dict:
    out = results / f"{bench.name}.json"
    if not out.exists():
        return {"status": "not run", "reason": f"no {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"}
    return {"status": "ok", "data": json.loads(out.read_text()), "command": "(from an earlier run)"}


# -- the table ----------------------------------------------------------------------------------


def row(benchmark, metric, unit, kitebox, baseline, baseline_name, better) -> dict:
    """`advantage` is how many times better kitebox is (>1: kitebox wins), whichever way is better.
    Ratios come from the figures as measured; the figures are rounded for showing only."""
    ratio = kitebox / baseline if kitebox and baseline else None
    advantage = None
    if ratio:
        advantage = ratio if better == "higher" else 1 / ratio
    shown = (lambda v: round(v, 1 if abs(v) >= 10 else 3)) if unit != "req/s" else (lambda v: round(v))
    return {"benchmark": benchmark, "metric": metric, "unit": unit, "kitebox": shown(kitebox),
            "baseline": shown(baseline), "baseline_name": baseline_name, "ratio": round(ratio, 3) if ratio else None,
            "better": better, "advantage": round(advantage, 2) if advantage else None}


def ssm_rows(data: list[dict]) -> list[dict]:
    rows = []
    for delay in (0, 30):
        pair = {r["reader"].split(" ")[0]: r for r in data if r["delay_ms"] == delay}
        rows.append(row("secret fetch", f"3 namespaces × 20, +{delay} ms RTT (median)", "ms",
                        pair["kitebox"]["median_ms"], pair["naive"]["median_ms"], "naive sequential", "lower"))
    return rows


def job_rows(data: dict) -> list[dict]:
    stats = data["stats"]
    return [
        row("job start", "spawn → first command line (median)", "ms", stats["kitebox job"]["median_ms"],
            stats["docker run"]["median_ms"], "bare docker run", "lower"),
        row("job start", "p90", "ms", stats["kitebox job"]["p90_ms"], stats["docker run"]["p90_ms"],
            "bare docker run", "lower"),
    ]


def proxy_phase(data: dict) -> tuple[str, dict, dict]:
    servers = data.get("settings", {}).get("servers") or ["asyncio"]
    name = f"kitebox-{servers[0]}"
    phases = data["phases"]
    return name, phases[name], phases["metadataproxy-2.2.0"]


def proxy_rows(data: dict) -> list[dict]:
    name, k, m = proxy_phase(data)
    base = "metadataproxy 2.2.0"
    return [
        row("proxy", f"req/s, {k['clients']} keep-alive clients ({name})", "req/s", k["rps"], m["rps"], base, "higher"),
        row("proxy", "p50 latency", "ms", k["p50_ms"], m["p50_ms"], base, "lower"),
        row("proxy", "p99 latency", "ms", k["p99_ms"], m["p99_ms"], base, "lower"),
        row("proxy", "RSS after the run", "MiB", k["rss_kib"] / 1024, m["rss_kib"] / 1024, base, "lower"),
        row("proxy", "cold first request (new job, new role)", "ms", k["cold_first_request"]["ms"],
            m["cold_first_request"]["ms"], base, "lower"),
    ]


ROWS = {"ssm_fetch": ssm_rows, "job_start": job_rows, "proxy": proxy_rows}


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)) and value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def table(rows: list[dict], runs: dict, titles: dict) -> str:
    head = ("benchmark", "metric", "kitebox", "baseline", "vs", "kitebox / baseline", "kitebox is")
    body = []
    for r in rows:
        unit = f" {r['unit']}"
        if r["advantage"] is None:
            verdict = "-"
        elif r["advantage"] >= 1:
            word = "faster" if r["unit"] == "ms" else ("more" if r["better"] == "higher" else "smaller")
            verdict = f"{r['advantage']:.2f}× {word}"
        else:  # the ratio itself says how much slower (or bigger, or fewer)
            worse = r["ratio"] if r["better"] == "lower" else 1 / r["ratio"]
            verdict = f"{worse:.2f}× {'slower' if r['unit'] == 'ms' else 'worse'}"
        body.append((r["benchmark"], r["metric"], fmt(r["kitebox"]) + unit, fmt(r["baseline"]) + unit,
                     r["baseline_name"], fmt(r["ratio"]), verdict))
    for name, run in runs.items():
        if run["status"] != "ok":
            body.append((titles[name], f"not run: {run['reason']}", "", "", "", "", ""))
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip() for line in body]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the bounded short version of every benchmark")
    parser.add_argument("--only", nargs="+", choices=list(ROWS), help="run only these benchmarks")
    parser.add_argument("--results", help="results directory (default benchmarks/results, or its quick/ with --quick)")
    parser.add_argument("--from-results", action="store_true", help="run nothing: table and chart from the JSON there")
    parser.add_argument("--metadataproxy-venv", default=str(MDP_VENV))
    parser.add_argument("--build-metadataproxy", action="store_true",
                        help="build the metadataproxy venv from PyPI if it is missing")
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    results = Path(args.results) if args.results else (RESULTS / "quick" if args.quick else RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    log_dir = results / "logs"
    log_dir.mkdir(exist_ok=True)
    chosen = [b for b in benchmarks(args) if not args.only or b.name in args.only]
    started = time.time()
    runs = {}
    for bench in chosen:
        runs[bench.name] = from_results(bench, results) if args.from_results else run_one(bench, mode, results, log_dir)
        if runs[bench.name]["status"] != "ok":
            print(f"--- {bench.title}: not run: {runs[bench.name]['reason']}", flush=True)
    rows = []
    for name, run in runs.items():
        if run["status"] == "ok":
            try:
                rows += ROWS[name](run["data"])
            except (KeyError, TypeError, IndexError) as error:
                run.update(status="not run", reason=f"its JSON lacks {error}")
    titles = {b.name: b.title for b in chosen}
    text = table(rows, runs, titles)
    invocation = "python benchmarks/run_all.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\n{invocation.strip()}  ({mode}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"{time.time() - started:.0f} s)\n")
    print(text)
    summary = {
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": invocation.strip(),
        "mode": mode,
        "machine": {"cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 2),
                    "python": sys.version.split()[0]},
        "benchmarks": {
            name: {"status": run["status"], "reason": run.get("reason"), "command": run.get("command"),
                   "seconds": run.get("seconds"),
                   "source": f"{name}.json" if run["status"] == "ok" else None}
            for name, run in runs.items()
        },
        "rows": rows,
        "table": text.splitlines(),
    }
    (results / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {results / 'summary.json'}")
    if not args.no_chart:
        try:
            from chart import draw  # benchmarks/chart.py, next to this file
        except ImportError as error:
            print(f"no chart: {error} (install the bench extra: pip install -e '.[bench]')")
        else:
            draw(summary, {n: r.get("data") for n, r in runs.items()}, results / "summary.png")
            print(f"wrote {results / 'summary.png'}")
    return 0 if all(run["status"] == "ok" for run in runs.values()) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    raise SystemExit(main())
