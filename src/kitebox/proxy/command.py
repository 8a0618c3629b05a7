"""`kitebox proxy serve`: run the metadata proxy until SIGTERM (systemd: bootstrap/kitebox-proxy.service)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from datetime import datetime, timezone
from pathlib import Path


def register(commands) -> None:
    proxy = commands.add_parser("proxy", help="the per-job AWS credentials proxy for job containers")
    actions = proxy.add_subparsers(dest="proxy_command", required=True, metavar="ACTION")
    serve = actions.add_parser("serve", help="answer IMDS and container-endpoint requests from the job network")
    serve.add_argument("--network", default=os.environ.get("KITEBOX_NETWORK", "kitebox-jobs"),
                       help="the job network (default $KITEBOX_NETWORK or kitebox-jobs)")
    serve.add_argument("--create-network", action="store_true",
                       help="create the job network (and box mode's metadata firewall) if missing, as "
                            "`kitebox job` would: the proxy starts before the first job")
    serve.add_argument("--imds-port", type=int, default=8769)
    serve.add_argument("--ecs-port", type=int, default=8770)
    serve.add_argument("--state-dir", type=Path, default=Path("/run/kitebox/proxy"),
                       help="root-only state and admin socket (default /run/kitebox/proxy, on tmpfs)")
    serve.add_argument("--admin", default="127.0.0.1:9750", help="health and metrics address (never the job network)")
    serve.add_argument("--upstream", default="http://169.254.169.254",
                       help="IMDS for the allowlisted paths; 'none' answers them 404")
    serve.add_argument("--region", default=os.environ.get("KITEBOX_AWS_REGION", ""),
                       help="region to answer and to call STS in (default $KITEBOX_AWS_REGION, else "
                            "IMDS region paths are forwarded upstream)")
    serve.add_argument("--availability-zone", default="")
    serve.add_argument("--allow-imdsv1", action="store_true", help="answer token-less IMDS GETs (default: refuse)")
    serve.add_argument("--duration", type=int, default=3600, help="STS DurationSeconds (2700..role maximum)")
    serve.add_argument("--web-identity-dir", type=Path, default=None,
                       help="AssumeRoleWithWebIdentity with <dir>/<job id>.jwt (Buildkite OIDC tokens)")
    serve.add_argument("--server", choices=["asyncio", "threading"], default="asyncio")
    serve.add_argument("--audit", default="stderr", help="stderr, off, or a JSON-lines file")
    serve.add_argument("--no-rules", action="store_true", help="do not install the iptables redirect (tests)")
    serve.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from kitebox.adapters.audit import write_audit
    from kitebox.errors import ConfigError
    from kitebox.proxy.credentials import BotoSts
    from kitebox.proxy.daemon import Proxy, ProxyConfig

    host, _, port = args.admin.rpartition(":")
    if not (port.isascii() and port.isdigit()):
        raise ConfigError(f"--admin {args.admin!r} is not host:port")
    config = ProxyConfig(
        job_network=args.network, imds_port=args.imds_port, ecs_port=args.ecs_port, state_dir=args.state_dir,
        admin_host=host, admin_port=int(port), upstream=None if args.upstream == "none" else args.upstream,
        region=args.region, availability_zone=args.availability_zone, allow_imdsv1=args.allow_imdsv1,
        duration=args.duration, server=args.server, install_rules=not args.no_rules,
    )

    def audit(record: dict) -> None:
        write_audit({"time": datetime.now(timezone.utc).isoformat(), **record}, args.audit)

    if args.create_network:
        _create_network(args.network)
    try:
        sts = BotoSts.create(web_identity_dir=args.web_identity_dir, region=args.region or None)
        proxy = Proxy(config, sts, audit)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    proxy.start()
    try:
        stop.wait()
    finally:
        proxy.stop()
    return 0


def _create_network(name: str) -> None:
    """The job network exactly as box mode creates it (same options, labels, firewall, lock)."""
    import docker

    from kitebox.box.config import DEFAULT_RUN_DIR, _flag
    from kitebox.box.network import ensure_network

    internal = _flag(os.environ.get("KITEBOX_NETWORK_INTERNAL", "false"))
    run_dir = Path(os.environ.get("KITEBOX_RUN_DIR", DEFAULT_RUN_DIR))
    client = docker.from_env(timeout=30)
    try:
        ensure_network(client, name, internal, run_dir / "network.lock")
    finally:
        client.close()
