"""Metadata proxy: kitebox vs lyft's metadataproxy 2.2.0, side by side in one run, same containers.

Set-up (all local): a moto server behind a LatencyProxy (STS round trip, default 50 ms, and a
count of AssumeRole calls), a loopback stand-in IMDS as both proxies' upstream, an --internal
Docker network with job containers (each with kitebox's labels and metadataproxy's IAM_ROLE).
Both proxies listen on the network's gateway; load comes from inside the containers' network
namespaces (nsenter), so each proxy sees the containers' own addresses.

Phases, each bounded by --seconds and --max-requests per client process:
  kitebox (asyncio server), kitebox (threading server), metadataproxy (gunicorn -k gevent)
Each: --repeats runs (the median by p99 reported, all kept) of --clients keep-alive connections spread over the containers, each asking for cached
credentials in a closed loop (kitebox with an IMDSv2 token, metadataproxy IMDSv1: it has no
v2); req/s, p50, p99, the proxy's RSS, STS calls during the warm run (must be 0), and the cold
first request of a fresh job with a fresh role. Results to --json.

Usage (root, Docker running, metadataproxy in its own venv as aws-credentials.md says):
    .venv/bin/python benchmarks/proxy.py [--seconds 8] [--clients 50] [--containers 5] \
        [--metadataproxy-venv /opt/kitebox-bench/metadataproxy-venv] [--json benchmarks/results/proxy.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

ACCOUNT = "123456789012"
IMAGE = "kitebox/base:bookworm"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/bench-role"
ROLE_NAME = "bench-role"


# -- the load client: runs inside a container's network namespace ------------------------------


async def _one_connection(host, port, requests, deadline, max_count, samples, errors, rate=0.0):
    """Closed loop (rate 0: next request as soon as the answer is in), or paced at `rate` per
    second, latency then counted from the SCHEDULED send time (no coordinated omission)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, port))
    buffer = b""
    count = 0
    # stagger paced connections so they do not all fire in the same instant
    next_at = time.perf_counter() + (secrets.randbelow(1000) / 1000 / rate if rate else 0)
    try:
        while time.monotonic() < deadline and count < max_count:
            if rate:
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                started = next_at
                next_at += 1 / rate
            else:
                started = time.perf_counter()
            await loop.sock_sendall(sock, requests)
            while True:
                end = buffer.find(b"\r\n\r\n")
                if end != -1:
                    head = buffer[:end].lower()
                    at = head.find(b"content-length:")
                    length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at != -1 else 0
                    if len(buffer) >= end + 4 + length:
                        status = int(buffer[9:12])
                        buffer = buffer[end + 4 + length:]
                        break
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    raise ConnectionError("closed")
                buffer += chunk
            samples.append((time.perf_counter() - started) * 1000)
            if status != 200:
                errors.append(status)
            count += 1
    finally:
        sock.close()


def _token(host, port):
    request = urllib.request.Request(f"http://{host}:{port}/latest/api/token", method="PUT",
                                     headers={"x-aws-ec2-metadata-token-ttl-seconds": "21600"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return answer.read().decode()


def client_main(args) -> None:
    if args.token_only:
        print(_token(args.host, args.port))
        return
    path = f"/latest/meta-data/iam/security-credentials/{args.role_name}"
    extra = f"x-aws-ec2-metadata-token: {_token(args.host, args.port)}\r\n" if args.v2 else ""
    request = (f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{extra}\r\n").encode()
    if args.once:  # the cold first request: a new connection, one sequence, timed
        started = time.perf_counter()
        extra_headers = {"x-aws-ec2-metadata-token": _token(args.host, args.port)} if args.v2 else {}
        with urllib.request.urlopen(urllib.request.Request(f"http://{args.host}:{args.port}{path}",
                                                           headers=extra_headers), timeout=10) as answer:
            status = answer.status
            answer.read()
        print(json.dumps({"ms": (time.perf_counter() - started) * 1000, "status": status}))
        return
    while time.time() < args.start_at:
        time.sleep(0.001)
    samples: list[float] = []
    errors: list[int] = []

    async def run():
        deadline = time.monotonic() + args.seconds
        await asyncio.gather(*(
            _one_connection(args.host, args.port, request, deadline, args.max_requests, samples, errors, args.rate)
            for _ in range(args.connections)))

    asyncio.run(run())
    print(json.dumps({"count": len(samples), "errors": len(errors), "samples": [round(s, 3) for s in samples]}))


# -- orchestration -------------------------------------------------------------------------------


def sh(*argv, check=True, env=None, timeout=120) -> str:
    done = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed: {done.stderr.strip()[-1500:]}")
    return done.stdout.strip()


def owner_labels() -> dict[str, str]:
    """Box mode's owner labels naming this process: a concurrent `kitebox reap` leaves us alone."""
    stat = Path(f"/proc/{os.getpid()}/stat").read_text()
    return {"kitebox.pid": str(os.getpid()), "kitebox.pid-start": stat[stat.rindex(")") + 2:].split()[19],
            "kitebox.boot-id": Path("/proc/sys/kernel/random/boot_id").read_text().strip()}


def rss_kib(pids) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def children(pid: int) -> list[int]:
    found = [pid]
    for child in sh("pgrep", "-P", str(pid), check=False).split():
        found += children(int(child))
    return found


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout} s")


class Bench:
    def __init__(self, args):
        from kitebox.demo.localaws import LatencyProxy, MotoServer
        from tests.proxy.conftest import StandInImds

        self.args = args
        self.moto = MotoServer().start()
        self.sts = LatencyProxy(self.moto.endpoint_url, delay=args.sts_delay).start()
        self.standin = StandInImds()
        self.network = f"kitebox-bench-{secrets.token_hex(4)}"
        for attempt in range(10):
            subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(256)}.0/24"
            if subprocess.run(["docker", "network", "create", "--internal", "--subnet", subnet, self.network],
                              capture_output=True).returncode == 0:
                break
        else:
            raise SystemExit("could not create the benchmark network")
        self.gateway = sh("docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", self.network) \
            or subnet.rsplit(".", 1)[0] + ".1"
        self.tmp = Path(tempfile.mkdtemp(prefix="kitebox-bench-"))
        self.containers: list[tuple[str, str, int]] = []  # (id, address, pid)
        # The C load generator (closed loop); Python's asyncio client if there is no compiler.
        self.loadgen = str(self.tmp / "loadgen")
        if subprocess.run(["gcc", "-O2", "-o", self.loadgen, str(ROOT / "benchmarks/loadgen.c")],
                          capture_output=True).returncode != 0:
            self.loadgen = None
        self.processes: list[subprocess.Popen] = []
        self.aws_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.aws_env.update({
            "AWS_ENDPOINT_URL": self.sts.endpoint_url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        })

    def container(self, job_id: str, role: str) -> tuple[str, str, int, str]:
        from kitebox.proxy import client

        token = client.new_token()
        argv = ["docker", "run", "-d", "--network", self.network, "-e", f"IAM_ROLE={role}"]
        for key, value in {**client.labels(job_id, role, token), **owner_labels()}.items():
            argv += ["--label", f"{key}={value}"]
        cid = sh(*argv, IMAGE, "sleep", "3600")
        address = sh("docker", "inspect", "-f",
                     f'{{{{(index .NetworkSettings.Networks "{self.network}").IPAddress}}}}', cid)
        pid = int(sh("docker", "inspect", "-f", "{{.State.Pid}}", cid))
        self.containers.append((cid, address, pid))
        return cid, address, pid, token

    def start_kitebox(self, server: str) -> tuple[subprocess.Popen, int, str]:
        state = self.tmp / f"state-{server}"
        port = 18769 if server == "asyncio" else 18771
        admin = 19750 if server == "asyncio" else 19751
        proc = subprocess.Popen(
            [str(ROOT / ".venv/bin/kitebox"), "proxy", "serve", "--network", self.network,
             "--imds-port", str(port), "--ecs-port", str(port + 1), "--state-dir", str(state),
             "--admin", f"127.0.0.1:{admin}", "--upstream", self.standin.url, "--region", "eu-west-1",
             "--no-rules", "--server", server, "--audit", str(self.tmp / f"audit-{server}.jsonl")],
            env=self.aws_env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / f"kitebox-{server}.log", "wb"))
        self.processes.append(proc)
        deadline = time.monotonic() + 30
        while not (state / "proxy.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"kitebox proxy did not start: {(self.tmp / f'kitebox-{server}.log').read_text()}")
            time.sleep(0.05)
        return proc, port, str(state / "proxy.sock")

    def start_metadataproxy(self) -> tuple[subprocess.Popen, int]:
        venv = Path(self.args.metadataproxy_venv)
        port = 18800
        env = {**self.aws_env, "HOST": self.gateway, "PORT": str(port), "METADATA_URL": self.standin.url}
        env.pop("AWS_REGION", None)  # set, it hard-codes sts.<region>.amazonaws.com and ignores moto
        proc = subprocess.Popen(
            [str(venv / "bin/gunicorn"), "-b", f"{self.gateway}:{port}", "-k", "gevent", "metadataproxy:app"],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "metadataproxy.log", "wb"))
        self.processes.append(proc)
        return proc, port

    def load(self, port: int, v2: bool, total_rate: float = 0.0) -> dict:
        per = max(1, self.args.clients // len(self.load_containers))
        rate = total_rate / (per * len(self.load_containers)) if total_rate else 0.0
        start_at = time.time() + 1.5
        procs = []
        for _, _, pid in self.load_containers:
            if self.loadgen and not rate:
                extra = ""
                if v2:
                    token = sh("nsenter", "-t", str(pid), "-n", sys.executable, __file__, "client", "--host",
                               self.gateway, "--port", str(port), "--role-name", ROLE_NAME, "--token-only")
                    extra = f"x-aws-ec2-metadata-token: {token}\r\n"
                request = (f"GET /latest/meta-data/iam/security-credentials/{ROLE_NAME} HTTP/1.1\r\n"
                           f"Host: 169.254.169.254\r\n{extra}\r\n")
                procs.append(subprocess.Popen(
                    ["nsenter", "-t", str(pid), "-n", self.loadgen, self.gateway, str(port), str(per),
                     str(self.args.seconds), str(self.args.max_requests), str(start_at), request],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                continue
            procs.append(subprocess.Popen(
                ["nsenter", "-t", str(pid), "-n", sys.executable, __file__, "client", "--host", self.gateway,
                 "--port", str(port), "--connections", str(per), "--seconds", str(self.args.seconds),
                 "--max-requests", str(self.args.max_requests), "--start-at", str(start_at),
                 "--role-name", ROLE_NAME, "--rate", str(rate)] + (["--v2"] if v2 else []),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=self.args.seconds + 60)
            if proc.returncode != 0:
                raise SystemExit(f"load client failed: {err[-1500:]}")
            results.append(json.loads(out))
        samples = sorted(s for r in results for s in r["samples"])
        count = len(samples)
        return {
            "clients": per * len(procs), "requests": count, "errors": sum(r["errors"] for r in results),
            "rps": round(count / self.args.seconds, 1),
            "offered_rps": total_rate or "closed loop",
            "p50_ms": round(samples[count // 2], 3) if count else None,
            "p99_ms": round(samples[min(count - 1, int(count * 0.99))], 3) if count else None,
            "mean_ms": round(statistics.fmean(samples), 3) if count else None,
        }

    def repeated(self, port: int, v2: bool) -> dict:
        """The closed loop --repeats times; the median run (by p99) stands, every run is kept."""
        runs = [self.load(port, v2) for _ in range(self.args.repeats)]
        median = sorted(runs, key=lambda r: r["p99_ms"])[len(runs) // 2]
        return {**median, "runs": [{k: r[k] for k in ("rps", "p50_ms", "p99_ms")} for r in runs]}

    def paced(self, port: int, v2: bool, capacity: float) -> dict:
        runs = {}
        for rate in self.args.paced:
            if rate > 0.8 * capacity:
                runs[str(int(rate))] = "skipped: over 80% of the closed-loop capacity"
                continue
            result = self.load(port, v2, total_rate=rate)
            runs[str(int(rate))] = {k: result[k] for k in ("rps", "p50_ms", "p99_ms", "errors")}
        return runs

    def once(self, pid: int, port: int, role_name: str, v2: bool) -> dict:
        out = sh("nsenter", "-t", str(pid), "-n", sys.executable, __file__, "client", "--host", self.gateway,
                 "--port", str(port), "--role-name", role_name, "--once", *(["--v2"] if v2 else []))
        return json.loads(out)

    def cleanup(self) -> None:
        for proc in self.processes:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.containers:
            subprocess.run(["docker", "rm", "-f", *[c for c, _, _ in self.containers]], capture_output=True)
        subprocess.run(["docker", "network", "rm", self.network], capture_output=True)
        self.standin.close()
        self.sts.stop()
        self.moto.stop()

    def run(self) -> dict:
        from kitebox.core.roles import RoleSession, session_name
        from kitebox.proxy import client

        jobs = [(f"bench-{i}",) + self.container(f"bench-{i}", ROLE) for i in range(self.args.containers)]
        self.load_containers = self.containers[:]
        results = {"machine": {"cores": os.cpu_count()}, "settings": vars(self.args).copy(), "phases": {},
                   "load_generator": "C epoll (benchmarks/loadgen.c)" if self.loadgen else "python asyncio"}
        mdp, mdp_port = self.start_metadataproxy()
        wait_http(f"http://{self.gateway}:{mdp_port}/")
        for server in self.args.servers:
            proc, port, sock = self.start_kitebox(server)
            for job_id, cid, address, pid, token in jobs:
                client.register(job_id, cid, address, token, RoleSession(ROLE, session_name(job_id)),
                                wait=10, socket_path=Path(sock))
            self.load(port, v2=True)  # warm-up: connections, caches (bounded like the run)
            before = self._assume_calls()
            measured = self.repeated(port, v2=True)
            measured["sts_calls_during_run"] = self._assume_calls() - before
            measured["rss_kib"] = rss_kib(children(proc.pid))
            measured["paced"] = self.paced(port, True, measured["rps"])
            job_id = f"cold-{server}"
            cold_role = f"arn:aws:iam::{ACCOUNT}:role/cold-{server}"
            cid, address, pid, token = self.container(job_id, cold_role)
            started = time.perf_counter()
            client.register(job_id, cid, address, token, RoleSession(cold_role, session_name(job_id)),
                            wait=10, socket_path=Path(sock))
            registered_ms = (time.perf_counter() - started) * 1000
            measured["cold_first_request"] = self.once(pid, port, f"cold-{server}", v2=True)
            measured["cold_register_with_prefetch_ms"] = round(registered_ms, 1)
            results["phases"][f"kitebox-{server}"] = measured
            print(f"kitebox ({server}): {json.dumps(measured)}", flush=True)
        # metadataproxy: warm its role cache first, then the same load on the same containers.
        self.once(self.load_containers[0][2], mdp_port, ROLE_NAME, v2=False)
        self.load(mdp_port, v2=False)
        before = self._assume_calls()
        measured = self.repeated(mdp_port, v2=False)
        measured["sts_calls_during_run"] = self._assume_calls() - before
        measured["rss_kib"] = rss_kib(children(mdp.pid))
        measured["paced"] = self.paced(mdp_port, False, measured["rps"])
        cid, address, pid, token = self.container("cold-mdp", f"arn:aws:iam::{ACCOUNT}:role/cold-mdp")
        measured["cold_first_request"] = self.once(pid, mdp_port, "cold-mdp", v2=False)
        results["phases"]["metadataproxy-2.2.0"] = measured
        print(f"metadataproxy 2.2.0: {json.dumps(measured)}", flush=True)
        best = results["phases"][f"kitebox-{self.args.servers[0]}"]
        results["ratio_rps"] = round(best["rps"] / measured["rps"], 1) if measured["rps"] else None
        return results

    def _assume_calls(self) -> int:
        return self.sts.request_count  # only STS goes through this proxy (query API: POST /)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode")
    c = sub.add_parser("client")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--connections", type=int, default=10)
    c.add_argument("--seconds", type=float, default=8)
    c.add_argument("--max-requests", type=int, default=200_000)
    c.add_argument("--start-at", type=float, default=0)
    c.add_argument("--role-name", required=True)
    c.add_argument("--v2", action="store_true")
    c.add_argument("--once", action="store_true")
    c.add_argument("--rate", type=float, default=0.0)
    c.add_argument("--token-only", action="store_true")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase (bounded)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="closed-loop runs per phase (median reported)")
    parser.add_argument("--containers", type=int, default=5)
    parser.add_argument("--max-requests", type=int, default=200_000, help="cap per client process")
    parser.add_argument("--sts-delay", type=float, default=0.05, help="added STS round trip, seconds")
    parser.add_argument("--servers", nargs="+", default=["asyncio", "threading"])
    parser.add_argument("--paced", type=float, nargs="*", default=[500.0, 5000.0],
                        help="also run paced (open loop) at these total req/s, where under 80%% of capacity")
    parser.add_argument("--metadataproxy-venv", default="/opt/kitebox-bench/metadataproxy-venv")
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/proxy.json"))
    args = parser.parse_args()
    if args.mode == "client":
        client_main(args)
        return 0
    bench = Bench(args)
    try:
        results = bench.run()
    finally:
        bench.cleanup()
    k, m = results["phases"][f"kitebox-{args.servers[0]}"], results["phases"]["metadataproxy-2.2.0"]
    print(f"\n{'':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'RSS MiB':>10}{'cold ms':>10}{'STS':>6}")
    for name, phase in results["phases"].items():
        print(f"{name:<22}{phase['rps']:>10}{phase['p50_ms']:>10}{phase['p99_ms']:>10}"
              f"{phase['rss_kib'] / 1024:>10.1f}{phase['cold_first_request']['ms']:>10.1f}{phase['sts_calls_during_run']:>6}")
    for name, phase in results["phases"].items():
        for rate, paced in phase["paced"].items():
            shown = paced if isinstance(paced, str) else f"p50 {paced['p50_ms']} ms, p99 {paced['p99_ms']} ms"
            print(f"{name:<22}paced at {rate} req/s: {shown}")
    print(f"\nkitebox ({args.servers[0]}) / metadataproxy req/s: {results['ratio_rps']}x "
          f"({k['rps']} vs {m['rps']})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
