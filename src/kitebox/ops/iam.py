"""`kitebox iam-policy`: the least-privilege instance policy of one stack, and its deploy roles' trust.

Instance policy (what the Elastic CI Stack's `ManagedPolicyARNs` gets, seed 000's per-queue
managed policy, tightened):
  - ssm:GetParametersByPath/GetParameter/GetParameters on `<base>/*` only — not on other
    stacks' base paths, and no ssm:DescribeParameters account-wide;
  - kms:Decrypt on the stack's key, and only when SSM asks on its behalf (`kms:ViaService`), so
    a job that somehow held the instance role could not decrypt with the key directly;
  - secretsmanager:GetSecretValue on `secret:<prefix>*` only: the secrets references may name
    (core/references.py and KITEBOX_SECRETS_MANAGER_PREFIX);
  - sts:AssumeRole, sts:TagSession, sts:SetSourceIdentity on the roles its pipelines may take
    (the proxy names the session, tags it and sets the build creator as SourceIdentity);
  - optionally logs:CreateLogStream/PutLogEvents on the audit log group.

Trust policy of a deploy role (seed 000's AssumeRolePolicyDocument): only this stack's instance
role may assume it, and only with a SourceIdentity, i.e. through kitebox, which always sets the
build's creator; a session without one (someone using the bare instance role) is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from kitebox.core.names import check_base_path
from kitebox.core.roles import role_name
from kitebox.errors import BadInputError
from kitebox.ops import cfnyaml, common

VERSION = "2012-10-17"
DEFAULT_SECRETS_PREFIX = "buildkite/"
JOB_ROLE_ACTIONS = ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]
_KMS_KEY_ARN = re.compile(r"^arn:(?P<partition>aws[a-z-]*):kms:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):key/[A-Za-z0-9-]{1,100}$")
_ACCOUNT = re.compile(r"^[0-9]{12}$")
_PREFIX = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,256}$")
_LOG_GROUP = re.compile(r"^[A-Za-z0-9_./#-]{1,512}$")
_PLACEHOLDER = "${"


def register(commands) -> None:
    parser = commands.add_parser(
        "iam-policy",
        help="print the least-privilege instance policy of a stack, or a deploy role's trust policy",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--base-path", metavar="PATH", help="the stack's SSM base path")
    parser.add_argument("--kms-key-arn", metavar="ARN", help="the key its SecureStrings are encrypted with")
    parser.add_argument("--role-arn", action="append", default=[], metavar="ARN",
                        help="a role the stack's pipelines may take (repeat)")
    parser.add_argument("--secrets-prefix", metavar="PREFIX",
                        help="Secrets Manager names references may use (default: $KITEBOX_SECRETS_MANAGER_PREFIX, "
                             f"else {DEFAULT_SECRETS_PREFIX})")
    parser.add_argument("--log-group", metavar="NAME", help="CloudWatch Logs group of the audit sink")
    parser.add_argument("--trust-policy", action="store_true",
                        help="print the trust policy of a deploy role instead (needs --stack-role-arn)")
    parser.add_argument("--stack-role-arn", metavar="ARN", help="the stack's instance role (with --trust-policy)")
    parser.add_argument("--format", choices=["json", "cloudformation"], default="json")
    parser.add_argument("--account", metavar="ID", help="account of the stack (JSON needs it; CloudFormation "
                                                           "uses ${AWS::AccountId} without it)")
    parser.add_argument("--region", help="region of the stack (JSON needs it; CloudFormation uses ${AWS::Region})")
    parser.set_defaults(run=run)


def _arn(partition: str, service: str, region: str, account: str, resource: str) -> str:
    return f"arn:{partition}:{service}:{region}:{account}:{resource}"


def instance_policy(*, base_path: str, kms_key_arn: str, role_arns: list[str], secrets_prefix: str,
                    region: str, account: str, log_group: str | None = None) -> dict:
    """The policy document; `region`/`account` may be ${AWS::Region}/${AWS::AccountId}."""
    base = check_base_path(base_path)
    key = _KMS_KEY_ARN.match(kms_key_arn)
    if not key:
        raise BadInputError(
            "--kms-key-arn must be a key ARN (arn:aws:kms:<region>:<account>:key/<id>); IAM matches "
            "kms:Decrypt against the key's ARN, never an alias"
        )
    if not _PREFIX.fullmatch(secrets_prefix):
        raise BadInputError("--secrets-prefix must be a non-empty Secrets Manager name prefix (an empty one "
                            "would grant every secret the account holds)")
    for arn in role_arns:
        if role_name(arn) is None:
            raise BadInputError(f"--role-arn {arn!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)")
    partition = key["partition"]
    statements = [
        {
            "Sid": "KiteboxReadItsBasePath",
            "Effect": "Allow",
            "Action": ["ssm:GetParametersByPath", "ssm:GetParameter", "ssm:GetParameters"],
            "Resource": [_arn(partition, "ssm", region, account, f"parameter{base}/*")],
        },
        {
            "Sid": "KiteboxDecryptThroughSsmOnly",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": [kms_key_arn],
            "Condition": {"StringEquals": {"kms:ViaService": [f"ssm.{region}.amazonaws.com"]}},
        },
        {
            "Sid": "KiteboxReadReferencedSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": [_arn(partition, "secretsmanager", region, account, f"secret:{secrets_prefix}*")],
        },
    ]
    if role_arns:
        statements.append({
            "Sid": "KiteboxTakeJobRoles",
            "Effect": "Allow",
            "Action": list(JOB_ROLE_ACTIONS),
            "Resource": list(dict.fromkeys(role_arns)),
        })
    if log_group:
        if not _LOG_GROUP.fullmatch(log_group):
            raise BadInputError(f"--log-group {log_group!r} is not a CloudWatch Logs group name")
        statements.append({
            "Sid": "KiteboxAuditToCloudWatch",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [_arn(partition, "logs", region, account, f"log-group:{log_group}:*")],
        })
    return {"Version": VERSION, "Statement": statements}


def trust_policy(stack_role_arn: str) -> dict:
    """A deploy role's AssumeRolePolicyDocument: this stack's role, through kitebox, only."""
    if role_name(stack_role_arn) is None:
        raise BadInputError(f"--stack-role-arn {stack_role_arn!r} is not an IAM role ARN")
    return {
        "Version": VERSION,
        "Statement": [{
            "Sid": "OnlyTheKiteboxStackWithSourceIdentity",
            "Effect": "Allow",
            "Principal": {"AWS": stack_role_arn},
            "Action": list(JOB_ROLE_ACTIONS),
            # Null false = "the key is present": kitebox always sets the build creator.
            "Condition": {"Null": {"sts:SourceIdentity": "false"}},
        }],
    }


def _substituted(value: object) -> object:
    """Strings holding ${AWS::...} become !Sub for CloudFormation."""
    if isinstance(value, dict):
        return {k: _substituted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v) for v in value]
    if isinstance(value, str) and _PLACEHOLDER in value:
        return cfnyaml.Sub(value)
    return value


def instance_template(policy: dict, base_path: str) -> dict:
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"kitebox instance policy for the stack reading {base_path}",
        "Resources": {
            "KiteboxInstancePolicy": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {"Description": f"kitebox: {base_path} only", "PolicyDocument": _substituted(policy)},
            }
        },
        "Outputs": {
            "ManagedPolicyArn": {
                "Description": "pass to the Elastic CI Stack's ManagedPolicyARNs parameter",
                "Value": cfnyaml.Ref("KiteboxInstancePolicy"),
            }
        },
    }


def _refuse_mixed(args: argparse.Namespace) -> None:
    if args.trust_policy:
        extra = [flag for flag, value in (("--base-path", args.base_path), ("--kms-key-arn", args.kms_key_arn),
                                          ("--role-arn", args.role_arn), ("--log-group", args.log_group),
                                          ("--secrets-prefix", args.secrets_prefix)) if value]
        if extra:
            raise BadInputError(f"--trust-policy prints a deploy role's trust policy: {', '.join(extra)} "
                                "belong to the instance policy (run it without --trust-policy)")
        if not args.stack_role_arn:
            raise BadInputError("--trust-policy needs --stack-role-arn (the stack's instance role)")
    else:
        if args.stack_role_arn:
            raise BadInputError("--stack-role-arn goes with --trust-policy")
        missing = [flag for flag, value in (("--base-path", args.base_path), ("--kms-key-arn", args.kms_key_arn))
                   if not value]
        if missing:
            raise BadInputError(f"the instance policy needs {' and '.join(missing)}")


def run(args: argparse.Namespace) -> int:
    _refuse_mixed(args)
    if args.trust_policy:
        document = trust_policy(args.stack_role_arn)
        if args.format == "json":
            print(json.dumps(document, indent=2))
        else:
            print(cfnyaml.dump({"AssumeRolePolicyDocument": document},
                                   "Paste under the deploy role's Properties (AWS::IAM::Role)."), end="")
        return 0
    if args.account and not _ACCOUNT.fullmatch(args.account):
        raise BadInputError(f"--account {args.account!r} is not a 12-digit account id")
    region = common.check_region(args.region) if args.region else "${AWS::Region}"
    account = args.account or "${AWS::AccountId}"
    if args.format == "json" and _PLACEHOLDER in region + account:
        raise BadInputError("JSON needs --account and --region (the CloudFormation form can use "
                            "${AWS::AccountId} and ${AWS::Region} instead)")
    prefix = args.secrets_prefix or os.environ.get("KITEBOX_SECRETS_MANAGER_PREFIX") or DEFAULT_SECRETS_PREFIX
    policy = instance_policy(base_path=args.base_path, kms_key_arn=args.kms_key_arn, role_arns=args.role_arn,
                             secrets_prefix=prefix, region=region, account=account, log_group=args.log_group)
    if args.format == "json":
        print(json.dumps(policy, indent=2))
    else:
        print(cfnyaml.dump(instance_template(policy, check_base_path(args.base_path)),
                               "kitebox instance policy: deploy, then pass the ManagedPolicyArn output to the\n"
                               "Elastic CI Stack's ManagedPolicyARNs parameter."), end="")
    return 0
