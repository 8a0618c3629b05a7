"""bootstrap/install.sh against a temporary root: box and hook mode, idempotent (a second run
leaves every byte and mode as it was), and a failing step leaves the agent config intact.

Contract (buildkite-contract.md, Elastic CI Stack): BootstrapScriptUrl runs as root after
buildkite-agent.cfg is written and before the agent starts; hooks-path=/etc/buildkite-agent/hooks;
/var/lib/buildkite-agent/cfn-env is sourced by the environment hook.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.docker_engine import REPO_ROOT, in_ci

SCRIPT = REPO_ROOT / "bootstrap" / "install.sh"
KITEBOX = Path(sys.executable).with_name("kitebox")
CFG = "etc/buildkite-agent/buildkite-agent.cfg"
ELASTIC_CFG = 'name="%hostname-%spawn"\ntoken="old-agent-token"\ntags="queue=infra"\nhooks-path="/etc/buildkite-agent/hooks"\n'
ELASTIC_HOOK = "#!/bin/bash\nset -eu\nsource /var/lib/buildkite-agent/cfn-env\n"
PHASES = ("environment", "pre-checkout", "post-checkout", "pre-exit")


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: type, mode and content (or link target)."""
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                seen[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                seen[str(path.relative_to(root))] = ("dir", stat.S_IMODE(info.st_mode))
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                seen[str(path.relative_to(root))] = ("file", stat.S_IMODE(info.st_mode), digest)
    return seen


class Host:
    """A temporary root shaped like an Elastic CI Stack instance at BootstrapScriptUrl time, plus
    fake python/pip/systemctl that log their calls outside the root."""

    def __init__(self, tmp: Path):
        self.root = tmp / "root"
        self.tools = tmp / "tools"
        self.calls = tmp / "calls.log"
        self.wheel = tmp / "kitebox-0.1.0-py3-none-any.whl"
        self.wheel.write_bytes(b"pretend wheel")
        (self.root / "etc/buildkite-agent/hooks").mkdir(parents=True)
        (self.root / "var/lib/buildkite-agent").mkdir(parents=True)
        self.cfg.write_text(ELASTIC_CFG)
        self.cfg.chmod(0o644)
        (self.root / "etc/buildkite-agent/hooks/environment").write_text(ELASTIC_HOOK)
        (self.root / "var/lib/buildkite-agent/cfn-env").write_text("export BUILDKITE_STACK_NAME=infra\n")
        self.tools.mkdir()
        venv_bin = self.root / "opt/kitebox/venv/bin"
        self._tool("python", f'echo "python $*" >>{self.calls}\nmkdir -p "$3/bin"\n'
                             'printf "#!/bin/sh\\n" >"$3/bin/python"\nchmod 755 "$3/bin/python"\n')
        self._tool("pip", f'echo "pip $*" >>{self.calls}\n'
                          f'printf \'#!/bin/sh\\nexec {KITEBOX} "$@"\\n\' >{venv_bin}/kitebox\nchmod 755 {venv_bin}/kitebox\n')
        self._tool("systemctl", f'echo "systemctl $*" >>{self.calls}\n')
        self.proxy_unit = tmp / "kitebox-proxy.service"
        self.proxy_unit.write_text("[Service]\nExecStart=/opt/kitebox/venv/bin/kitebox proxy serve\n")

    def _tool(self, name: str, body: str) -> None:
        path = self.tools / name
        path.write_text("#!/bin/sh\nset -e\n" + body)
        path.chmod(0o755)

    @property
    def cfg(self) -> Path:
        return self.root / CFG

    def read(self, relative: str) -> str:
        return (self.root / relative).read_text()

    def logged(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []

    def install(self, **env: str) -> subprocess.CompletedProcess:
        base = {
            "KITEBOX_ROOT": str(self.root), "PYTHON": str(self.tools / "python"), "PIP": str(self.tools / "pip"),
            "SYSTEMCTL": str(self.tools / "systemctl"), "KITEBOX_INSTALL_WHEEL": str(self.wheel),
            "KITEBOX_INSTALL_PROXY_UNIT": str(self.proxy_unit), "KITEBOX_IMAGE": "kitebox/job:test",
            "KITEBOX_BASE_PATH": "/vendors/buildkite/infra",
        }
        merged = {**os.environ, **base, **env}
        merged = {k: v for k, v in merged.items() if v is not None and v != "<unset>"}
        return subprocess.run(["bash", str(SCRIPT)], env=merged, capture_output=True, text=True, timeout=120)


@pytest.fixture
def host(tmp_path) -> Host:
    return Host(tmp_path)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr
    return done


class TestBoxMode:
    """bootstrap-script → `kitebox job`, the agent's unit loads kitebox.env, the proxy unit runs."""

    def test_first_run(self, host):
        ok(host.install(KITEBOX_AUDIT="cloudwatch:kitebox-audit"))
        cfg = host.read(CFG)
        assert cfg == ELASTIC_CFG + 'bootstrap-script="sudo -n /opt/kitebox/venv/bin/kitebox job"\n'
        assert host.read("etc/kitebox/kitebox.env").splitlines()[2:] == [
            'KITEBOX_AUDIT="cloudwatch:kitebox-audit"', 'KITEBOX_BASE_PATH="/vendors/buildkite/infra"',
            'KITEBOX_IMAGE="kitebox/job:test"']
        sudoers = host.read("etc/sudoers.d/kitebox")
        assert 'env_reset, env_keep = "BUILDKITE_* KITEBOX_*' in sudoers
        assert "buildkite-agent ALL=(root) NOPASSWD: /opt/kitebox/venv/bin/kitebox job\n" in sudoers
        assert (host.root / "etc/sudoers.d/kitebox").stat().st_mode & 0o777 == 0o440
        if shutil.which("visudo"):
            assert subprocess.run(["visudo", "-cf", str(host.root / "etc/sudoers.d/kitebox")],
                                  capture_output=True).returncode == 0
        assert host.read("etc/systemd/system/buildkite-agent.service.d/kitebox.conf") == \
            "[Service]\nEnvironmentFile=/etc/kitebox/kitebox.env\n"
        assert host.read("etc/systemd/system/kitebox-proxy.service") == host.proxy_unit.read_text()
        assert os.readlink(host.root / "usr/local/bin/kitebox") == "/opt/kitebox/venv/bin/kitebox"
        assert host.read("etc/buildkite-agent/hooks/environment") == ELASTIC_HOOK
        assert host.logged() == [
            f"python -m venv {host.root}/opt/kitebox/venv",
            f"pip install --disable-pip-version-check --no-input {host.wheel}",
            "systemctl daemon-reload",
            "systemctl enable --now kitebox-proxy.service",
        ]

    def test_second_run_changes_nothing(self, host):
        ok(host.install())
        before = snapshot(host.root)
        done = ok(host.install())
        assert snapshot(host.root) == before
        assert "0 change(s)" in done.stderr
        assert [c for c in host.logged() if c.startswith(("pip", "python", "systemctl daemon"))] == [
            f"python -m venv {host.root}/opt/kitebox/venv",
            f"pip install --disable-pip-version-check --no-input {host.wheel}",
            "systemctl daemon-reload",
        ]

    def test_existing_bootstrap_script_is_replaced(self, host):
        host.cfg.write_text(ELASTIC_CFG + "bootstrap-script=/usr/local/bin/old\n  bootstrap-script = /x\n")
        ok(host.install())
        assert host.read(CFG) == ELASTIC_CFG + 'bootstrap-script="sudo -n /opt/kitebox/venv/bin/kitebox job"\n'

    def test_new_wheel_is_installed(self, host):
        ok(host.install())
        host.wheel.write_bytes(b"a newer wheel")
        ok(host.install())
        assert sum(c.startswith("pip install") for c in host.logged()) == 2

    def test_pinned_version_and_pip_args(self, host):
        ok(host.install(KITEBOX_INSTALL_WHEEL="", KITEBOX_INSTALL_VERSION="0.1.0",
                        KITEBOX_INSTALL_PIP_ARGS="--no-index --find-links /srv/wheels"))
        assert ("pip install --disable-pip-version-check --no-input --no-index --find-links /srv/wheels "
                "kitebox==0.1.0") in host.logged()
        assert host.read("opt/kitebox/installed") == "version 0.1.0\n"

    def test_without_proxy_unit(self, host):
        done = ok(host.install(KITEBOX_INSTALL_PROXY_UNIT=str(host.root / "nowhere")))
        assert "no proxy unit" in done.stderr
        assert not (host.root / "etc/systemd/system/kitebox-proxy.service").exists()
        assert "systemctl enable --now kitebox-proxy.service" not in host.logged()

    def test_systemctl_is_never_run_in_a_root_by_default(self, host):
        ok(host.install(SYSTEMCTL="<unset>"))
        assert not any(c.startswith("systemctl") for c in host.logged())


class TestHookMode:
    """The shims (identical to hooks/) sourced from the agent's hooks; cfn-env loads kitebox.env."""

    def test_first_run(self, host):
        ok(host.install(KITEBOX_INSTALL_MODE="hook", KITEBOX_IMAGE="<unset>"))
        assert host.read(CFG) == ELASTIC_CFG
        for phase in PHASES:
            assert host.read(f"opt/kitebox/hooks/{phase}") == (REPO_ROOT / "hooks" / phase).read_text()
            hook = host.read(f"etc/buildkite-agent/hooks/{phase}")
            assert f"\nsource /opt/kitebox/hooks/{phase}\n" in hook
        assert host.read("etc/buildkite-agent/hooks/environment").startswith(ELASTIC_HOOK)
        assert host.read("etc/buildkite-agent/hooks/pre-exit").startswith("#!/usr/bin/env bash\n")
        assert stat.S_IMODE((host.root / "etc/buildkite-agent/hooks/pre-exit").stat().st_mode) == 0o755
        cfn_env = host.read("var/lib/buildkite-agent/cfn-env")
        assert cfn_env.startswith("export BUILDKITE_STACK_NAME=infra\n")
        assert "if [ -r /etc/kitebox/kitebox.env ]; then set -a; . /etc/kitebox/kitebox.env; set +a; fi" in cfn_env
        assert not (host.root / "etc/systemd/system/buildkite-agent.service.d/kitebox.conf").exists()

    def test_second_run_changes_nothing(self, host):
        ok(host.install(KITEBOX_INSTALL_MODE="hook"))
        before = snapshot(host.root)
        ok(host.install(KITEBOX_INSTALL_MODE="hook"))
        assert snapshot(host.root) == before

    def test_env_file_reads_back_in_the_shell(self, host):
        ok(host.install(KITEBOX_INSTALL_MODE="hook", KITEBOX_INNER_BOOTSTRAP="buildkite-agent bootstrap"))
        env_file = host.root / "etc/kitebox/kitebox.env"
        out = subprocess.run(["bash", "-c", f'set -a; . "{env_file}"; set +a; printf "%s|%s" '
                              '"$KITEBOX_BASE_PATH" "$KITEBOX_INNER_BOOTSTRAP"'],
                             capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
        assert out == "/vendors/buildkite/infra|buildkite-agent bootstrap"

    def test_switching_modes_cleans_up(self, host):
        ok(host.install())
        ok(host.install(KITEBOX_INSTALL_MODE="hook"))
        assert "bootstrap-script" not in host.read(CFG)
        assert not (host.root / "etc/systemd/system/buildkite-agent.service.d/kitebox.conf").exists()
        ok(host.install())
        assert host.read("etc/buildkite-agent/hooks/environment") == ELASTIC_HOOK
        assert "kitebox" not in host.read("var/lib/buildkite-agent/cfn-env")
        assert "kitebox job" in host.read(CFG)


class TestAgentToken:
    """The token step runs the installed `kitebox agent-token` against the (moto) SSM."""

    def test_token_written_and_rerun_stable(self, aws, host):
        aws.client("ssm").put_parameter(Name="/buildkite/token", Value="bkua_new-agent-token-value", Type="SecureString")
        done = ok(host.install(KITEBOX_INSTALL_TOKEN_PARAMETER="/buildkite/token"))
        cfg = host.read(CFG)
        assert 'token="bkua_new-agent-token-value"' in cfg and "old-agent-token" not in cfg
        assert stat.S_IMODE(host.cfg.stat().st_mode) == 0o600
        assert "bkua_new-agent-token-value" not in done.stdout + done.stderr
        before = snapshot(host.root)
        ok(host.install(KITEBOX_INSTALL_TOKEN_PARAMETER="/buildkite/token"))
        assert snapshot(host.root) == before

    def test_failing_token_step_leaves_the_config(self, aws, host):
        ok(host.install())
        before = host.read(CFG)
        done = host.install(KITEBOX_INSTALL_TOKEN_PARAMETER="/buildkite/missing")
        assert done.returncode != 0 and "not found" in done.stderr
        assert host.read(CFG) == before
        assert not [p for p in host.cfg.parent.iterdir() if p.name.startswith(".")]


class TestRefusals:
    """Bad settings are refused before anything is written; a failing install writes nothing."""

    @pytest.mark.parametrize(
        ("env", "message"),
        [
            ({"KITEBOX_INSTALL_WHEEL": ""}, "KITEBOX_INSTALL_WHEEL"),
            ({"KITEBOX_INSTALL_VERSION": "1.0"}, "not both"),
            ({"KITEBOX_INSTALL_WHEEL": "/no/such.whl"}, "is not a file"),
            ({"KITEBOX_INSTALL_WHEEL": "", "KITEBOX_INSTALL_VERSION": "1.0; rm -rf /"}, "not a version"),
            ({"KITEBOX_INSTALL_MODE": "both"}, "box or hook"),
            ({"KITEBOX_IMAGE": "<unset>"}, "KITEBOX_IMAGE"),
            ({"KITEBOX_BASE_PATH": "/x$(id)"}, "KITEBOX_BASE_PATH holds"),
            ({"KITEBOX_AUDIT": 'a"b'}, "KITEBOX_AUDIT holds"),
        ],
        ids=["no-package", "both", "missing-wheel", "bad-version", "bad-mode", "box-without-image", "dollar", "quote"],
    )
    def test_refused_before_writing(self, host, env, message):
        before = snapshot(host.root)
        done = host.install(**env)
        assert done.returncode != 0 and message in done.stderr
        assert snapshot(host.root) == before and host.logged() == []

    def test_failing_pip_leaves_the_config(self, host):
        done = host.install(PIP="false")
        assert done.returncode != 0
        assert host.read(CFG) == ELASTIC_CFG
        assert not (host.root / "etc/kitebox/kitebox.env").exists()


def test_shellcheck_clean():
    """install.sh passes shellcheck (what .ci/run installs)."""
    if shutil.which("shellcheck") is None:
        if in_ci():
            pytest.fail("CI=true but shellcheck is not installed")
        pytest.skip("shellcheck not installed")
    done = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
