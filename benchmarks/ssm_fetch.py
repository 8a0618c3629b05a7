"""Secret fetch: kitebox's concurrent reader vs a naive sequential per-namespace reader.

Three namespaces of 20 SecureString parameters each, on a moto server over HTTP, with 0 ms and
30 ms of round trip added by a forwarding proxy in front of it. Both readers run side by side
in one run, interleaved, on the same server; medians over the repeats; SSM API calls counted at
the proxy (retries included). Usage:

    .venv/bin/python benchmarks/ssm_fetch.py [--repeats 9] [--json benchmarks/results/ssm_fetch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kitebox.adapters.aws import SsmStore  # noqa: E402
from kitebox.demo.localaws import LatencyProxy, MotoServer  # noqa: E402

BASE = "/vendors/buildkite"
NAMESPACES = [f"{BASE}/global", f"{BASE}/github.com_acme_widgets.git", f"{BASE}/widgets"]


class SequentialStore(SsmStore):
    """The seed plugin's way: one namespace after another."""

    def fetch(self, paths):
        return {path: self._fetch_one(path) for path in paths}


def measure(store_class, proxy: LatencyProxy) -> tuple[float, int, int]:
    """Wall time of one fetch of the three namespaces from a fresh client, proxy requests, parameters."""
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint_url
    store = store_class.create()
    proxy.clear()
    started = time.perf_counter()
    fetched = store.fetch(NAMESPACES)
    elapsed = time.perf_counter() - started
    return elapsed, proxy.request_count, sum(len(v) for v in fetched.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--json", default="benchmarks/results/ssm_fetch.json")
    args = parser.parse_args()
    rows = []
    with MotoServer() as moto:
        os.environ.update(moto.env())
        ssm = moto.client("ssm")
        for path in NAMESPACES:
            for i in range(20):
                ssm.put_parameter(Name=f"{path}/env/VAR_{i:02d}", Value=f"value-{i}", Type="SecureString")
        for delay_ms in (0, 30):
            with LatencyProxy(moto.endpoint_url, delay=delay_ms / 1000) as proxy:
                times = {"kitebox (concurrent)": [], "naive (sequential)": []}
                calls = {}
                for _ in range(args.repeats):  # interleaved so drift hits both alike
                    for label, cls in (("kitebox (concurrent)", SsmStore), ("naive (sequential)", SequentialStore)):
                        elapsed, requests, found = measure(cls, proxy)
                        assert found == 60, f"{label} read {found} parameters, expected 60"
                        times[label].append(elapsed)
                        calls[label] = requests
                for label, samples in times.items():
                    rows.append({
                        "delay_ms": delay_ms, "reader": label, "ssm_calls": calls[label],
                        "median_ms": round(statistics.median(samples) * 1000, 1),
                        "min_ms": round(min(samples) * 1000, 1), "repeats": args.repeats,
                    })
    print(f"{'added RTT':>9}  {'reader':<22} {'SSM calls':>9} {'median':>9} {'min':>9}  ratio")
    for delay_ms in (0, 30):
        pair = [r for r in rows if r["delay_ms"] == delay_ms]
        naive = next(r for r in pair if r["reader"].startswith("naive"))["median_ms"]
        for row in pair:
            ratio = naive / row["median_ms"] if row["median_ms"] else float("nan")
            row["speedup_vs_naive"] = round(ratio, 2)
            print(f"{delay_ms:>7}ms  {row['reader']:<22} {row['ssm_calls']:>9} {row['median_ms']:>7}ms "
                  f"{row['min_ms']:>7}ms  {ratio:.2f}x")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
