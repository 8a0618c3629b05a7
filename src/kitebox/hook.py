"""Hook mode: the seed plugin's agent hooks, done right. Each prints shell for its hook to `eval`.

    environment    decide, export the secrets, start one ssh-agent per key; SSH_AUTH_SOCK → global key
    pre-checkout   SSH_AUTH_SOCK → the repo key's agent (the previous value kept aside)
    post-checkout  SSH_AUTH_SOCK back (or kept, KITEBOX_KEEP_REPO_KEY=true)
    pre-exit       kill every agent this job started, remove its socket directory

Hook order (buildkite-contract.md): environment → plugin checkout → pre-checkout → checkout →
post-checkout → … → pre-exit; hooks are sourced, so what they export carries into later phases.
Messages go to stderr; stdout is only for `eval`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Mapping

from kitebox.adapters.aws import ParameterStore, SecretResolver
from kitebox.adapters.sshagent import make_agent_dir, start_agents, stop_agents
from kitebox.core import shell
from kitebox.core.decision import Decision
from kitebox.core.identity import JobIdentity
from kitebox.errors import RefusedError
from kitebox.evaluate import audit, evaluate, resolve_values
from kitebox.settings import Settings

AGENT_DIR = "KITEBOX_AGENT_DIR"
REPO_SOCK = "KITEBOX_REPO_SSH_AUTH_SOCK"
GLOBAL_SOCK = "KITEBOX_GLOBAL_SSH_AUTH_SOCK"
SAVED_SOCK = "KITEBOX_SAVED_SSH_AUTH_SOCK"
NO_SOCK = "-"  # SAVED_SOCK's value when there was no SSH_AUTH_SOCK to restore


def refuse(decision: Decision) -> RefusedError:
    for check in decision.refusals:
        print(check.line(), file=sys.stderr)
    first = decision.refusals[0]
    return RefusedError(f"{len(decision.refusals)} rule(s) refused this job; first: {first.rule} at {first.node}",
                        decision.refusals)


def environment(
    environ: Mapping[str, str],
    settings: Settings,
    store: ParameterStore,
    make_resolver: Callable[[], SecretResolver],
) -> str:
    identity = JobIdentity.from_environ(environ)
    decision = evaluate(identity, settings, store)
    decision, values = resolve_values(decision, make_resolver)
    audit(decision, settings, "hook")
    if not decision.allowed:
        raise refuse(decision)
    out: dict[str, str] = {name: secret.reveal() for name, secret in values.items()}
    out["BUILDKITE_REDACTED_VARS"] = shell.append_redacted(environ.get("BUILDKITE_REDACTED_VARS", ""), values)
    if decision.keys:
        directory = make_agent_dir(identity.job_id)
        agents = start_agents(directory, {k.purpose: (k.key, k.parameter) for k in decision.keys})
        out[AGENT_DIR] = str(directory)
        for agent in agents:
            out[REPO_SOCK if agent.purpose == "repo" else GLOBAL_SOCK] = agent.socket
        global_agent = next((a for a in agents if a.purpose == "global"), None)
        if global_agent:
            # Plugins are checked out right after the environment hook, with the global key.
            out["SSH_AUTH_SOCK"] = global_agent.socket
    names = ", ".join(values) or "none"
    keys = ", ".join(k.purpose for k in decision.keys) or "none"
    print(f"kitebox: {len(values)} secret(s) [{names}]; deploy keys: {keys}", file=sys.stderr)
    return shell.exports(out)


def pre_checkout(environ: Mapping[str, str]) -> str:
    repo_sock = environ.get(REPO_SOCK)
    if not repo_sock:
        return ""  # no repo key: the checkout uses whatever agent the host gives it
    print("kitebox: using the repository's deploy key for checkout", file=sys.stderr)
    return shell.exports({SAVED_SOCK: environ.get("SSH_AUTH_SOCK") or NO_SOCK, "SSH_AUTH_SOCK": repo_sock})


def post_checkout(environ: Mapping[str, str], settings: Settings) -> str:
    if SAVED_SOCK not in environ or settings.keep_repo_key_after_checkout:
        return ""
    saved = environ[SAVED_SOCK]
    restore = shell.unsets(["SSH_AUTH_SOCK"]) if saved == NO_SOCK else shell.exports({"SSH_AUTH_SOCK": saved})
    return restore + shell.unsets([SAVED_SOCK])


def pre_exit(environ: Mapping[str, str]) -> str:
    directory = environ.get(AGENT_DIR)
    names = [AGENT_DIR, REPO_SOCK, GLOBAL_SOCK, SAVED_SOCK]
    if directory:
        killed = stop_agents(Path(directory))
        print(f"kitebox: stopped {killed} ssh-agent(s)", file=sys.stderr)
        if environ.get("SSH_AUTH_SOCK", "").startswith(directory.rstrip("/") + "/"):
            names.append("SSH_AUTH_SOCK")  # it pointed at an agent that no longer exists
    return shell.unsets(names)
