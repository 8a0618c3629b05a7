"""What the ops commands share: which SSM node, an SSM client, AWS errors in one line, atomic files.

A node is one namespace under the base path (`global`, a repo slug or a pipeline slug), named
the way the decision core names it (core/names.py), so what an operator writes is exactly what
a job reads.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions

from kitebox.adapters.aws import client_config, describe_error, new_client
from kitebox.core.names import DEFAULT_BASE_PATH, GLOBAL, Kind, check_base_path, check_pipeline_slug
from kitebox.core.slug import repo_slug
from kitebox.errors import AwsError, BadInputError, ConfigError

# An operator's command may wait a little longer than a job's fetch, but not forever.
MAX_ATTEMPTS, TIMEOUT_SECONDS = 3, 10.0
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]+$")
# Codes SSM and Secrets Manager answer with when the caller may not use a parameter or its key.
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidKeyId",
                     "DecryptionFailure", "DecryptionFailureException"})
_CREDENTIALS = frozenset({"UnrecognizedClientException", "InvalidClientTokenId", "InvalidSignatureException",
                          "ExpiredTokenException", "SignatureDoesNotMatch"})


@dataclass(frozen=True)
class Node:
    """One namespace under the base path, e.g. `/vendors/buildkite/github.com_a_b.git`."""

    kind: Kind
    slug: str
    path: str

    def child(self, relative: str) -> str:
        return f"{self.path}/{relative}"

    def describe(self) -> str:
        return f"{self.kind.value} node {self.path}"


def add_base_path(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-path", metavar="PATH",
        help=f"SSM base path of the stack/queue (default: $KITEBOX_BASE_PATH, else {DEFAULT_BASE_PATH})",
    )


def add_region(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: AWS_REGION / the AWS config)")


def add_node(parser: argparse.ArgumentParser, *, pipeline: bool = True) -> None:
    """--pipeline P | --repo URL | --global, exactly one."""
    group = parser.add_mutually_exclusive_group(required=True)
    if pipeline:
        group.add_argument("--pipeline", metavar="SLUG", help="the pipeline's namespace")
    group.add_argument("--repo", metavar="URL", help="the repository's namespace (its repo slug)")
    group.add_argument("--global", dest="is_global", action="store_true", help="the global namespace")


def base_path(args: argparse.Namespace) -> str:
    return check_base_path(getattr(args, "base_path", None) or os.environ.get("KITEBOX_BASE_PATH") or DEFAULT_BASE_PATH)


def node(args: argparse.Namespace) -> Node:
    base = base_path(args)
    if getattr(args, "is_global", False):
        return Node(Kind.GLOBAL, GLOBAL, f"{base}/{GLOBAL}")
    # The core's messages name the job variable the value usually comes from; here it is an option.
    if getattr(args, "repo", None):
        try:
            slug = repo_slug(args.repo)
        except BadInputError as error:
            raise BadInputError(str(error).replace("BUILDKITE_REPO", "--repo", 1)) from None
        return Node(Kind.REPO, slug, f"{base}/{slug}")
    try:
        slug = check_pipeline_slug(args.pipeline)
    except BadInputError as error:
        raise BadInputError(str(error).replace("BUILDKITE_PIPELINE_SLUG", "--pipeline", 1)) from None
    return Node(Kind.PIPELINE, slug, f"{base}/{slug}")


def check_region(region: str) -> str:
    if not _REGION.fullmatch(region):
        raise BadInputError(f"{region!r} is not an AWS region name (like eu-west-1)")
    return region


def client(service: str, region: str | None = None):
    """A botocore client with bounded retries; region from the argument, else the environment."""
    try:
        made = new_client(service, client_config(MAX_ATTEMPTS, TIMEOUT_SECONDS), region)
    except botocore.exceptions.BotoCoreError as error:
        raise AwsError(f"{service} client: {describe_error(error)}") from None
    return made


def aws_error(action: str, name: str, error: Exception, region: str | None) -> AwsError:
    """One line for a failed call on `name`; names the region, the rule of thumb, never a value."""
    where = f"{name} (region {region or 'unset'})"
    if isinstance(error, botocore.exceptions.ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", "Error"))
        message = " ".join(str(info.get("Message", "")).split())[:300]
        if code in ("ParameterNotFound", "ResourceNotFoundException"):
            return AwsError(
                f"{action} {where}: not found — check the name, and the region: a parameter lives in "
                f"one region, and the stack reads it in its own ({code})"
            )
        if code.startswith("KMS") or code in ("InvalidKeyId", "DecryptionFailure") or "kms" in message.lower():
            return AwsError(
                f"{action} {where}: KMS refused to decrypt it — grant kms:Decrypt on the parameter's key "
                f"to this role (the stack's ...ParameterStoreKMSKey) ({code}: {message})"
            )
        if code in _DENIED:
            return AwsError(f"{action} {where}: access denied — check this role's grants ({code}: {message})")
        if code in _CREDENTIALS:
            return AwsError(f"{action} {where}: the AWS credentials were refused ({code})")
        return AwsError(f"{action} {where}: {code}: {message}")
    return AwsError(f"{action} {where}: {describe_error(error)}")


def region_of(made_client) -> str | None:
    return made_client.meta.region_name


# -- files -------------------------------------------------------------------------------------

def atomic_write(path: Path, data: bytes, mode: int) -> bool:
    """Replace `path` with `data` (temp file in the same directory, fsync, rename); True if changed.

    Keeps the existing file's owner (the agent reads its config as its own user), and leaves the
    old file untouched on any failure. An unchanged file with the right mode is not rewritten, so
    running a bootstrap twice changes nothing.
    """
    path = Path(os.path.realpath(path))
    try:
        before = path.stat()
        unchanged = path.read_bytes() == data and stat.S_IMODE(before.st_mode) == mode
    except FileNotFoundError:
        before, unchanged = None, False
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    if unchanged:
        return False
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".kitebox-tmp")
    except OSError as error:
        raise ConfigError(f"cannot write in {path.parent}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # before any byte is written
            if before is not None and (before.st_uid, before.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(handle.fileno(), before.st_uid, before.st_gid)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError as error:
        _unlink(temp)
        raise ConfigError(f"cannot write {path}: {error.strerror} (the previous file is unchanged)") from None
    except BaseException:
        _unlink(temp)
        raise
    _fsync_dir(path.parent)
    return True


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
