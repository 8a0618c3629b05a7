"""The metadata proxy SIGKILLed mid-job, then started again on its state directory: while it is
down the job's metadata requests are refused at once (the redirect rules outlive the process, so
nothing reaches a real metadata service); once it is back the job gets its OWN credentials again
without being registered anew; and after a clean stop nothing is left: no rule, no network, no
container. (A graceful restart is tests/proxy/test_restart.py.)"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.faults.leftovers import Scope, assert_nothing_left
from tests.faults.proxy_process import ACCOUNT, ProxyProcess, docker

pytestmark = [pytest.mark.docker, pytest.mark.moto]

ROLE = f"arn:aws:iam::{ACCOUNT}:role/survives-a-crash"
# Polls the container endpoint every 50 ms (at most 1200 times: 60 s) and prints one line each:
# the access key and role, or the error's type. Stops once told to (/tmp/stop).
POLLER = r"""
import json, os, time, urllib.request
token = open("/run/kitebox/aws-token").read().strip()
for _ in range(1200):
    if os.path.exists("/tmp/stop"):
        break
    try:
        request = urllib.request.Request("http://169.254.170.2/v1/credentials", headers={"Authorization": token})
        with urllib.request.urlopen(request, timeout=2) as answer:
            document = json.loads(answer.read())
            print("key", document["AccessKeyId"], document["RoleArn"], flush=True)
    except Exception as error:
        print("error", type(error).__name__, flush=True)
    time.sleep(0.05)
"""


def lines(container: str) -> list[list[str]]:
    return [line.split() for line in docker("logs", container).splitlines() if line.strip()]


def wait_lines(container: str, predicate, timeout: float) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = lines(container)
        if predicate(seen):
            return seen
        time.sleep(0.1)
    return lines(container)


def test_sigkill_then_restart(moto, base_image, tmp_path):
    """Served → SIGKILL → refused (rules still in place, no other answer) → restarted →
    served its own role again; every key the job ever saw was issued to it."""
    proxy = ProxyProcess(moto, base_image, tmp_path)
    try:
        container = proxy.start_job("crash-1", ROLE, [POLLER])
        before = wait_lines(container, lambda seen: sum(s[0] == "key" for s in seen) >= 3, 20)
        assert sum(s[0] == "key" for s in before) >= 3, before[-5:]
        proxy.kill()
        rules = subprocess.run(["iptables", "-t", "nat", "-S"], capture_output=True, text=True).stdout
        assert proxy.subnet in rules, "the redirect went with the process: traffic could reach a real IMDS"
        mark = len(lines(container))
        down = wait_lines(container, lambda seen: sum(s[0] == "error" for s in seen[mark:]) >= 5, 20)[mark:]
        errors = {s[1] for s in down if s[0] == "error"}
        assert errors and errors <= {"ConnectionRefusedError", "URLError"}, down[-5:]
        assert not any(s[0] == "key" for s in down[5:]), "credentials were served with the proxy dead"
        proxy.launch()
        mark = len(lines(container))
        after = wait_lines(container, lambda seen: sum(s[0] == "key" for s in seen[mark:]) >= 3, 30)[mark:]
        assert sum(s[0] == "key" for s in after) >= 3, f"the job never regained credentials: {after[-5:]}"
        docker("exec", container, "touch", "/tmp/stop")
        issued = {json.loads(line)["access_key_id"] for line in proxy.audit.read_text().splitlines()
                  if '"kitebox.proxy.credentials"' in line and '"issued"' in line}
        served = [s for s in lines(container) if s[0] == "key"]
        assert {s[1] for s in served} <= issued and {s[2] for s in served} == {ROLE}
        recovered = [json.loads(line) for line in proxy.audit.read_text().splitlines()
                     if '"kitebox.proxy.registered"' in line]
        assert len(recovered) == 2, "registered once, recovered once from the state file"
    finally:
        proxy.stop()
    assert proxy.process.returncode == 0
    assert_nothing_left(Scope(job_ids=proxy.job_ids, networks=[proxy.network], tokens=[proxy.subnet, proxy.bridge]))
