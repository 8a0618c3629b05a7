"""The demo's boxed run: the allowed sample job through `kitebox job`, in its own container.

What an Elastic CI Stack instance would have, made on this machine: a job network (internal:
nothing leaves this host) with kitebox's metadata firewall, kitebox's metadata proxy (STS from
the local moto server) answering the job's credential requests, a git server over ssh on that
network's gateway serving the sample repository and a plugin (each accepting only its own
deploy key), the job image built offline, and, in the container, `images/agent-stand-in/bootstrap`
standing in for `buildkite-agent bootstrap` (there is no agent binary here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kitebox.demo import sample
from kitebox.demo.gitserver import GitSshServer

ROOT = Path(__file__).resolve().parents[3]
STAND_IN = ROOT / "images" / "agent-stand-in" / "bootstrap"
IMAGE = "kitebox/job:demo"
NETWORK = "kitebox-demo"
COMMAND = r"""echo "checked out: $(cat README)"
for name in ARTIFACTORY_TOKEN DATABASE_URL FAV_LESSON DEPLOY_PASSWORD; do
  value="${!name}"
  printf '%-18s %3d bytes, sha256 %s\n' "$name" "${#value}" "$(printf %s "$value" | sha256sum | cut -c1-16)"
done
echo "running as $(id -un) in container $(hostname)"
python3 - <<'PY'
import urllib.request
# 169.254.169.254 is redirected to kitebox's proxy: it lists the job's role, never the instance's.
put = urllib.request.Request("http://169.254.169.254/latest/api/token", method="PUT",
                             headers={"x-aws-ec2-metadata-token-ttl-seconds": "60"})
token = urllib.request.urlopen(put, timeout=2).read().decode()
roles = urllib.request.Request("http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                               headers={"x-aws-ec2-metadata-token": token})
print("instance metadata (kitebox's proxy) offers role:", urllib.request.urlopen(roles, timeout=2).read().decode())
import botocore.session
credentials = botocore.session.get_session().get_credentials()
print("AWS SDK finds credentials from:", credentials.method if credentials else None)
PY
"""


def why_not() -> str | None:
    """Why box mode cannot run here, or None."""
    if os.geteuid() != 0:
        return "box mode needs root (iptables, ssh-agents as the job's user)"
    if shutil.which("iptables") is None or shutil.which("docker") is None:
        return "box mode needs iptables and docker (scripts/setup installs them)"
    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:  # any failure to reach the engine means: no box mode here
        return "no Docker engine answers (scripts/setup starts one)"
    return None


def ensure_image() -> str:
    """The job image (images/Dockerfile) on the registry-free base image, built if missing."""
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        print(f"building {IMAGE} from images/Dockerfile (offline)", flush=True)
        subprocess.run(["bash", str(ROOT / "images" / "build-base-image.sh")], check=True)
        subprocess.run(["docker", "build", "--quiet", "--network", "none", "-t", IMAGE,
                        "-f", str(ROOT / "images" / "Dockerfile"), str(ROOT / "images")], check=True)
    return IMAGE


def run(moto) -> int:
    """Seed the sample data for a local repository and run its job through `kitebox job`."""
    import docker

    from kitebox.box.network import ensure_network, remove_firewall

    client = docker.from_env(timeout=60)
    image = ensure_image()
    work = Path(tempfile.mkdtemp(prefix="kitebox-demo-", dir="/tmp"))
    work.chmod(0o755)
    network = ensure_network(client, NETWORK, True, work / "network.lock")
    gateway = client.networks.get(NETWORK).attrs["IPAM"]["Config"][0]["Gateway"]
    proxy = _start_proxy(moto, work)
    try:
        with GitSshServer(host=gateway) as git:
            repo_url, plugin_url = git.add_repo("spells"), git.add_repo("plugins")
            keys = sample.seed(moto.client("ssm"), moto.client("secretsmanager"), repo=repo_url)
            git.authorize(keys.repo.public, "spells")
            git.authorize(keys.plugins.public, "plugins")
            return _run_job(moto, image, work, repo_url, plugin_url, proxy.config.socket_path)
    finally:
        proxy.stop()
        for container in client.containers.list(all=True, filters={"network": NETWORK}):
            container.remove(force=True)
        client.networks.get(NETWORK).remove()
        remove_firewall(network.bridge)
        shutil.rmtree(work, ignore_errors=True)
        client.close()


def _start_proxy(moto, work: Path):
    """kitebox's metadata proxy for the demo network; the upstream IMDS is none at all."""
    from kitebox.proxy.credentials import BotoSts
    from kitebox.proxy.daemon import Proxy, ProxyConfig

    config = ProxyConfig(job_network=NETWORK, imds_port=0, ecs_port=0, state_dir=work / "proxy", admin_port=0,
                         upstream=None, region=moto.region, availability_zone=f"{moto.region}a")
    return Proxy(config, BotoSts(moto.client("sts")), lambda line: None).start()


def _run_job(moto, image: str, work: Path, repo_url: str, plugin_url: str, proxy_socket: Path) -> int:
    for name in ("builds", "plugins", "hooks", "bin", "run"):
        (work / name).mkdir()
    shutil.copy(STAND_IN, work / "bin" / "buildkite-agent")
    job = {
        **sample.job_environment(repo=repo_url),
        "BUILDKITE_PLUGINS": json.dumps([{f"{plugin_url}#v1": {}}]),
        "BUILDKITE_COMMAND": COMMAND,
        "KITEBOX_ROLE": sample.ROLE,  # the step asks for the role hermione/allowed_roles grants
    }
    (work / "job.json").write_text(json.dumps(job))
    agent = {
        "BUILDKITE_AGENT_ACCESS_TOKEN": "demo-agent-access-token",
        "BUILDKITE_AGENT_ENDPOINT": "https://agent.buildkite.invalid/v3",
        "BUILDKITE_AGENT_PID": str(os.getpid()),
        "BUILDKITE_BIN_PATH": str(work / "bin"),
        "BUILDKITE_BUILD_PATH": str(work / "builds"),
        "BUILDKITE_PLUGINS_PATH": str(work / "plugins"),
        "BUILDKITE_HOOKS_PATH": str(work / "hooks"),
        "BUILDKITE_ENV_JSON_FILE": str(work / "job.json"),
        "KITEBOX_BASE_PATH": sample.BASE,
        "KITEBOX_IMAGE": image,
        "KITEBOX_NETWORK": NETWORK,
        "KITEBOX_NETWORK_INTERNAL": "true",
        "KITEBOX_RUN_DIR": str(work / "run"),
        "KITEBOX_INNER_BOOTSTRAP": "/run/kitebox/bin/buildkite-agent bootstrap",
        "KITEBOX_AUDIT": str(work / "audit.jsonl"),
        "KITEBOX_PROXY": "required",
        "KITEBOX_PROXY_SOCKET": str(proxy_socket),
    }
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BUILDKITE_", "KITEBOX_", "AWS_"))}
    env = {**base, **moto.env(), **agent, **job}
    # As the agent runs a bootstrap-script: its environment, in the build path, its own group.
    code = subprocess.run([sys.executable, "-m", "kitebox", "job"], env=env, cwd=work / "builds",
                          stdin=subprocess.DEVNULL, start_new_session=True, timeout=300).returncode
    print("\n--- the audit line kitebox wrote (names and nodes, never values)", flush=True)
    print((work / "audit.jsonl").read_text().strip())
    return code
