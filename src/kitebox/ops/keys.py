"""`kitebox keys create|rotate|show`: deploy keys kept as SecureStrings at `<node>/ssh/key`.

Seed 000's "automation pipeline" as a command: one Ed25519 key per repository (or one global key
for plugin checkouts), the private half written straight into SSM, the public half and its
fingerprint printed for the git host. The private key never reaches stdout, a file or argv.
"""

from __future__ import annotations

import argparse

from typing import TYPE_CHECKING

import botocore.exceptions

from kitebox.core.secret import Secret
from kitebox.errors import BadInputError, ConfigError
from kitebox.ops import common

if TYPE_CHECKING:
    from kitebox.keys import KeyPair


# cryptography is imported where a key is made or read, so that every other kitebox command
# runs where it is not installed (the proxy's image built offline: Dockerfile).
def _crypto():
    """kitebox.keys (which needs cryptography), or a one-line error where it is not installed."""
    try:
        from cryptography.hazmat.primitives import serialization

        import kitebox.keys
    except ImportError:
        raise ConfigError("kitebox keys needs the cryptography package (pip install cryptography)") from None
    return kitebox.keys, serialization


def register(commands) -> None:
    keys = commands.add_parser("keys", help="deploy keys: create, rotate, show (private key only in SSM)")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = sub.add_parser("create", help="generate an Ed25519 deploy key and store it; print the public key")
    _common_arguments(create)
    create.add_argument("--force", action="store_true", help="replace an existing key (prefer `keys rotate`)")
    create.set_defaults(run=cmd_create)

    rotate = sub.add_parser("rotate", help="replace an existing key with a new one; print the new public key")
    _common_arguments(rotate)
    rotate.set_defaults(run=cmd_rotate)

    show = sub.add_parser("show", help="the public key and fingerprint of the stored key")
    common.add_node(show)
    common.add_base_path(show)
    common.add_region(show)
    show.set_defaults(run=cmd_show)


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_node(parser)
    common.add_base_path(parser)
    common.add_region(parser)
    parser.add_argument("--kms-key-id", metavar="KEY", help="KMS key for the SecureString (default: aws/ssm)")


def _put(ssm, name: str, key: KeyPair, kms_key_id: str | None, overwrite: bool) -> None:
    kwargs = {"Name": name, "Value": key.private.reveal(), "Type": "SecureString", "Overwrite": overwrite,
              "Description": f"kitebox deploy key {key.fingerprint}"}
    if kms_key_id:
        kwargs["KeyId"] = kms_key_id
    ssm.put_parameter(**kwargs)


def _stored(ssm, name: str, region: str | None) -> Secret | None:
    try:
        answer = ssm.get_parameter(Name=name, WithDecryption=True)
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ParameterNotFound":
            return None
        raise common.aws_error("reading the deploy key", name, error, region) from None
    except botocore.exceptions.BotoCoreError as error:
        raise common.aws_error("reading the deploy key", name, error, region) from None
    return Secret(answer["Parameter"]["Value"])


def public_of(private: Secret, name: str) -> KeyPair:
    """The KeyPair (public half + fingerprint) of a stored OpenSSH private key."""
    keys, serialization = _crypto()
    try:
        key = serialization.load_ssh_private_key(private.reveal().encode(), password=None)
    except (ValueError, TypeError, NotImplementedError):
        raise BadInputError(f"{name} does not hold an unencrypted OpenSSH private key") from None
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return keys.KeyPair(private, public.decode())


def _print_public(key: KeyPair, name: str) -> None:
    print(key.public)
    print(f"fingerprint {key.fingerprint}  (private key: {name})")


def cmd_create(args: argparse.Namespace) -> int:
    generate_ed25519 = _crypto()[0].generate_ed25519
    target = common.node(args)
    name = target.child("ssh/key")
    ssm = common.client("ssm", args.region and common.check_region(args.region))
    key = generate_ed25519(f"kitebox:{target.slug}")
    try:
        _put(ssm, name, key, args.kms_key_id, overwrite=args.force)
    except botocore.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ParameterAlreadyExists":
            raise BadInputError(
                f"{name} already holds a deploy key; `kitebox keys rotate` replaces it "
                "(or `keys create --force`), `kitebox keys show` prints its public key"
            ) from None
        raise common.aws_error("storing the deploy key", name, error, common.region_of(ssm)) from None
    except botocore.exceptions.BotoCoreError as error:
        raise common.aws_error("storing the deploy key", name, error, common.region_of(ssm)) from None
    _print_public(key, name)
    print("add it as a read-only deploy key on the git host" if target.slug != "global" else
          "add it as a deploy key to every plugin repository the queue checks out")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    generate_ed25519 = _crypto()[0].generate_ed25519
    target = common.node(args)
    name = target.child("ssh/key")
    ssm = common.client("ssm", args.region and common.check_region(args.region))
    region = common.region_of(ssm)
    old = _stored(ssm, name, region)
    if old is None:
        raise BadInputError(f"{name} holds no deploy key to rotate; `kitebox keys create` makes one")
    try:
        old_fingerprint = public_of(old, name).fingerprint
    except BadInputError:
        old_fingerprint = "unreadable"
    key = generate_ed25519(f"kitebox:{target.slug}")
    try:
        _put(ssm, name, key, args.kms_key_id, overwrite=True)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise common.aws_error("storing the new deploy key", name, error, region) from None
    _print_public(key, name)
    print(f"replace the old key ({old_fingerprint}) with this one on the git host: "
          "jobs use the new key from now on, so the old one no longer works for them")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    target = common.node(args)
    name = target.child("ssh/key")
    ssm = common.client("ssm", args.region and common.check_region(args.region))
    private = _stored(ssm, name, common.region_of(ssm))
    if private is None:
        raise BadInputError(f"{name} holds no deploy key; `kitebox keys create` makes one")
    _print_public(public_of(private, name), name)
    return 0
