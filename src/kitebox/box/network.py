"""The job network, and the firewall that keeps jobs away from the instance's metadata services.

A job must never reach 169.254.169.254 (IMDS: the instance role) or 169.254.170.2 (the ECS
credentials endpoint): the Elastic CI Stack's hop limit of 2 exists precisely so containers
reach IMDS (buildkite-contract.md). Until kitebox's metadata proxy DNATs these addresses (next
issue), traffic to them from the job network is REJECTed:

    filter KITEBOX-METADATA:  -d 169.254.169.254/32 -j REJECT ; -d 169.254.170.2/32 -j REJECT
    filter DOCKER-USER:       -i <bridge> -j KITEBOX-METADATA   (forwarded: the usual path)
    filter INPUT:             -i <bridge> -j KITEBOX-METADATA   (should the host own an address)

DOCKER-USER, not FORWARD: dockerd inserts its own ACCEPT rules at the top of FORWARD whenever
it creates a network, but never touches DOCKER-USER, which FORWARD jumps to first. REJECT, not
DROP: a job fails at once instead of hanging. Filter rules match the address after NAT, so the
proxy's DNAT will pass them. Rules are checked with one `iptables-save` and added only when
missing, under a file lock (several agents start jobs at once); any failure refuses the job
(fail closed). The network is IPv4 only: one with IPv6 enabled is refused, since IMDS also
answers on fd00:ec2::254 and these rules do not cover it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kitebox.errors import KiteboxError

CHAIN = "KITEBOX-METADATA"
METADATA_ADDRESSES = ("169.254.169.254", "169.254.170.2")
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
SAFE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class FirewallError(KiteboxError):
    """The job network or its metadata firewall could not be set up; no container starts."""


@dataclass(frozen=True)
class JobNetwork:
    name: str
    bridge: str  # the host interface


def bridge_name(network: str) -> str:
    """The bridge interface kitebox gives a network it creates (at most 15 characters)."""
    return "kbx-" + hashlib.sha256(network.encode()).hexdigest()[:10]


def wanted_rules(bridge: str) -> tuple[tuple[str, str], ...]:
    """(chain, rule) pairs, each rule spelled as `iptables-save` prints it."""
    rules = [(CHAIN, f"-d {address}/32 -j REJECT --reject-with icmp-port-unreachable") for address in METADATA_ADDRESSES]
    rules += [(chain, f"-i {bridge} -j {CHAIN}") for chain in ("DOCKER-USER", "INPUT")]
    return tuple(rules)


def missing(saved: str, bridge: str) -> tuple[bool, tuple[tuple[str, str], ...]]:
    """From `iptables-save -t filter` output: (does our chain exist, which rules are missing)."""
    lines = {line.strip() for line in saved.splitlines()}
    has_chain = any(line.startswith(f":{CHAIN} ") for line in lines)
    return has_chain, tuple((c, r) for c, r in wanted_rules(bridge) if f"-A {c} {r}" not in lines)


def _iptables(*args: str) -> subprocess.CompletedProcess:
    try:
        # Own session: the agent's cancel signal to our process group must not kill iptables
        # half-way (the next job would re-check, but this one would fail with a false reason).
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=30, env=SAFE_ENV, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise FirewallError(f"cannot run {args[0]}: {error}") from None


def _save() -> str:
    done = _iptables("iptables-save", "-t", "filter")
    if done.returncode != 0:
        raise FirewallError(f"iptables-save failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return done.stdout


@contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_firewall(bridge: str, lock_path: Path) -> None:
    """Make sure every rule exists; raise FirewallError (the job must not start) otherwise."""
    if os.geteuid() != 0:
        raise FirewallError("kitebox must run as root to manage the metadata firewall (iptables)")
    saved = _save()
    has_chain, todo = missing(saved, bridge)
    if has_chain and not todo:
        return
    with _locked(lock_path):
        saved = _save()  # again, under the lock: another job may have just added them
        if ":DOCKER-USER " not in saved:
            raise FirewallError("the DOCKER-USER chain is missing: dockerd must manage iptables")
        has_chain, todo = missing(saved, bridge)
        if not has_chain:
            _apply("-N", CHAIN)
        for chain, rule in todo:
            position = ["-A", chain] if chain == CHAIN else ["-I", chain, "1"]
            _apply(*position, *rule.split())
        has_chain, todo = missing(_save(), bridge)
    if not has_chain or todo:
        raise FirewallError(f"the metadata firewall rule in {todo[0][0] if todo else CHAIN} did not stick")


def _apply(*args: str) -> None:
    done = _iptables("iptables", "-w", "10", *args)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise FirewallError(f"iptables {' '.join(args[:2])} failed: {last}")


def remove_firewall(bridge: str) -> None:
    """Remove the jumps for one bridge (tests, decommissioning); the shared chain stays."""
    for chain, rule in wanted_rules(bridge):
        if chain != CHAIN:
            while _iptables("iptables", "-w", "10", "-D", chain, *rule.split()).returncode == 0:
                pass


def ensure_network(client, name: str, internal: bool, lock_path: Path) -> JobNetwork:
    """The job network (a bridge, created if missing) with its firewall in place."""
    import docker.errors

    try:
        with _locked(lock_path):
            try:
                network = client.networks.get(name)
            except docker.errors.NotFound:
                network = client.networks.create(
                    name,
                    driver="bridge",
                    internal=internal,
                    options={BRIDGE_NAME_OPTION: bridge_name(name)},
                    labels={"kitebox.network": "jobs"},
                    check_duplicate=True,
                )
                network.reload()
    except docker.errors.DockerException as error:
        raise FirewallError(f"cannot create the job network {name}: {error}") from None
    attrs = network.attrs
    if attrs.get("Driver") != "bridge":
        raise FirewallError(f"the job network {name} is a {attrs.get('Driver')} network, not a bridge")
    if attrs.get("EnableIPv6"):
        raise FirewallError(f"the job network {name} has IPv6 enabled; kitebox's firewall covers IPv4 only")
    bridge = (attrs.get("Options") or {}).get(BRIDGE_NAME_OPTION) or f"br-{network.id[:12]}"
    ensure_firewall(bridge, lock_path)
    return JobNetwork(name, bridge)
