"""A real OpenSSH server on loopback serving bare git repositories, one deploy key per repo.

It behaves like GitHub's deploy keys: a key authorized for one repository can fetch and push
that repository and nothing else, so a test can prove that a job got the right key (and only
it) from an ssh-agent. Keys never touch the disk on the client side: ``SshAgent.add`` feeds them
to ``ssh-add -`` on stdin.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kitebox.demo.processes import terminate, wait_until_answers

__all__ = ["GitSshServer", "SshAgent", "generate_ed25519", "SSHD_PATH"]

SSHD_PATH = "/usr/sbin/sshd"
LOOPBACK = "127.0.0.1"
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# Fixed identity and dates make each repo's single commit the same SHA on every run.
_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "kitebox tests",
    "GIT_AUTHOR_EMAIL": "tests@kitebox.invalid",
    "GIT_COMMITTER_NAME": "kitebox tests",
    "GIT_COMMITTER_EMAIL": "tests@kitebox.invalid",
    "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z",
}

# Runs as the authorized_keys forced command: `gate <the one repo path this key may use>`.
# git over ssh sends SSH_ORIGINAL_COMMAND="git-upload-pack '/abs/path.git'" (or receive-pack).
_GATE_SCRIPT = r"""#!/bin/bash
set -u
allowed=$1
cmd=${SSH_ORIGINAL_COMMAND:-}
re="^(git-upload-pack|git-receive-pack|git upload-pack|git receive-pack) '([^']*)'$"
if [[ $cmd =~ $re ]]; then
    verb=${BASH_REMATCH[1]}
    path=${BASH_REMATCH[2]}
    if [[ $path == "$allowed" ]]; then
        exec git-shell -c "$verb '$path'"
    fi
fi
echo "kitebox test gate: refused '${cmd:-<no command>}': this key may only access $allowed" >&2
exit 1
"""


def generate_ed25519(comment: str = "kitebox-test") -> tuple[str, str]:
    """A fresh ed25519 key pair: (private key in OpenSSH PEM form, ``ssh-ed25519 AAAA... comment``)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()
    return private, f"{public} {comment}" if comment else public


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> str:  # noqa: A002
    env = {**os.environ, **_COMMIT_ENV, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    out = subprocess.run(
        ["git", *args], cwd=cwd, input=input, env=env, check=True, capture_output=True
    )
    return out.stdout.decode().strip()


class GitSshServer:
    """``sshd -D -e`` on <host>:<free port> (host 127.0.0.1 unless given) with a private
    config, serving bare repos.

    >>> with GitSshServer() as server:
    ...     url = server.add_repo("repo-a")
    ...     server.authorize(public_key, "repo-a")
    ...     # git clone url, with SSH_AUTH_SOCK and GIT_SSH_COMMAND=server.ssh_command()
    """

    def __init__(
        self, *, host: str = LOOPBACK, sshd_path: str = SSHD_PATH, start_timeout: float = 15.0
    ) -> None:
        # host: the one address sshd listens on. Loopback by default; box-mode tests pass the
        # gateway of an --internal Docker network so job containers can reach it.
        self.host = host
        self.sshd_path = sshd_path
        self.user = getpass.getuser()
        self.port: int | None = None
        self._start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._authorized: list[str] = []

    # -- paths -----------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("GitSshServer is not started")
        return Path(self._tmp.name)

    @property
    def repos_dir(self) -> Path:
        return self.root / "repos"

    @property
    def log_path(self) -> Path:
        return self.root / "sshd.log"

    @property
    def authorized_keys_path(self) -> Path:
        return self.root / "authorized_keys"

    @property
    def gate_path(self) -> Path:
        return self.root / "gate"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> GitSshServer:
        if self._proc is not None and self._proc.poll() is None:
            return self
        if not os.access(self.sshd_path, os.X_OK):
            raise FileNotFoundError(f"{self.sshd_path} not found (install openssh-server)")
        if shutil.which("git-shell") is None and not Path("/usr/bin/git-shell").exists():
            raise FileNotFoundError("git-shell not found (install git)")
        self._tmp = tempfile.TemporaryDirectory(prefix="kitebox-sshd-")
        root = self.root
        root.chmod(0o755)  # sshd's user needs to traverse it when it is not root
        self.repos_dir.mkdir()
        # sshd refuses to start without its privilege-separation directory.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

        host_key, _ = generate_ed25519("kitebox-test-host")
        host_key_path = root / "ssh_host_ed25519_key"
        host_key_path.write_text(host_key)
        host_key_path.chmod(0o600)
        self.gate_path.write_text(_GATE_SCRIPT)
        self.gate_path.chmod(0o755)
        self._write_authorized_keys()

        for attempt in range(3):
            self.port = _free_port(self.host)
            config = root / "sshd_config"
            config.write_text(self._config(host_key_path))
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [self.sshd_path, "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_until_up():
                return self
            self._kill()
        log_text = self.log_path.read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"sshd did not start on {self.host}:{self.port}:\n{log_text}")

    def _config(self, host_key_path: Path) -> str:
        root = self.root
        return f"""\
Port {self.port}
ListenAddress {self.host}
HostKey {host_key_path}
PidFile {root}/sshd.pid
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
AuthorizedKeysFile {self.authorized_keys_path}
AllowUsers {self.user}
LogLevel VERBOSE
PermitUserEnvironment no
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
PermitTunnel no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 50
"""

    def _wait_until_up(self) -> bool:
        def banner() -> bool:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                return sock.recv(64).startswith(b"SSH-")

        assert self._proc is not None
        return wait_until_answers(self._proc, banner, self._start_timeout)

    def _kill(self) -> None:
        terminate(self._proc)

    def stop(self) -> None:
        """Kill sshd and delete the temp dir (repos, keys, logs)."""
        self._kill()
        self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> GitSshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- repositories and keys -------------------------------------------------------------

    def repo_path(self, name: str) -> Path:
        if not _REPO_NAME.match(name):
            raise ValueError(f"bad repo name {name!r}")
        return self.repos_dir / f"{name}.git"

    def url(self, name: str) -> str:
        """``ssh://<user>@<host>:<port>/<abs path>/<name>.git``."""
        return f"ssh://{self.user}@{self.host}:{self.port}{self.repo_path(name)}"

    def add_repo(self, name: str) -> str:
        """Create bare repo ``<name>.git`` whose branch ``main`` has one commit adding ``README``
        (text ``this is <name>``); return its URL. Adding an existing name returns its URL."""
        path = self.repo_path(name)
        with self._lock:
            if not path.exists():
                tmp = path.with_name(f".{path.name}.tmp")
                _git("init", "--quiet", "--bare", "--initial-branch=main", str(tmp))
                blob = _git("hash-object", "-w", "--stdin", cwd=tmp, input=f"this is {name}\n".encode())
                tree = _git("mktree", cwd=tmp, input=f"100644 blob {blob}\tREADME\n".encode())
                commit = _git("commit-tree", tree, "-m", f"Initial commit of {name}", cwd=tmp)
                _git("update-ref", "refs/heads/main", commit, cwd=tmp)
                tmp.rename(path)
        return self.url(name)

    def head(self, name: str, ref: str = "refs/heads/main") -> str:
        """The commit SHA ``ref`` points at in repo ``name``."""
        return _git("rev-parse", ref, cwd=self.repo_path(name))

    def authorize(self, public_key_openssh: str, repo: str) -> None:
        """Let this public key fetch and push ``repo`` (and nothing else)."""
        key = public_key_openssh.strip()
        if "\n" in key or not key.startswith(("ssh-", "ecdsa-", "sk-")):
            raise ValueError("expected one OpenSSH public key line")
        path = self.repo_path(repo)
        if not path.exists():
            raise KeyError(f"no repo {repo!r}: call add_repo({repo!r}) first")
        command = f"{shlex.quote(str(self.gate_path))} {shlex.quote(str(path))}"
        line = f'restrict,command="{command}" {key}'
        with self._lock:
            self._authorized.append(line)
            self._write_authorized_keys()

    def clear_authorizations(self) -> None:
        """Remove every authorized key (repos stay)."""
        with self._lock:
            self._authorized.clear()
            self._write_authorized_keys()

    def _write_authorized_keys(self) -> None:
        # sshd reads the file on every connection: replace it atomically.
        tmp = self.authorized_keys_path.with_suffix(".tmp")
        tmp.write_text("".join(f"{line}\n" for line in self._authorized))
        tmp.chmod(0o600)
        tmp.replace(self.authorized_keys_path)

    def ssh_command(self) -> str:
        """A GIT_SSH_COMMAND that authenticates only with keys from the ssh-agent at
        SSH_AUTH_SOCK: no ssh config, no ~/.ssh identity, no known_hosts, no prompts."""
        return " ".join(
            [
                "ssh",
                "-F", "/dev/null",
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null",
                "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "IdentitiesOnly=no",
                "-o", "IdentityFile=none",
                "-o", "PreferredAuthentications=publickey",
                "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10",
                "-o", "LogLevel=ERROR",
            ]
        )

    def log_text(self) -> str:
        """What sshd logged so far (VERBOSE: which key was accepted, refused commands...)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class SshAgent:
    """A real ``ssh-agent -D -a <sock>`` in a private 0700 temp dir, as a context manager.

    Keys go in with ``add(private_key)`` through ``ssh-add -`` on stdin and are never
    written to disk. ``env()`` gives ``{"SSH_AUTH_SOCK": ...}`` for a child process.
    """

    def __init__(self, *, start_timeout: float = 10.0) -> None:
        self._start_timeout = start_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.sock: str | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("SshAgent is not started")
        return self._proc.pid

    def start(self) -> SshAgent:
        self._tmp = tempfile.TemporaryDirectory(prefix="kitebox-agent-")
        os.chmod(self._tmp.name, 0o700)
        self.sock = os.path.join(self._tmp.name, "agent.sock")
        # -D: stay in the foreground as our child, so stop() kills exactly this agent.
        self._proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", self.sock],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self._start_timeout
        while not os.path.exists(self.sock):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("ssh-agent did not create its socket")
            time.sleep(0.02)
        return self

    def env(self) -> dict[str, str]:
        if self.sock is None:
            raise RuntimeError("SshAgent is not started")
        return {"SSH_AUTH_SOCK": self.sock}

    def _ssh_add(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:  # noqa: A002
        env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
        env.update(self.env())
        return subprocess.run(
            ["ssh-add", *args], input=input, env=env, capture_output=True, timeout=30
        )

    def add(self, private_key_openssh: str) -> None:
        """Load a private key into the agent from stdin (``ssh-add -``)."""
        result = self._ssh_add("-", input=private_key_openssh.encode())
        if result.returncode != 0:
            raise RuntimeError(f"ssh-add failed: {result.stderr.decode(errors='replace')}")

    def list_keys(self) -> list[str]:
        """Public keys the agent holds (``ssh-add -L``), empty when it holds none."""
        result = self._ssh_add("-L")
        if result.returncode == 1:  # "The agent has no identities."
            return []
        result.check_returncode()
        return result.stdout.decode().splitlines()

    def stop(self) -> None:
        """Kill the agent and remove its directory."""
        terminate(self._proc)
        self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self.sock = None

    def __enter__(self) -> SshAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
