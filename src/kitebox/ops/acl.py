"""`kitebox acl set|show|rm`: the rules a node holds, written exactly as the decision core reads them.

    allowed_pipelines  any node       pipeline slugs
    allowed_teams      any node       team slugs (creator ∪ unblocker teams must meet them)
    allowed_roles      any node       IAM role ARNs a job may take through the metadata proxy
    repository         pipeline node  the one repository the pipeline may build (one URL)
    allowed_branches   pipeline node  glob patterns (`main`, `release/*`)

Rules are not secrets: their values are arguments and are printed back. Each is a String
parameter, one entry per line (the seed's format; core/checks.list_entries also reads a
StringList). Replacing a rule that exists needs --force; --append adds to it instead.
"""

from __future__ import annotations

import argparse
import re

import botocore.exceptions

from kitebox.core.checks import list_entries
from kitebox.core.names import Kind, check_pipeline_slug
from kitebox.core.roles import role_name
from kitebox.core.slug import parse_repo
from kitebox.errors import BadInputError
from kitebox.ops import common

ANY_NODE = ("allowed_pipelines", "allowed_teams", "allowed_roles")
PIPELINE_ONLY = ("repository", "allowed_branches")
RULES = ANY_NODE + PIPELINE_ONLY
_TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,99}$")
_BRANCH = re.compile(r"^[^\s\x00-\x1f\x7f]{1,255}$")
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^/@]*)@")


def register(commands) -> None:
    acl = commands.add_parser("acl", help="access rules: allowed_pipelines/teams/roles, repository, allowed_branches")
    sub = acl.add_subparsers(dest="acl_command", required=True, metavar="ACTION")

    put = sub.add_parser("set", help="write a rule (replacing one needs --force; --append adds)")
    put.add_argument("rule", choices=RULES)
    put.add_argument("values", nargs="+", metavar="VALUE")
    _node_arguments(put)
    how = put.add_mutually_exclusive_group()
    how.add_argument("--force", action="store_true", help="replace the rule if it exists")
    how.add_argument("--append", action="store_true", help="add the values to the rule if it exists")
    put.set_defaults(run=cmd_set)

    show = sub.add_parser("show", help="the rules a node holds")
    _node_arguments(show)
    show.set_defaults(run=cmd_show)

    remove = sub.add_parser("rm", help="delete a rule (needs --force)")
    remove.add_argument("rule", choices=RULES)
    _node_arguments(remove)
    remove.add_argument("--force", action="store_true", help="really delete")
    remove.set_defaults(run=cmd_rm)


def _node_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_node(parser)
    common.add_base_path(parser)
    common.add_region(parser)


def validate(rule: str, values: list[str], kind: Kind) -> list[str]:
    """The entries to store, each checked the way the core will read it; BadInputError if not."""
    if rule in PIPELINE_ONLY and kind is not Kind.PIPELINE:
        raise BadInputError(f"{rule} is admission for one pipeline: use --pipeline (it is only read there)")
    entries = [v.strip() for v in values]
    if any(not e for e in entries):
        raise BadInputError(f"{rule}: an empty value")
    if rule == "allowed_pipelines":
        for entry in entries:
            try:
                check_pipeline_slug(entry)
            except BadInputError:
                raise BadInputError(f"allowed_pipelines: {entry!r} is not a pipeline slug "
                                    "(lower-case letters, digits, '-', '_'; not 'global')") from None
    elif rule == "allowed_teams":
        for entry in entries:
            if not _TEAM.fullmatch(entry):
                raise BadInputError(f"allowed_teams: {entry!r} is not a team slug (lower-case letters, digits, '-', '_')")
    elif rule == "allowed_roles":
        for entry in entries:
            if role_name(entry) is None:
                raise BadInputError(f"allowed_roles: {entry!r} is not an IAM role ARN "
                                    "(arn:aws:iam::<account>:role/<name>)")
    elif rule == "repository":
        if len(entries) != 1:
            raise BadInputError("repository: exactly one repository URL (a pipeline builds one repository)")
        entries = [_without_credentials(entries[0])]
    elif rule == "allowed_branches":
        for entry in entries:
            if not _BRANCH.fullmatch(entry):
                raise BadInputError(f"allowed_branches: {entry!r} is not a branch pattern (no spaces or control characters)")
    return list(dict.fromkeys(entries))


def _without_credentials(url: str) -> str:
    """The URL, checked as the core parses it, with any user:password@ removed (never stored)."""
    try:
        parse_repo(url)
    except BadInputError as error:
        raise BadInputError(str(error).replace("BUILDKITE_REPO", "repository", 1)) from None
    match = _USERINFO.match(url)
    if match and (":" in match["user"] or match["scheme"].lower() in ("http", "https")):
        url = f"{match['scheme']}://{url[match.end():]}"
    return url


def _current(ssm, names: list[str], region: str | None) -> dict[str, dict]:
    try:
        answer = ssm.get_parameters(Names=names, WithDecryption=True)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise common.aws_error("reading", ", ".join(names), error, region) from None
    return {p["Name"]: p for p in answer.get("Parameters", ())}


def cmd_set(args: argparse.Namespace) -> int:
    target = common.node(args)
    entries = validate(args.rule, args.values, target.kind)
    name = target.child(args.rule)
    ssm = common.client("ssm", args.region and common.check_region(args.region))
    region = common.region_of(ssm)
    existing = _current(ssm, [name], region).get(name)
    if existing is not None:
        if args.append:
            if args.rule == "repository":
                raise BadInputError("repository holds one URL: --append cannot add a second; --force replaces it")
            entries = list(dict.fromkeys([*list_entries(existing["Value"], existing.get("Type", "String")), *entries]))
        elif not args.force:
            raise BadInputError(f"{name} already exists: --force replaces it, --append adds to it "
                                "(`kitebox acl show` prints it)")
    try:
        ssm.put_parameter(Name=name, Value="\n".join(entries), Type="String", Overwrite=existing is not None,
                          Tier="Intelligent-Tiering")
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise common.aws_error("writing", name, error, region) from None
    print(f"{name} = {', '.join(entries)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    target = common.node(args)
    ssm = common.client("ssm", args.region and common.check_region(args.region))
    rules = ANY_NODE + (PIPELINE_ONLY if target.kind is Kind.PIPELINE else ())
    found = _current(ssm, [target.child(r) for r in rules], common.region_of(ssm))
    if not found:
        print(f"{target.describe()}: no rules (any pipeline and team may use it; no roles)")
        return 0
    print(f"{target.describe()}:")
    for rule in rules:
        parameter = found.get(target.child(rule))
        if parameter is None:
            continue
        entries = list_entries(parameter["Value"], parameter.get("Type", "String"))
        print(f"  {rule}  ({parameter['Name']})")
        for entry in entries:
            print(f"    {entry}")
        if not entries:
            print("    (empty: nothing is listed)")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    target = common.node(args)
    name = target.child(args.rule)
    ssm = common.client("ssm", args.region and common.check_region(args.region))
    region = common.region_of(ssm)
    if name not in _current(ssm, [name], region):
        raise BadInputError(f"{name} does not exist (nothing deleted)")
    if not args.force:
        raise BadInputError(f"would delete {name}: re-run with --force to delete")
    try:
        ssm.delete_parameter(Name=name)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise common.aws_error("deleting", name, error, region) from None
    print(f"deleted {name}")
    return 0
