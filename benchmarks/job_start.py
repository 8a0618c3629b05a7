"""Job start: `kitebox job` start → the job's first command line, against a bare `docker run`.

Side by side in one run, interleaved, on this machine's Docker engine and a moto server over
HTTP (three namespaces, a deploy key in two of them, so two ssh-agents start, and five secrets).
Each round measures:
  docker run   wall time of `docker run --rm --network <job net> <image> true`
  kitebox job  from spawning `python -m kitebox job` to its first line of command output
  ssm fetch    one fetch of the job's three namespaces (fresh client), the SSM round trips
and kitebox's own cost is `kitebox job - docker run - ssm fetch`. The inner bootstrap is a bare
`bash -c "$BUILDKITE_COMMAND"`, so checkout time does not blur the figure. Needs root (the job
network's firewall) and the image (build it with `bash .ci/run` or tests' ensure_job_image).

    .venv/bin/python benchmarks/job_start.py [--runs 15] [--image kitebox/job:test]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kitebox.adapters.aws import SsmStore  # noqa: E402
from kitebox.box.network import ensure_network, remove_firewall  # noqa: E402
from kitebox.demo.localaws import MotoServer  # noqa: E402
from kitebox.keys import generate_ed25519  # noqa: E402

BASE = "/vendors/buildkite"
REPO = "git@github.com:acme/widgets.git"
NAMESPACES = [f"{BASE}/global", f"{BASE}/github.com_acme_widgets.git", f"{BASE}/widgets"]
FIRST_LINE = "kitebox-benchmark-first-line"
LINE_TIMEOUT = 60


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def time_docker_run(image: str, network: str) -> float:
    started = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "--network", network, image, "true"], check=True,
                   stdout=subprocess.DEVNULL, timeout=LINE_TIMEOUT)
    return time.perf_counter() - started


def time_kitebox_job(env: dict[str, str], cwd: str) -> float:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "kitebox", "job"], env=env, cwd=cwd,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        first = None
        for line in process.stdout:  # bounded: the process is waited for with a timeout below
            if line.strip() == FIRST_LINE.encode():
                first = time.perf_counter() - started
                break
        process.stdout.read()
        err = process.stderr.read()
        process.wait(timeout=LINE_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if first is None or process.returncode != 0:
        raise SystemExit(f"kitebox job failed (exit {process.returncode}):\n{err.decode()}")
    return first


def time_ssm_fetch() -> float:
    store = SsmStore.create()
    started = time.perf_counter()
    store.fetch(NAMESPACES)
    return time.perf_counter() - started


def seed(moto) -> None:
    ssm = moto.client("ssm")
    for path, key in ((NAMESPACES[0], generate_ed25519("global")), (NAMESPACES[1], generate_ed25519("repo"))):
        ssm.put_parameter(Name=f"{path}/ssh/key", Value=key.private.reveal(), Type="SecureString")
    for path in NAMESPACES:
        for i in range(5):
            ssm.put_parameter(Name=f"{path}/env/var-{i}", Value=f"value {i} of {path}", Type="SecureString")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--image", default="kitebox/job:test")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/job_start.json"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: kitebox job manages the job network's iptables rules")
    import docker

    client = docker.from_env()
    network_name = f"kitebox-bench-{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="kbx-bench-", dir="/tmp"))
    work.chmod(0o755)
    network = ensure_network(client, network_name, True, work / "network.lock")
    samples: dict[str, list[float]] = {"docker run": [], "kitebox job": [], "ssm fetch": []}
    try:
        with MotoServer() as moto:
            os.environ.update(moto.env())
            seed(moto)
            (work / "builds").mkdir()
            job = {
                "BUILDKITE_JOB_ID": "bench", "BUILDKITE_REPO": REPO, "BUILDKITE_BRANCH": "main",
                "BUILDKITE_COMMIT": "HEAD", "BUILDKITE_AGENT_NAME": "bench-agent",
                "BUILDKITE_ORGANIZATION_SLUG": "acme", "BUILDKITE_PIPELINE_SLUG": "widgets",
                "BUILDKITE_PIPELINE_PROVIDER": "github", "BUILDKITE_COMMAND": f"echo {FIRST_LINE}",
            }
            env_file = work / "env.json"
            env = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE_", "KITEBOX_"))}
            env.update(job)
            env.update(
                BUILDKITE_ENV_JSON_FILE=str(env_file), BUILDKITE_BUILD_PATH=str(work / "builds"),
                BUILDKITE_AGENT_ACCESS_TOKEN="bench-token", KITEBOX_IMAGE=args.image,
                KITEBOX_NETWORK=network_name, KITEBOX_NETWORK_INTERNAL="true",
                KITEBOX_RUN_DIR=str(work / "run"), KITEBOX_AUDIT="off",
                KITEBOX_PROXY="off",  # start-up of the container path alone; the proxy has its own benchmark
                KITEBOX_INNER_BOOTSTRAP="bash -c 'exec bash -c \"$BUILDKITE_COMMAND\"'",
            )
            time_docker_run(args.image, network_name)  # warm-up: page cache, image layers
            for i in range(args.runs + 1):
                job["BUILDKITE_JOB_ID"] = env["BUILDKITE_JOB_ID"] = f"bench-{i}"
                env_file.write_text(json.dumps(job))
                runs = {
                    "docker run": lambda: time_docker_run(args.image, network_name),
                    "kitebox job": lambda: time_kitebox_job(env, str(work)),
                    "ssm fetch": time_ssm_fetch,
                }
                for name, run in runs.items():
                    value = run()
                    if i:  # round 0 warms kitebox up too
                        samples[name].append(value)
    finally:
        client.networks.get(network_name).remove()
        remove_firewall(network.bridge)
        client.close()
        shutil.rmtree(work, ignore_errors=True)

    stats = {
        name: {"median_ms": round(statistics.median(v) * 1000, 1), "p90_ms": round(percentile(v, 0.9) * 1000, 1)}
        for name, v in samples.items()
    }
    overhead = [k - d - s for k, d, s in zip(samples["kitebox job"], samples["docker run"], samples["ssm fetch"])]
    stats["kitebox own"] = {"median_ms": round(statistics.median(overhead) * 1000, 1),
                            "p90_ms": round(percentile(overhead, 0.9) * 1000, 1)}
    ratio = statistics.median(samples["kitebox job"]) / statistics.median(samples["docker run"])
    print(f"{'':<14}{'median ms':>10}{'p90 ms':>10}   ({args.runs} runs, image {args.image})")
    for name, row in stats.items():
        print(f"{name:<14}{row['median_ms']:>10.1f}{row['p90_ms']:>10.1f}")
    print(f"ratio kitebox job / docker run (medians): {ratio:.2f}; load average {os.getloadavg()[0]:.1f}")
    result = {
        "benchmark": "job_start", "runs": args.runs, "image": args.image, "cpus": os.cpu_count(),
        "stats": stats, "ratio_median": round(ratio, 3), "load_average_1m": round(os.getloadavg()[0], 2),
        "samples_ms": {k: [round(x * 1000, 1) for x in v] for k, v in samples.items()},
        "note": "kitebox own = kitebox job (spawn to first command line) - docker run - ssm fetch, per round",
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
