"""The `kitebox job` and `kitebox reap` subcommands, registered through cli._extra_commands().

Kept free of docker and boto3 imports: cli builds its parser for every command, hooks included.
"""

from __future__ import annotations

import argparse
import os

from kitebox.box.agents import SAFE_PATH


def cmd_job(args: argparse.Namespace) -> int:
    from kitebox.box import job
    from kitebox.cli import _aws, _load_settings

    settings, job_vars = _load_settings()
    if "PATH" in job_vars:
        # A job-set PATH must not choose which iptables or ssh-agent kitebox runs as root.
        os.environ["PATH"] = SAFE_PATH
    store, make_resolver = _aws(settings)
    return job.run(os.environ, settings, job_vars, store, make_resolver)


def cmd_reap(args: argparse.Namespace) -> int:
    from kitebox.box.config import DEFAULT_RUN_DIR
    from kitebox.box.container import docker_client
    from kitebox.box.reaper import reap

    client = docker_client(os.environ, {})
    try:
        reaped = reap(client, os.environ.get("KITEBOX_RUN_DIR", DEFAULT_RUN_DIR))
    finally:
        client.close()
    print(reaped.line())
    for name in (*reaped.containers, *reaped.agent_dirs):
        print(f"  {name}")
    return 0


def register(commands) -> None:
    job = commands.add_parser(
        "job", help="box mode: run this job's bootstrap in its own container (the agent's bootstrap-script)"
    )
    job.set_defaults(run=cmd_job)
    reap = commands.add_parser(
        "reap", help="remove job containers and ssh-agent dirs whose kitebox process is gone"
    )
    reap.set_defaults(run=cmd_reap)
