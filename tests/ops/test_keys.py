"""`kitebox keys`: Ed25519 deploy keys at `<node>/ssh/key` (seed 000's automation pipeline).

The private half only ever goes to SSM as a SecureString; stdout holds the public key and its
fingerprint, as `ssh-keygen -l` would print it.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

from tests.ops.conftest import BASE

REPO = "git@github.com:acme/app.git"
REPO_KEY = f"{BASE}/github.com_acme_app.git/ssh/key"


def fingerprint(public: str) -> str:
    blob = base64.b64decode(public.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def stored(aws, name=REPO_KEY) -> dict:
    return aws.client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]


class TestCreate:
    """create: a new key at the repo, pipeline or global node; refuses to overwrite without --force."""

    @pytest.mark.parametrize(
        ("args", "name"),
        [(["--repo", REPO], REPO_KEY), (["--global"], f"{BASE}/global/ssh/key"),
         (["--pipeline", "app"], f"{BASE}/app/ssh/key")],
        ids=["repo", "global", "pipeline"],
    )
    def test_creates_and_prints_public_key(self, aws, cli, args, name):
        run = cli("keys", "create", *args)
        assert run.code == 0, run.err
        public = run.out.splitlines()[0]
        assert public.startswith("ssh-ed25519 AAAA")
        assert f"fingerprint {fingerprint(public)}" in run.out
        parameter = stored(aws, name)
        assert parameter["Type"] == "SecureString"
        private = serialization.load_ssh_private_key(parameter["Value"].encode(), None)
        derived = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        assert public.split()[:2] == derived.decode().split()[:2]
        assert parameter["Value"] not in run.text and "PRIVATE KEY" not in run.text

    def test_refuses_to_overwrite(self, aws, cli):
        assert cli("keys", "create", "--repo", REPO).code == 0
        before = stored(aws)["Value"]
        run = cli("keys", "create", "--repo", REPO)
        assert run.code == 95 and "already holds a deploy key" in run.err and "keys rotate" in run.err
        assert stored(aws)["Value"] == before

    def test_force_overwrites(self, aws, cli):
        assert cli("keys", "create", "--repo", REPO).code == 0
        before = stored(aws)["Value"]
        assert cli("keys", "create", "--repo", REPO, "--force").code == 0
        assert stored(aws)["Value"] != before

    def test_kms_key_id(self, aws, cli):
        key_id = aws.client("kms").create_key()["KeyMetadata"]["KeyId"]
        assert cli("keys", "create", "--repo", REPO, "--kms-key-id", key_id).code == 0
        described = aws.client("ssm").describe_parameters(
            ParameterFilters=[{"Key": "Name", "Values": [REPO_KEY]}])["Parameters"][0]
        assert key_id in described["KeyId"]

    @pytest.mark.parametrize(
        ("args", "message"),
        [(["--repo", "https://github.com/../x"], "--repo"), (["--pipeline", "global"], "reserved"),
         (["--pipeline", "Bad Slug"], "--pipeline")],
        ids=["repo-escape", "reserved-pipeline", "bad-pipeline"],
    )
    def test_bad_node(self, aws, cli, args, message):
        run = cli("keys", "create", *args)
        assert run.code == 95 and message in run.err

    def test_node_is_required_and_exclusive(self, aws, cli):
        assert cli("keys", "create").code == 2
        assert cli("keys", "create", "--global", "--repo", REPO).code == 2


class TestRotateAndShow:
    """rotate replaces an existing key and names the old fingerprint; show derives the public key."""

    def test_rotate(self, aws, cli):
        first = cli("keys", "create", "--repo", REPO).out.splitlines()[0]
        run = cli("keys", "rotate", "--repo", REPO)
        assert run.code == 0, run.err
        new = run.out.splitlines()[0]
        assert new != first and fingerprint(first) in run.out and "replace the old key" in run.out
        assert cli("keys", "show", "--repo", REPO).out.split()[:2] == new.split()[:2]

    def test_rotate_without_a_key(self, aws, cli):
        run = cli("keys", "rotate", "--repo", REPO)
        assert run.code == 95 and "keys create" in run.err

    def test_show(self, aws, cli):
        created = cli("keys", "create", "--global")
        shown = cli("keys", "show", "--global")
        assert shown.code == 0
        assert shown.out.split()[:2] == created.out.split()[:2]
        assert f"fingerprint {fingerprint(created.out.splitlines()[0])}" in shown.out

    def test_show_missing(self, aws, cli):
        run = cli("keys", "show", "--global")
        assert run.code == 95 and "holds no deploy key" in run.err

    def test_show_not_a_key(self, aws, cli):
        aws.client("ssm").put_parameter(Name=f"{BASE}/global/ssh/key", Value="not-a-key-value", Type="SecureString")
        run = cli("keys", "show", "--global")
        assert run.code == 95 and "OpenSSH private key" in run.err and "not-a-key-value" not in run.text

    @pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen not installed")
    def test_fingerprint_matches_ssh_keygen(self, aws, cli, tmp_path):
        """The printed fingerprint is the one the git host shows (ssh-keygen -l of the public key)."""
        run = cli("keys", "create", "--global")
        public = tmp_path / "key.pub"
        public.write_text(run.out.splitlines()[0] + "\n")
        listed = subprocess.run(["ssh-keygen", "-l", "-f", str(public)], capture_output=True, text=True, check=True)
        assert listed.stdout.split()[1] in run.out


def test_without_cryptography(aws, cli, monkeypatch):
    """Where cryptography is missing (an offline-built proxy image) keys fails in one line and the
    rest of kitebox still loads."""
    import sys

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives", None)
    monkeypatch.delitem(sys.modules, "kitebox.keys", raising=False)
    run = cli("keys", "create", "--global")
    assert run.code == 95 and "needs the cryptography package" in run.err
    assert aws.client("ssm").describe_parameters()["Parameters"] == []
