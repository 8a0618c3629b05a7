"""The test support itself works: fake AWS over HTTP, the latency proxy, git over ssh, Docker."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.docker_engine import BASE_IMAGE, ensure_job_image
from tests.support.git_sshd import GitSshServer, SshAgent, generate_ed25519
from tests.support.moto_server import LatencyProxy, MotoServer


class TestEnvironment:
    def test_credentials_and_agent_are_wiped(self) -> None:
        """No AWS_*, BUILDKITE_*, KITEBOX_* or ssh-agent variable reaches a test."""
        leaked = [
            name
            for name in os.environ
            if name.startswith(("AWS_", "BUILDKITE_", "KITEBOX_"))
            or name in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")
        ]
        assert leaked == []


@pytest.mark.moto
class TestMotoServer:
    def test_ssm_put_then_get_over_http(self, aws: MotoServer) -> None:
        """A SecureString put through the HTTP endpoint comes back decrypted from a fresh client."""
        aws.client("ssm").put_parameter(
            Name="/kitebox/global/env/fav-lesson", Value="s3cret-value", Type="SecureString"
        )
        got = aws.client("ssm").get_parameter(
            Name="/kitebox/global/env/fav-lesson", WithDecryption=True
        )
        assert got["Parameter"]["Value"] == "s3cret-value"

    def test_env_points_default_boto3_at_moto(self, aws: MotoServer) -> None:
        """With aws's env set, a plain boto3 client uses moto and the fake credentials."""
        import boto3

        assert os.environ["AWS_ENDPOINT_URL"] == aws.endpoint_url
        assert aws.endpoint_url.startswith("http://127.0.0.1:")
        identity = boto3.client("sts").get_caller_identity()
        assert identity["Account"] == "123456789012"  # moto's default account

    def test_reset_forgets_everything(self, aws: MotoServer) -> None:
        """reset() empties every service, so tests cannot see each other's parameters."""
        ssm = aws.client("ssm")
        ssm.put_parameter(Name="/x", Value="y", Type="String")
        aws.reset()
        with pytest.raises(ssm.exceptions.ParameterNotFound):
            ssm.get_parameter(Name="/x")

    def test_kill_then_start_serves_again(self) -> None:
        """A killed server refuses connections, and start() brings up a fresh empty one."""
        import botocore.config
        import botocore.exceptions

        with MotoServer() as server:
            server.client("ssm").put_parameter(Name="/x", Value="y", Type="String")
            server.kill()
            assert not server.is_running()
            ssm = server.client(
                "ssm", config=botocore.config.Config(retries={"max_attempts": 1}, connect_timeout=2)
            )
            with pytest.raises(botocore.exceptions.EndpointConnectionError):
                ssm.get_parameter(Name="/x")
            server.start()
            fresh = server.client("ssm")  # the port may have changed
            with pytest.raises(fresh.exceptions.ParameterNotFound):
                fresh.get_parameter(Name="/x")


@pytest.mark.moto
class TestLatencyProxy:
    def test_adds_delay_and_counts_requests(self, aws: MotoServer) -> None:
        """Every call through the proxy takes at least its delay and is counted with its target."""
        aws.client("ssm").put_parameter(Name="/p", Value="v", Type="String")
        delay = 0.05
        with LatencyProxy(aws.endpoint_url, delay=delay) as proxy:
            ssm = aws.client("ssm", endpoint_url=proxy.endpoint_url)
            calls = 5
            for _ in range(calls):
                started = time.monotonic()
                assert ssm.get_parameter(Name="/p")["Parameter"]["Value"] == "v"
                assert time.monotonic() - started >= delay
            assert proxy.request_count == calls
            assert proxy.requests == [("POST", "AmazonSSM.GetParameter")] * calls
            assert proxy.count("AmazonSSM.GetParameter") == calls

            proxy.clear()
            aws.client("sts", endpoint_url=proxy.endpoint_url).get_caller_identity()
            assert proxy.requests == [("POST", "/")]  # query protocol: no X-Amz-Target

    def test_upstream_down_gives_502(self) -> None:
        """A request the proxy cannot forward gets a 502, not a hang."""
        import http.client

        with MotoServer() as server:
            upstream = server.endpoint_url
        with LatencyProxy(upstream, delay=0) as proxy:
            conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
            conn.request("GET", "/")
            response = conn.getresponse()
            assert response.status == 502
            assert b"upstream" in response.read()
            conn.close()


def _git_clone(server: GitSshServer, agent: SshAgent, repo: str, dest: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(dest.parent),  # no ~/.gitconfig, no ~/.ssh of the developer
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_SSH_COMMAND": server.ssh_command(),
        **agent.env(),
    }
    return subprocess.run(
        ["git", "clone", "--quiet", server.url(repo), str(dest)],
        env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


@pytest.mark.sshd
class TestGitSshServer:
    def test_deploy_key_clones_its_repo_only(self, git_sshd: GitSshServer, tmp_path: Path) -> None:
        """A key authorized for repo-a clones repo-a through a real ssh-agent and is refused for repo-b."""
        git_sshd.add_repo("repo-a")
        git_sshd.add_repo("repo-b")
        private_key, public_key = generate_ed25519()
        git_sshd.authorize(public_key, "repo-a")

        with SshAgent() as agent:
            agent.add(private_key)  # through ssh-add's stdin: the key is never on disk
            assert [k.split()[:2] for k in agent.list_keys()] == [public_key.split()[:2]]
            agent_pid, sock = agent.pid, agent.sock

            ok = _git_clone(git_sshd, agent, "repo-a", tmp_path / "a")
            assert ok.returncode == 0, ok.stderr
            assert (tmp_path / "a" / "README").read_text() == "this is repo-a\n"

            refused = _git_clone(git_sshd, agent, "repo-b", tmp_path / "b")
            assert refused.returncode != 0
            assert "this key may only access" in refused.stderr
            assert not (tmp_path / "b").exists()

        with pytest.raises(ProcessLookupError):
            os.kill(agent_pid, 0)  # the agent is gone...
        assert sock is not None and not os.path.exists(sock)  # ...and so is its socket

    def test_unknown_key_is_refused(self, git_sshd: GitSshServer, tmp_path: Path) -> None:
        """A key authorized for no repo cannot even log in."""
        git_sshd.add_repo("repo-a")
        private_key, _ = generate_ed25519()
        with SshAgent() as agent:
            agent.add(private_key)
            refused = _git_clone(git_sshd, agent, "repo-a", tmp_path / "a")
        assert refused.returncode != 0
        assert "Permission denied" in refused.stderr

    def test_repos_have_stable_single_commit(self, git_sshd: GitSshServer) -> None:
        """add_repo is idempotent and a repo's only commit has the same SHA on every run."""
        first = git_sshd.add_repo("stable")
        assert git_sshd.add_repo("stable") == first
        assert git_sshd.head("stable") == git_sshd.head("stable")
        assert len(git_sshd.head("stable")) == 40


@pytest.mark.docker
class TestDocker:
    def test_base_image_runs_git_without_network(self, base_image: str) -> None:
        """The offline-built base image runs git in a container with no network."""
        assert base_image == BASE_IMAGE
        result = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", base_image, "git", "--version"],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("git version ")

    def test_job_image_runs_as_buildkite_agent(self, base_image: str) -> None:
        """images/Dockerfile builds offline on the base image and runs jobs as buildkite-agent."""
        image = ensure_job_image(base=base_image, rebuild=True)
        result = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", image, "sh", "-c", "id -un; pwd"],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["buildkite-agent", "/var/lib/buildkite-agent"]
