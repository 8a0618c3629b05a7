"""The container spec: what the container's config holds, and, above all, what it never holds."""

from __future__ import annotations

import pytest

from kitebox.box.config import BoxSettings
from kitebox.box.owner import Owner
from kitebox.box.spec import (
    AGENT_DEFAULT_REDACTED,
    BIN,
    LIB,
    SSH,
    HostPaths,
    container_name,
    container_spec,
    environment,
)
from kitebox.core.identity import JobIdentity
from kitebox.errors import BadInputError

ENVIRON = {
    "BUILDKITE_AGENT_ACCESS_TOKEN": "per-job-token",
    "BUILDKITE_AGENT_TOKEN": "registration-token",
    "BUILDKITE_AGENT_ENDPOINT": "https://agent.buildkite.com/v3",
    "BUILDKITE_BUILD_PATH": "/var/lib/buildkite-agent/builds",
    "BUILDKITE_HOOKS_PATH": "/etc/buildkite-agent/hooks",
    "BUILDKITE_REDACTED_VARS": "*_TOKEN",
    "BUILDKITE_ENV_FILE": "/tmp/job-env",
    "BUILDKITE_SOCKETS_PATH": "/var/lib/buildkite-agent/sockets",
    "AWS_ACCESS_KEY_ID": "host-credentials",
    "KITEBOX_BASE_PATH": "/vendors/buildkite",
    "HOME": "/root",
}
JOB_VARS = {
    "BUILDKITE_JOB_ID": "j-1",
    "BUILDKITE_COMMAND": "make test",
    "MY_SECRET": "a job variable of the same name",
    "BUILDKITE_BUILD_CHECKOUT_PATH": "/etc",
}
PATHS = HostPaths(
    build_path="/var/lib/buildkite-agent/builds",
    build_dir="/var/lib/buildkite-agent/builds/agent-1/acme/app",
    files_dir="/opt/kitebox/box/files",
    plugins_path="/var/lib/buildkite-agent/plugins",
    plugins_dir="/var/lib/buildkite-agent/plugins/agent-1/acme/app",
    hooks_dir="/etc/buildkite-agent/hooks",
    agent_dir="/run/kitebox/u2000/kitebox-j-1-abc",
    agent_binary="/usr/bin/buildkite-agent",
)


def env(**changes):
    arguments = dict(
        environ=ENVIRON, job_vars=JOB_VARS, secret_names=["MY_SECRET"], paths=PATHS,
        sockets={"repo": "repo.sock", "global": "global.sock"}, keep_repo_key=False, grace=9,
    )
    arguments.update(changes)
    return environment(**arguments)


class TestEnvironment:
    """The configured environment: job variables and agent variables, never a secret or token."""

    def test_no_token_no_host_setting(self):
        """Tokens, host paths, AWS credentials and kitebox settings stay on the host."""
        result = env()
        for name in ("BUILDKITE_AGENT_ACCESS_TOKEN", "BUILDKITE_AGENT_TOKEN", "BUILDKITE_ENV_FILE",
                     "BUILDKITE_SOCKETS_PATH", "BUILDKITE_HOOKS_PATH", "AWS_ACCESS_KEY_ID",
                     "KITEBOX_BASE_PATH", "HOME"):
            assert name not in result
        assert "per-job-token" not in repr(result) and "registration-token" not in repr(result)

    def test_a_secret_name_is_not_configured_at_all(self):
        """A job variable shadowed by a secret is dropped: the secret arrives over stdin instead."""
        assert "MY_SECRET" not in env()

    def test_redacted_vars_extended_with_secret_names(self):
        """BUILDKITE_REDACTED_VARS gains the secret names; the agent's defaults when it sent none."""
        assert env()["BUILDKITE_REDACTED_VARS"] == "*_TOKEN,MY_SECRET"
        without = {k: v for k, v in ENVIRON.items() if k != "BUILDKITE_REDACTED_VARS"}
        assert env(environ=without)["BUILDKITE_REDACTED_VARS"] == AGENT_DEFAULT_REDACTED + ",MY_SECRET"

    def test_paths_and_sockets_are_container_paths(self):
        """Sockets, agent binary and plugins are where the container has them; checkout is the mount."""
        result = env()
        assert result["KITEBOX_REPO_SSH_AUTH_SOCK"] == f"{SSH}/repo.sock"
        assert result["KITEBOX_GLOBAL_SSH_AUTH_SOCK"] == f"{SSH}/global.sock"
        assert result["BUILDKITE_BIN_PATH"] == BIN
        assert result["BUILDKITE_PLUGINS_PATH"] == "/var/lib/buildkite-agent/plugins"
        assert result["BUILDKITE_BUILD_CHECKOUT_PATH"] == PATHS.build_dir
        assert result["KITEBOX_OPERATOR_HOOKS_PATH"] == "/etc/buildkite-agent/hooks"
        assert result["KITEBOX_KEEP_REPO_KEY"] == "false"
        assert result["BUILDKITE_COMMAND"] == "make test"

    def test_no_keys_no_socket_variables(self):
        """Without deploy keys there is no socket variable for the shims to switch to."""
        result = env(sockets={})
        assert "KITEBOX_REPO_SSH_AUTH_SOCK" not in result and "KITEBOX_GLOBAL_SSH_AUTH_SOCK" not in result

    def test_inner_grace_fits_inside_kitebox_grace(self):
        """The inner bootstrap is told the time the container gets, less a second for itself."""
        result = env(grace=9)
        assert (result["BUILDKITE_CANCEL_GRACE_PERIOD"], result["BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS"]) == ("8", "7")

    def test_nul_in_a_job_variable_is_refused(self):
        """Docker cannot carry a NUL; the message names the variable only."""
        with pytest.raises(BadInputError, match="FOO"):
            env(job_vars={"FOO": "a\x00b"})


class TestContainerSpec:
    """Hardening and identity of the container, from the spec alone."""

    def spec(self, **box_changes):
        box = BoxSettings(image="queue:1", **box_changes)
        identity = JobIdentity(job_id="j/1 x", pipeline_slug="app")
        return container_spec(
            identity=identity, box=box, image="queue:1", env=env(), paths=PATHS,
            owner=Owner(42, "1234", "boot-1"), stop_signal="SIGTERM",
        )

    def test_hardening(self):
        """Non-root, every capability dropped, no-new-privileges, no Docker socket by default."""
        spec = self.spec()
        assert spec.user == "2000:2000"
        assert spec.cap_drop == ("ALL",) and spec.cap_add == ()
        assert spec.security_opt == ("no-new-privileges",)
        assert all(m.target != "/var/run/docker.sock" for m in spec.mounts)
        assert spec.nano_cpus is None and spec.mem_limit is None

    def test_limits_and_docker_socket(self):
        """CPU and memory limits; the socket only when HostPaths carries one, with its group."""
        spec = self.spec(cpus=1.5, memory="2g", cap_add=("CHOWN",))
        assert (spec.nano_cpus, spec.mem_limit, spec.cap_add) == (1_500_000_000, "2g", ("CHOWN",))

    def test_labels_name_and_command(self):
        """Labels carry job, pipeline and owner; the name is Docker-safe; the entry step wraps the bootstrap."""
        spec = self.spec()
        labels = dict(spec.labels)
        assert labels == {"kitebox.job": "j/1 x", "kitebox.pipeline": "app", "kitebox.pid": "42",
                          "kitebox.pid-start": "1234", "kitebox.boot-id": "boot-1"}
        assert spec.name == "kitebox-j-1-x"
        assert spec.command == ("/bin/bash", f"{LIB}/entry.sh", "buildkite-agent", "bootstrap")
        assert spec.working_dir == PATHS.build_path

    def test_mounts(self):
        """Only the build and plugin dirs are writable; everything of kitebox's is read-only."""
        mounts = {m.target: (m.source, m.read_only) for m in self.spec().mounts}
        assert mounts == {
            LIB: (PATHS.files_dir, True),
            PATHS.build_dir: (PATHS.build_dir, False),
            "/var/lib/buildkite-agent/plugins": (PATHS.plugins_dir, False),
            "/etc/buildkite-agent/hooks": ("/etc/buildkite-agent/hooks", True),
            SSH: (PATHS.agent_dir, True),
            f"{BIN}/buildkite-agent": ("/usr/bin/buildkite-agent", True),
        }

    @pytest.mark.parametrize(
        "job_id, name",
        [("0190-abc", "kitebox-0190-abc"), ("../x", "kitebox-..-x"), ("", "kitebox-job"), ("é", "kitebox--")],
    )
    def test_container_name(self, job_id, name):
        """Author-controlled job ids become Docker-safe names."""
        assert container_name(job_id) == name
