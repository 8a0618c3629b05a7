"""The `kitebox` command: parse arguments, run one command, turn a KiteboxError into one line."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback

from kitebox import __version__
from kitebox.errors import EXIT_ERROR, KiteboxError
from kitebox.settings import Settings, aws_environment, job_variables


def _load_settings() -> tuple[Settings, dict[str, str]]:
    """Settings from the agent's environment; strip job-set AWS_* from our own process first."""
    job_vars = job_variables(os.environ)
    settings = Settings.from_environ(os.environ, frozenset(job_vars))
    clean = aws_environment(os.environ, job_vars)
    for name in list(os.environ):
        if name not in clean:
            del os.environ[name]
    os.environ.update(clean)
    return settings, job_vars


def _aws(settings: Settings):
    from kitebox.adapters.aws import SecretsManagerResolver, SsmStore

    store = SsmStore.create(settings.ssm_max_attempts, settings.ssm_timeout_seconds)
    return store, lambda: SecretsManagerResolver.create(settings.ssm_max_attempts, settings.ssm_timeout_seconds)


def cmd_slug(args: argparse.Namespace) -> int:
    from kitebox.core.slug import repo_slug

    print(repo_slug(args.url))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from kitebox.core import explain
    from kitebox.core.identity import JobIdentity
    from kitebox.evaluate import evaluate

    settings, job_vars = _load_settings()
    # The role a step asks for is the author's (a job variable), or set by hand when explaining.
    requested = job_vars.get("KITEBOX_ROLE", os.environ.get("KITEBOX_ROLE", ""))
    store, _resolver = _aws(settings)
    decision = evaluate(JobIdentity.from_environ(os.environ), settings, store)
    if args.json:
        print(json.dumps(explain.as_json(decision, requested), indent=2, ensure_ascii=False))
    else:
        sys.stdout.write(explain.as_text(decision, requested))
    return 0 if decision.allowed else 1


def cmd_hook(args: argparse.Namespace) -> int:
    from kitebox import hook

    if args.phase == "environment":
        settings, _ = _load_settings()
        store, make_resolver = _aws(settings)
        sys.stdout.write(hook.environment(os.environ, settings, store, make_resolver))
    elif args.phase == "pre-checkout":
        sys.stdout.write(hook.pre_checkout(os.environ))
    elif args.phase == "post-checkout":
        settings, _ = _load_settings()
        sys.stdout.write(hook.post_checkout(os.environ, settings))
    else:
        sys.stdout.write(hook.pre_exit(os.environ))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from kitebox.demo.run import main as demo_main

    return demo_main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kitebox", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kitebox {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    slug = commands.add_parser("slug", help="print the repo slug of a repository URL")
    slug.add_argument("url")
    slug.set_defaults(run=cmd_slug)

    explain = commands.add_parser("explain", help="what would happen to the job in this environment")
    explain.add_argument("--json", action="store_true", help="one JSON object instead of text")
    explain.set_defaults(run=cmd_explain)

    hook = commands.add_parser("hook", help="agent hook mode: print shell for the hook to eval")
    hook.add_argument("phase", choices=["environment", "pre-checkout", "post-checkout", "pre-exit"])
    hook.set_defaults(run=cmd_hook)

    demo = commands.add_parser("demo", help="run a sample job on a local moto-backed AWS")
    demo.set_defaults(run=cmd_demo)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(commands)
    return parser


# Commands that live in their own modules; each module has `register(commands)` adding its
# subparsers. One line per module, so several can be added without touching each other.
COMMAND_MODULES: tuple[str, ...] = (
    "kitebox.box.command",
    "kitebox.proxy.command",
    "kitebox.ops.agent_token",
    "kitebox.ops.keys",
    "kitebox.ops.secrets",
    "kitebox.ops.acl",
    "kitebox.ops.iam",
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KiteboxError as error:
        print(f"kitebox: {error}", file=sys.stderr)
        if os.environ.get("KITEBOX_DEBUG"):
            traceback.print_exc()
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: still one line first, the traceback only on request
        print(f"kitebox: internal error: {type(error).__name__} (set KITEBOX_DEBUG=1 for details)", file=sys.stderr)
        if os.environ.get("KITEBOX_DEBUG"):
            traceback.print_exc()
        return EXIT_ERROR
