"""`kitebox agent-token`: the agent token from SSM into the agent config, never shown anywhere.

The Elastic CI Stack reads `BuildkiteAgentTokenParameterStorePath` once at boot with
`ssm get-parameter --with-decryption`; the path may be a parameter, a cross-account parameter ARN
(shared through RAM: the ARN is the only name that reaches it, and only in its own region), or
`/aws/reference/secretsmanager/<secret-id>`, which Parameter Store resolves from Secrets Manager
itself (buildkite-contract.md, seed 003). kitebox does the same GetParameter call for all three;
moto implements the Secrets Manager reference too, so tests exercise the real path.

The token goes from the API answer into a Secret and from there only into the config file, which
is written atomically with mode 0600 and the previous owner: a failure at any step leaves the
previous config as it was.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import botocore.exceptions

from kitebox.core.secret import Secret
from kitebox.errors import BadInputError, ConfigError
from kitebox.ops import common

DEFAULT_CONFIG = "/etc/buildkite-agent/buildkite-agent.cfg"
SECRETS_MANAGER_REFERENCE = "/aws/reference/secretsmanager/"
_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):ssm:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):parameter/(?P<name>.+)$")
_NAME = re.compile(r"^[A-Za-z0-9/_.+=@-]{1,2048}$")
# The agent's config parser takes `key="value"`; a token holds none of these.
_TOKEN = re.compile(r'^[!#-\[\]-~]{8,1024}$')  # printable ASCII without space, '"' and '\'
_TOKEN_LINE = re.compile(r"^\s*token\s*=")


def register(commands) -> None:
    parser = commands.add_parser(
        "agent-token",
        help="write the agent token from SSM into the agent config (0600); never prints it",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--parameter", required=True, metavar="PATH|ARN",
                        help="SSM parameter path, parameter ARN, or /aws/reference/secretsmanager/<id>")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help=f"agent config file (default {DEFAULT_CONFIG})")
    common.add_region(parser)
    parser.set_defaults(run=run)


def parameter_region(parameter: str, region: str | None) -> str | None:
    """The region to ask in: a parameter ARN names its own; --region must not contradict it."""
    match = _ARN.match(parameter)
    if match:
        if region and region != match["region"]:
            raise BadInputError(
                f"the parameter ARN is in region {match['region']} but --region says {region}: "
                "a parameter can only be read in its own region"
            )
        return common.check_region(match["region"])
    if not _NAME.fullmatch(parameter) or "//" in parameter:
        raise BadInputError(
            f"{parameter!r} is not an SSM parameter path, a parameter ARN, or "
            f"{SECRETS_MANAGER_REFERENCE}<secret-id>"
        )
    if parameter.startswith(SECRETS_MANAGER_REFERENCE) and len(parameter) == len(SECRETS_MANAGER_REFERENCE):
        raise BadInputError(f"{SECRETS_MANAGER_REFERENCE} needs a secret id after it")
    return common.check_region(region) if region else None


def read_token(parameter: str, region: str | None) -> Secret:
    ssm = common.client("ssm", parameter_region(parameter, region))
    try:
        answer = ssm.get_parameter(Name=parameter, WithDecryption=True)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise common.aws_error("reading the agent token", parameter, error, common.region_of(ssm)) from None
    token = Secret(answer.get("Parameter", {}).get("Value", "").strip())
    del answer
    if not _TOKEN.fullmatch(token.reveal()):
        raise BadInputError(
            f"{parameter} does not hold an agent token ({len(token)} characters; a token is 8 to 1024 "
            "printable characters without spaces, quotes or backslashes)"
        )
    return token


def with_token(config: str, token: Secret) -> str:
    """`config` with its `token=` line replaced (later duplicates dropped), or one appended."""
    line = f'token="{token.reveal()}"'
    out: list[str] = []
    placed = False
    for existing in config.splitlines():
        if _TOKEN_LINE.match(existing):
            if not placed:
                out.append(line)
                placed = True
            continue  # a second token= line would leave the agent reading the stale one
        out.append(existing)
    if not placed:
        out.append(line)
    return "\n".join(out) + "\n"


def write_token(config_path: Path, token: Secret) -> bool:
    try:
        current = config_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = ""
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the agent config {config_path}: {getattr(error, 'strerror', None) or error}") from None
    return common.atomic_write(config_path, with_token(current, token).encode("utf-8"), 0o600)


def run(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    if not config_path.parent.is_dir():
        raise ConfigError(f"the agent config's directory {config_path.parent} does not exist")
    token = read_token(args.parameter, args.region)
    changed = write_token(config_path, token)
    state = "written to" if changed else "already in"
    print(f"agent token from {args.parameter} {state} {config_path} (mode 0600)")
    return 0
