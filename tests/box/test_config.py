"""Box settings, the image choice and the grace periods: pure functions over an environ."""

from __future__ import annotations

import signal

import pytest

from kitebox.box.config import BoxSettings, cancel_signal, choose_image, signal_grace, stop_timeout
from kitebox.errors import ConfigError

IMAGE = {"KITEBOX_IMAGE": "kitebox/job:1"}


class TestBoxSettings:
    """Operator settings parse strictly, with safe defaults."""

    def test_defaults(self):
        """Non-root 2000:2000, network kitebox-jobs (not internal), agent bootstrap, no socket."""
        box = BoxSettings.from_environ(IMAGE)
        assert (box.uid, box.gid) == (2000, 2000)
        assert box.network == "kitebox-jobs" and not box.network_internal
        assert box.inner_bootstrap == ("buildkite-agent", "bootstrap")
        assert not box.allow_docker_socket and box.cap_add == ()
        assert box.cpus is None and box.memory is None and box.run_dir == "/run/kitebox"

    def test_image_is_required(self):
        """Box mode without a queue image is a configuration error, not a guess."""
        with pytest.raises(ConfigError, match="KITEBOX_IMAGE"):
            BoxSettings.from_environ({})

    def test_everything_set(self):
        """Every setting is read from its variable."""
        box = BoxSettings.from_environ(
            {
                **IMAGE,
                "KITEBOX_ALLOWED_IMAGES": "a:1, b:2,",
                "KITEBOX_USER": "3000:4000",
                "KITEBOX_CPUS": "1.5",
                "KITEBOX_MEMORY": "4G",
                "KITEBOX_ALLOW_DOCKER_SOCKET": "true",
                "KITEBOX_NETWORK": "jobs-2",
                "KITEBOX_NETWORK_INTERNAL": "yes",
                "KITEBOX_INNER_BOOTSTRAP": "/opt/agent 'boot strap'",
                "KITEBOX_CAP_ADD": "chown,CAP_SETUID",
                "KITEBOX_RUN_DIR": "/run/kb/",
            }
        )
        assert box.allowed_images == ("a:1", "b:2")
        assert (box.uid, box.gid, box.cpus, box.memory) == (3000, 4000, 1.5, "4g")
        assert box.allow_docker_socket and box.network_internal and box.network == "jobs-2"
        assert box.inner_bootstrap == ("/opt/agent", "boot strap")
        assert box.cap_add == ("CHOWN", "SETUID") and box.run_dir == "/run/kb"

    @pytest.mark.parametrize(
        "name, value",
        [
            ("KITEBOX_USER", "buildkite-agent"),
            ("KITEBOX_USER", "2000:x"),
            ("KITEBOX_CPUS", "0"),
            ("KITEBOX_CPUS", "lots"),
            ("KITEBOX_MEMORY", "4 GB"),
            ("KITEBOX_ALLOW_DOCKER_SOCKET", "maybe"),
            ("KITEBOX_NETWORK", "host net"),
            ("KITEBOX_INNER_BOOTSTRAP", "  "),
            ("KITEBOX_CAP_ADD", "ALL"),
            ("KITEBOX_CAP_ADD", "net-admin"),
        ],
        ids=lambda v: v,
    )
    def test_bad_values_are_refused(self, name, value):
        """A malformed setting is a one-line ConfigError naming it."""
        with pytest.raises(ConfigError, match=name):
            BoxSettings.from_environ({**IMAGE, name: value})

    def test_hooks_path_defaults_to_the_agents(self):
        """The job runs the agent's hooks unless KITEBOX_JOB_HOOKS_PATH says otherwise (or none)."""
        agent = {**IMAGE, "BUILDKITE_HOOKS_PATH": "/etc/buildkite-agent/hooks"}
        assert BoxSettings.from_environ(agent).job_hooks_path == "/etc/buildkite-agent/hooks"
        assert BoxSettings.from_environ({**agent, "KITEBOX_JOB_HOOKS_PATH": "/etc/kb"}).job_hooks_path == "/etc/kb"
        assert BoxSettings.from_environ({**agent, "KITEBOX_JOB_HOOKS_PATH": "none"}).job_hooks_path is None


class TestChooseImage:
    """The pipeline may pick an image only from the operator's allowlist."""

    box = BoxSettings(image="queue:1", allowed_images=("node:20", "python:3.12"))

    @pytest.mark.parametrize(
        "wanted, image, passed",
        [
            (None, "queue:1", True),
            ("", "queue:1", True),
            ("queue:1", "queue:1", True),
            ("node:20", "node:20", True),
            ("node:21", "queue:1", False),
            ("node", "queue:1", False),
            ("evil.example/node:20", "queue:1", False),
        ],
    )
    def test_table(self, wanted, image, passed):
        """Exact matches only; a refused request names the variable, not a default."""
        job_vars = {} if wanted is None else {"KITEBOX_JOB_IMAGE": wanted}
        chosen, check = choose_image(self.box, job_vars)
        assert (chosen, check.passed) == (image, passed)
        if not passed:
            assert check.node == "KITEBOX_JOB_IMAGE" and check.rule == "image"


class TestGrace:
    """The agent's grace periods, read as the agent reads them (buildkite-contract.md)."""

    @pytest.mark.parametrize(
        "cancel, signal_grace_value, expected",
        [
            (None, None, 9),  # defaults: 10 s, signal grace -1
            ("60", None, 59),  # Elastic CI Stack
            ("60", "-1", 59),
            ("10", "-3", 7),
            ("10", "4", 4),
            ("0", None, 0),
            ("ten", "x", 9),
            ("-5", None, 9),
        ],
    )
    def test_signal_grace(self, cancel, signal_grace_value, expected):
        """Negative signal grace is relative to the cancel grace; never below zero."""
        environ = {}
        if cancel is not None:
            environ["BUILDKITE_CANCEL_GRACE_PERIOD"] = cancel
        if signal_grace_value is not None:
            environ["BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS"] = signal_grace_value
        assert signal_grace(environ) == expected

    def test_stop_timeout_keeps_a_second_for_cleanup(self):
        """The container gets the grace minus kitebox's clean-up second, never less than 0."""
        assert [stop_timeout(g) for g in (9, 1, 0)] == [8, 0, 0]

    @pytest.mark.parametrize(
        "value, expected",
        [(None, signal.SIGTERM), ("SIGINT", signal.SIGINT), ("quit", signal.SIGQUIT), ("NOPE", signal.SIGTERM)],
    )
    def test_cancel_signal(self, value, expected):
        """BUILDKITE_CANCEL_SIGNAL is set only when it is not SIGTERM."""
        environ = {} if value is None else {"BUILDKITE_CANCEL_SIGNAL": value}
        assert cancel_signal(environ) == expected
