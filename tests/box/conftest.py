"""Box-mode fixtures: a job network of our own (internal, firewalled), an sshd the job containers
can reach on that network's gateway, the job image, and `kitebox job` started the way the agent
starts a bootstrap-script (its environment, its env file, its own process group).

Inside the containers, `images/agent-stand-in/bootstrap` STANDS IN for `buildkite-agent
bootstrap` (there is no agent binary here): it is mounted as the host's agent binary
(BUILDKITE_BIN_PATH/buildkite-agent) and run as `KITEBOX_INNER_BOOTSTRAP`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kitebox.box.network import ensure_network, remove_firewall
from kitebox.core.slug import repo_slug
from tests.support.docker_engine import REPO_ROOT, ensure_job_image, in_ci, require_docker
from tests.support.git_sshd import SSHD_PATH, GitSshServer, generate_ed25519

STAND_IN = REPO_ROOT / "images" / "agent-stand-in" / "bootstrap"
BASE = "/vendors/buildkite"
PIPELINE = "app"
JOB_TIMEOUT = 120  # seconds any one `kitebox job` may take in a test


def missing(what: str) -> None:
    """Skip, or fail under CI=true, where .ci/run provides root, iptables, sshd and git."""
    if in_ci():
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def docker_client():
    require_docker()
    if os.geteuid() != 0 or shutil.which("iptables") is None:
        missing("box mode tests need root and iptables (the metadata firewall)")
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def job_image(docker_client) -> str:
    """images/Dockerfile on the registry-free base: git, ssh, python3, user buildkite-agent (2000)."""
    return ensure_job_image()


@dataclass(frozen=True)
class JobNet:
    name: str
    bridge: str
    gateway: str


@pytest.fixture(scope="session")
def job_network(docker_client, tmp_path_factory) -> JobNet:
    """An internal job network made by kitebox's own ensure_network (firewall included)."""
    name = f"kitebox-test-{uuid.uuid4().hex[:8]}"
    lock = tmp_path_factory.mktemp("netlock") / "network.lock"
    network = ensure_network(docker_client, name, True, lock)
    attrs = docker_client.networks.get(name).attrs
    gateway = attrs["IPAM"]["Config"][0]["Gateway"]
    yield JobNet(name, network.bridge, gateway)
    for container in docker_client.containers.list(all=True, filters={"network": name}):
        container.remove(force=True)
    docker_client.networks.get(name).remove()
    remove_firewall(network.bridge)


@pytest.fixture(scope="session")
def box_sshd(job_network):
    """The test sshd, listening on the job network's gateway (an address of this host that the
    internal network reaches) instead of loopback."""
    if not os.access(SSHD_PATH, os.X_OK) or shutil.which("git") is None:
        missing(f"{SSHD_PATH} or git not found: install openssh-server and git (.ci/run does)")
    server = GitSshServer()
    server.host = job_network.gateway  # GitSshServer has no host= argument (yet)
    with server:
        yield server


@dataclass(frozen=True)
class Keys:
    repo: tuple[str, str]
    plugin: tuple[str, str]
    repo_url: str
    plugin_url: str


@pytest.fixture(scope="session")
def keys(box_sshd) -> Keys:
    """Two repos on the sshd, each accepting only its own key (GitHub deploy-key semantics)."""
    repo_key, plugin_key = generate_ed25519("repo"), generate_ed25519("plugins")
    repo_url, plugin_url = box_sshd.add_repo("box-app"), box_sshd.add_repo("box-plugin")
    box_sshd.authorize(repo_key[1], "box-app")
    box_sshd.authorize(plugin_key[1], "box-plugin")
    return Keys(repo_key, plugin_key, repo_url, plugin_url)


@pytest.fixture(scope="session")
def agent_bin(tmp_path_factory) -> Path:
    """A BUILDKITE_BIN_PATH whose `buildkite-agent` is the stand-in (mounted read-only by kitebox)."""
    directory = tmp_path_factory.mktemp("agent-bin")
    shutil.copy(STAND_IN, directory / "buildkite-agent")
    (directory / "buildkite-agent").chmod(0o755)
    return directory


@dataclass
class World:
    """What an operator set up, and the job the agent is about to run."""

    aws: object
    ssm: object
    keys: Keys
    network: JobNet
    image: str
    root: Path
    run_dir: Path
    agent_bin: Path
    job: dict[str, str] = field(default_factory=dict)  # the job's variables (the env file)
    agent: dict[str, str] = field(default_factory=dict)  # agent-added and operator settings

    def put(self, name: str, value: str, kind: str = "SecureString") -> None:
        self.ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)

    def new_job(self, **variables: str) -> str:
        job_id = str(uuid.uuid4())
        self.job.update(BUILDKITE_JOB_ID=job_id, **variables)
        return job_id

    @property
    def job_id(self) -> str:
        return self.job["BUILDKITE_JOB_ID"]

    def variant(self, **variables: str) -> "World":
        """Another job on this host (another agent, say): its own id and variables."""
        other = dataclasses.replace(self, job=dict(self.job), agent=dict(self.agent))
        other.new_job(**variables)
        return other

    @property
    def build_dir(self) -> Path:
        job = self.job
        return Path(self.agent["BUILDKITE_BUILD_PATH"], job["BUILDKITE_AGENT_NAME"],
                    job["BUILDKITE_ORGANIZATION_SLUG"], job["BUILDKITE_PIPELINE_SLUG"])

    def environ(self) -> dict[str, str]:
        env_file = self.root / f"env-{self.job['BUILDKITE_JOB_ID']}.json"
        env_file.write_text(json.dumps(self.job))
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE_", "KITEBOX_", "AWS_"))}
        return {**base, **self.aws.env(), **self.agent, **self.job, "BUILDKITE_ENV_JSON_FILE": str(env_file)}

    def start(self, **popen) -> subprocess.Popen:
        """`kitebox job` as the agent runs a bootstrap-script: in its own process group."""
        return subprocess.Popen(
            [sys.executable, "-m", "kitebox", "job"],
            env=self.environ(),
            cwd=self.agent["BUILDKITE_BUILD_PATH"],
            stdin=subprocess.DEVNULL,
            stdout=popen.pop("stdout", subprocess.PIPE),
            stderr=popen.pop("stderr", subprocess.PIPE),
            start_new_session=True,
            **popen,
        )

    def run(self, timeout: float = JOB_TIMEOUT) -> subprocess.CompletedProcess:
        process = self.start()
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"kitebox job ran over {timeout}s:\n{out.decode()}\n{err.decode()}")
        return subprocess.CompletedProcess(process.args, process.returncode, out.decode(), err.decode())


@pytest.fixture
def world(aws, keys, job_network, job_image, agent_bin) -> World:
    """Keys, a secret, an operator hooks dir, and a job: every test starts from this."""
    ssm = aws.client("ssm")
    world_root = Path(tempfile.mkdtemp(prefix="kbx-", dir="/tmp"))
    world_root.chmod(0o755)
    run_dir = world_root / "run"
    build = world_root / "builds"
    plugins = world_root / "plugins"
    hooks = world_root / "hooks"
    for directory in (build, plugins, hooks):
        directory.mkdir()
    (hooks / "pre-command").write_text("echo 'operator pre-command hook (linked as is)'\n")
    (hooks / "environment").write_text("export OPERATOR_ENVIRONMENT_HOOK=ran\n")
    world = World(aws, ssm, keys, job_network, job_image, world_root, run_dir, agent_bin)
    world.put(f"{BASE}/global/ssh/key", keys.plugin[0])
    world.put(f"{BASE}/{repo_slug(keys.repo_url)}/ssh/key", keys.repo[0])
    world.agent.update(
        BUILDKITE_AGENT_ACCESS_TOKEN=f"agent-token-{uuid.uuid4().hex}",
        BUILDKITE_AGENT_ENDPOINT="https://agent.buildkite.invalid/v3",
        BUILDKITE_AGENT_PID=str(os.getpid()),
        BUILDKITE_BIN_PATH=str(agent_bin),
        BUILDKITE_BUILD_PATH=str(build),
        BUILDKITE_PLUGINS_PATH=str(plugins),
        BUILDKITE_HOOKS_PATH=str(hooks),
        BUILDKITE_CANCEL_GRACE_PERIOD="10",
        BUILDKITE_SIGNAL_GRACE_PERIOD_SECONDS="-1",
        BUILDKITE_SHELL="/bin/bash -e -c",
        KITEBOX_IMAGE=job_image,
        KITEBOX_NETWORK=job_network.name,
        KITEBOX_NETWORK_INTERNAL="true",
        KITEBOX_RUN_DIR=str(run_dir),
        KITEBOX_INNER_BOOTSTRAP="/run/kitebox/bin/buildkite-agent bootstrap",
        KITEBOX_PROXY="off",  # the proxy integration has its own test (test_proxied.py)
        KITEBOX_AUDIT=str(world_root / "audit.jsonl"),
    )
    world.new_job(
        BUILDKITE_REPO=keys.repo_url,
        BUILDKITE_COMMIT="HEAD",
        BUILDKITE_BRANCH="main",
        BUILDKITE_AGENT_NAME="agent-1",
        BUILDKITE_ORGANIZATION_SLUG="acme",
        BUILDKITE_PIPELINE_SLUG=PIPELINE,
        BUILDKITE_PIPELINE_PROVIDER="github",
        BUILDKITE_BUILD_CREATOR="Ada",
        BUILDKITE_BUILD_CREATOR_TEAMS="dev",
        BUILDKITE_SOURCE="ui",
        BUILDKITE_PLUGINS=json.dumps([{f"{keys.plugin_url}#v1": {}}]),
        BUILDKITE_COMMAND="echo hello from the job",
    )
    yield world
    shutil.rmtree(world_root, ignore_errors=True)


def job_containers(client, job_id: str | None = None) -> list[dict]:
    """Container summaries (no per-container inspect, which races with removals) by job label."""
    label = f"kitebox.job={job_id}" if job_id else "kitebox.job"
    return client.api.containers(all=True, filters={"label": label})


def agent_pids(run_dir: Path) -> list[int]:
    """ssh-agents whose socket lies under run_dir."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"ssh-agent" and any(str(run_dir).encode() in a for a in argv):
            found.append(int(proc.name))
    return found


def leftovers(client, world: World) -> dict:
    """Everything this world's jobs may leave behind: containers (found by their build mount;
    the engine is shared with other tests), ssh-agents and agent dirs under its run dir."""
    dirs = sorted(str(p) for p in world.run_dir.glob("u*/kitebox-*")) if world.run_dir.exists() else []
    mine = str(world.root) + "/"
    return {
        "containers": [c["Names"][0] for c in job_containers(client)
                       if any(m.get("Source", "").startswith(mine) for m in c.get("Mounts") or ())],
        "agents": agent_pids(world.run_dir),
        "agent_dirs": dirs,
    }


def wait_for(predicate, timeout: float, interval: float = 0.1):
    """Poll `predicate` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def paused(command: str) -> str:
    """`command`, then `.ready` in the checkout, then wait (at most 60 s) for the test's `.go`."""
    return (
        f'{command}\n'
        'touch "$BUILDKITE_BUILD_CHECKOUT_PATH/.ready"\n'
        'for _ in $(seq 600); do [ -e "$BUILDKITE_BUILD_CHECKOUT_PATH/.go" ] && break; sleep 0.1; done\n'
    )


def wait_ready(world: World, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until the paused command signalled `.ready` (fails early if kitebox exited)."""
    ready = world.build_dir / ".ready"
    if not wait_for(lambda: ready.exists() or process.poll() is not None, timeout) or not ready.exists():
        out, err = process.communicate(timeout=30) if process.poll() is not None else (b"", b"")
        pytest.fail(f"the job never got ready (exit {process.poll()}):\n{out.decode()}\n{err.decode()}")
