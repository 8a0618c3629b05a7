"""`kitebox secrets set|ls|rm`: the `env/<name>` secrets of a node, values from stdin or a file only.

There is no way to give a value on the command line (argv is world-readable in /proc and lands in
shell history), and a terminal is refused as stdin (what is typed there is echoed and kept in the
scrollback): pipe the value in, or name a file. One trailing newline is dropped, because
`echo value |` and editors add one; `--keep-newline` keeps it.

Names follow the core's rules exactly (core/names.env_var_name): a name a job would refuse cannot
be set. Two parameters of one node that make the same variable (`fav-lesson`, `FAV_LESSON`) are
ambiguous, so a second one is refused.
"""

from __future__ import annotations

import argparse
import os
import sys

import botocore.exceptions

from kitebox.core.names import env_var_name
from kitebox.core.references import parse_reference, reference_allowed
from kitebox.core.secret import Secret
from kitebox.errors import BadInputError, KiteboxError
from kitebox.ops import common

# SSM's advanced tier holds 8 KB; larger secrets belong in Secrets Manager, behind a reference.
MAX_VALUE_BYTES = 8192
DEFAULT_SECRETS_MANAGER_PREFIX = "buildkite/"


def register(commands) -> None:
    secrets = commands.add_parser("secrets", help="env/<name> secrets: set (stdin or file only), ls, rm")
    sub = secrets.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")

    put = sub.add_parser("set", help="store a secret read from stdin (until EOF) or --from-file")
    put.add_argument("name", metavar="NAME", help="parameter name under env/, e.g. fav-lesson → FAV_LESSON")
    _node_arguments(put)
    put.add_argument("--from-file", metavar="FILE", help="read the value from FILE instead of stdin")
    put.add_argument("--keep-newline", action="store_true", help="keep one trailing newline of the value")
    put.add_argument("--kms-key-id", metavar="KEY", help="KMS key for the SecureString (default: aws/ssm)")
    put.add_argument("--force", action="store_true", help="replace an existing value")
    put.set_defaults(run=cmd_set)

    listing = sub.add_parser("ls", help="names, variables, types and dates of a node's secrets (no values)")
    _node_arguments(listing)
    listing.set_defaults(run=cmd_ls)

    remove = sub.add_parser("rm", help="delete secrets (needs --force)")
    remove.add_argument("names", nargs="+", metavar="NAME")
    _node_arguments(remove)
    remove.add_argument("--force", action="store_true", help="really delete")
    remove.set_defaults(run=cmd_rm)


def _node_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_node(parser)
    common.add_base_path(parser)
    common.add_region(parser)


def _ssm(args: argparse.Namespace):
    return common.client("ssm", args.region and common.check_region(args.region))


def read_value(from_file: str | None, keep_newline: bool, stdin=None) -> Secret:
    """The value from FILE or from stdin until EOF; refuse a terminal, empty, NUL, too long."""
    if from_file:
        try:
            with open(from_file, "rb") as handle:
                raw = handle.read(MAX_VALUE_BYTES + 3)
        except OSError as error:
            raise BadInputError(f"cannot read --from-file {from_file}: {error.strerror}") from None
        source = from_file
    else:
        stdin = stdin if stdin is not None else sys.stdin
        if stdin is None or stdin.isatty():
            raise BadInputError(
                "the value is read from stdin, and stdin is a terminal: pipe it in "
                "(`... | kitebox secrets set NAME ...`) or use --from-file"
            )
        raw = stdin.buffer.read(MAX_VALUE_BYTES + 3)
        source = "stdin"
    if not keep_newline:
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
    if not raw:
        raise BadInputError(f"the value from {source} is empty; `kitebox secrets rm` removes a secret")
    if len(raw) > MAX_VALUE_BYTES:
        raise BadInputError(
            f"the value from {source} is over {MAX_VALUE_BYTES} bytes (SSM's limit): store it in Secrets "
            "Manager and set {{resolve:secretsmanager:<id>}} as the value instead"
        )
    if b"\0" in raw:
        raise BadInputError(f"the value from {source} holds a NUL byte, which no variable can")
    try:
        return Secret(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadInputError(f"the value from {source} is not UTF-8 text (SSM stores text)") from None


def check_reference(value: Secret, prefix: str) -> None:
    """A Secrets Manager reference must parse and point inside the prefix jobs may resolve."""
    try:
        ref = parse_reference(value.reveal())
    except ValueError as error:
        raise BadInputError(f"the value looks like a Secrets Manager reference but is not one: {error}") from None
    if ref is not None and not reference_allowed(ref, prefix):
        raise BadInputError(
            f"the reference points at secret {ref.secret_name!r}, outside KITEBOX_SECRETS_MANAGER_PREFIX "
            f"{prefix!r}: jobs would refuse it"
        )


def env_parameters(ssm, path: str, region: str | None) -> list[dict]:
    """DescribeParameters under `path` (recursively): names, types, dates — never values."""
    found: list[dict] = []
    kwargs = {"ParameterFilters": [{"Key": "Path", "Option": "Recursive", "Values": [path]}], "MaxResults": 50}
    try:
        while True:
            page = ssm.describe_parameters(**kwargs)
            found.extend(page.get("Parameters", ()))
            if not page.get("NextToken"):
                return sorted(found, key=lambda p: p["Name"])
            kwargs["NextToken"] = page["NextToken"]
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise common.aws_error("listing", path, error, region) from None


def _variable(node, name: str) -> str:
    try:
        return env_var_name(name[len(node.path) + 1:])
    except KiteboxError as error:
        return f"(refused by jobs: {error})"


def cmd_set(args: argparse.Namespace) -> int:
    target = common.node(args)
    variable = env_var_name(f"env/{args.name}")
    name = target.child(f"env/{args.name}")
    value = read_value(args.from_file, args.keep_newline)
    check_reference(value, os.environ.get("KITEBOX_SECRETS_MANAGER_PREFIX", DEFAULT_SECRETS_MANAGER_PREFIX))
    ssm = _ssm(args)
    region = common.region_of(ssm)
    for existing in env_parameters(ssm, target.child("env"), region):
        if existing["Name"] != name and _variable(target, existing["Name"]) == variable:
            raise BadInputError(
                f"{existing['Name']} already makes variable {variable} at this node: two parameters for one "
                "variable are ambiguous; set that one (or remove it first)"
            )
    kwargs = {"Name": name, "Value": value.reveal(), "Type": "SecureString", "Overwrite": args.force,
              "Tier": "Intelligent-Tiering"}
    if args.kms_key_id:
        kwargs["KeyId"] = args.kms_key_id
    try:
        ssm.put_parameter(**kwargs)
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ParameterAlreadyExists":
            raise BadInputError(f"{name} already has a value; --force replaces it") from None
        raise common.aws_error("storing", name, error, region) from None
    except botocore.exceptions.BotoCoreError as error:
        raise common.aws_error("storing", name, error, region) from None
    print(f"{name} set: jobs of the {target.describe()} get {variable}")
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    target = common.node(args)
    ssm = _ssm(args)
    rows = [
        (_variable(target, p["Name"]), p["Name"], p.get("Type", "?"),
         p["LastModifiedDate"].isoformat(timespec="seconds") if p.get("LastModifiedDate") else "-")
        for p in env_parameters(ssm, target.child("env"), common.region_of(ssm))
    ]
    if not rows:
        print(f"no secrets at {target.describe()}")
        return 0
    header = ("VARIABLE", "PARAMETER", "TYPE", "LAST MODIFIED")
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(3)]
    for row in (header, *rows):
        print("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    target = common.node(args)
    names = list(dict.fromkeys(target.child(f"env/{n}") for n in args.names))
    ssm = _ssm(args)
    region = common.region_of(ssm)
    present = {p["Name"] for p in env_parameters(ssm, target.child("env"), region)}
    missing = [n for n in names if n not in present]
    if missing:
        raise BadInputError(f"no such secret: {', '.join(missing)} (nothing deleted)")
    if not args.force:
        raise BadInputError(f"would delete {', '.join(names)}: re-run with --force to delete")
    for start in range(0, len(names), 10):  # DeleteParameters takes at most 10 names
        batch = names[start:start + 10]
        try:
            ssm.delete_parameters(Names=batch)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise common.aws_error("deleting", ", ".join(batch), error, region) from None
    for name in names:
        print(f"deleted {name}")
    return 0
