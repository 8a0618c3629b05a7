"""The iptables rules that send a job network's metadata traffic to the proxy, and nowhere else.

For a job network (bridge interface, subnet, gateway) and the proxy's two ports on the gateway:

  nat    PREROUTING -i <bridge> -j KBX-<bridge>
         KBX-<bridge>:  -s <subnet> -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT → <gw>:<imds port>
                        -s <subnet> -d 169.254.170.2/32   -p tcp --dport 80 -j DNAT → <gw>:<ecs port>
  filter INPUT and FORWARD (first) -j KBXF-<bridge>
         KBXF-<bridge>: -i <bridge> -d 169.254.169.254/32 -j REJECT    anything not redirected
                        -i <bridge> -d 169.254.170.2/32   -j REJECT    (other ports, UDP, ...)
                        ! -i <bridge> -d <gw>/32 -p tcp --dports <proxy ports> -j REJECT
                                                              only the job network reaches the proxy

So a job reaches the proxy on port 80 of those two addresses and gets a refusal for anything else
there: never the real IMDS (ECScape, 2025). Own chains make `install` idempotent (flush and
refill) and `remove` complete. Every call goes through `run()`, which logs the argv.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass

IMDS_ADDRESS = "169.254.169.254"
ECS_ADDRESS = "169.254.170.2"
log = logging.getLogger("kitebox.proxy.rules")


class RulesError(Exception):
    """iptables refused a rule; the message carries its stderr."""


@dataclass(frozen=True)
class Redirect:
    bridge: str
    subnet: str
    gateway: str
    imds_port: int
    ecs_port: int

    @property
    def nat_chain(self) -> str:
        return f"KBX-{self.bridge}"[:28]

    @property
    def filter_chain(self) -> str:
        return f"KBXF-{self.bridge}"[:28]

    def nat_rules(self) -> list[list[str]]:
        return [
            ["-s", self.subnet, "-d", f"{IMDS_ADDRESS}/32", "-p", "tcp", "--dport", "80",
             "-j", "DNAT", "--to-destination", f"{self.gateway}:{self.imds_port}"],
            ["-s", self.subnet, "-d", f"{ECS_ADDRESS}/32", "-p", "tcp", "--dport", "80",
             "-j", "DNAT", "--to-destination", f"{self.gateway}:{self.ecs_port}"],
        ]

    def filter_rules(self) -> list[list[str]]:
        return [
            ["-i", self.bridge, "-d", f"{IMDS_ADDRESS}/32", "-j", "REJECT"],
            ["-i", self.bridge, "-d", f"{ECS_ADDRESS}/32", "-j", "REJECT"],
            ["!", "-i", self.bridge, "-d", f"{self.gateway}/32", "-p", "tcp", "-m", "multiport",
             "--dports", f"{self.imds_port},{self.ecs_port}", "-j", "REJECT", "--reject-with", "tcp-reset"],
        ]

    def jumps(self) -> list[tuple[str, str, list[str]]]:
        """(table, built-in chain, rule) for every jump into our chains."""
        return [
            ("nat", "PREROUTING", ["-i", self.bridge, "-j", self.nat_chain]),
            ("filter", "INPUT", ["-j", self.filter_chain]),
            ("filter", "FORWARD", ["-j", self.filter_chain]),
        ]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    argv = ["iptables", "-w", "5", *args]
    log.debug("run %s", " ".join(argv))
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise RulesError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result


def install(redirect: Redirect) -> None:
    """Create or refresh the rules; safe to call again (same result, no duplicates)."""
    for table, chain, rules in (("nat", redirect.nat_chain, redirect.nat_rules()),
                                ("filter", redirect.filter_chain, redirect.filter_rules())):
        run("-t", table, "-N", chain, check=False)  # exists already: fine
        run("-t", table, "-F", chain)
        for rule in rules:
            run("-t", table, "-A", chain, *rule)
    for table, chain, rule in redirect.jumps():
        if run("-t", table, "-C", chain, *rule, check=False).returncode != 0:
            run("-t", table, "-I", chain, "1", *rule)


def remove(redirect: Redirect) -> None:
    """Remove every jump and both chains; no error if they are already gone."""
    for table, chain, rule in redirect.jumps():
        for _ in range(16):  # duplicates from a crashed older version, if any
            if run("-t", table, "-D", chain, *rule, check=False).returncode != 0:
                break
    for table, chain in (("nat", redirect.nat_chain), ("filter", redirect.filter_chain)):
        run("-t", table, "-F", chain, check=False)
        run("-t", table, "-X", chain, check=False)


def installed(redirect: Redirect) -> bool:
    """Are all rules and jumps in place? (tests assert this before any job container starts)"""
    checks = [("nat", redirect.nat_chain, r) for r in redirect.nat_rules()]
    checks += [("filter", redirect.filter_chain, r) for r in redirect.filter_rules()]
    checks += redirect.jumps()
    return all(run("-t", t, "-C", c, *r, check=False).returncode == 0 for t, c, r in checks)
