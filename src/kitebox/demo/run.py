"""`kitebox demo`: a local moto-backed AWS with sample secrets, ACLs and roles, three jobs
explained, and the allowed one run through `kitebox job` in its own container (box mode), or,
where this machine cannot run containers, through kitebox's agent hooks (hook mode).

Everything stays on this machine: moto on 127.0.0.1, fake credentials, no real AWS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from kitebox.core import explain
from kitebox.core.identity import JobIdentity
from kitebox.demo import sample
from kitebox.demo.localaws import MotoServer
from kitebox.evaluate import evaluate
from kitebox.settings import Settings

HOOKS = Path(__file__).resolve().parents[3] / "hooks"

# A stand-in for the agent's `buildkite-agent bootstrap` (there is none on this machine): it
# sources the hooks in the agent's order and runs the step's command between them.
AGENT_STAND_IN = r"""
set -e
source "$HOOKS/environment"
echo "~~~ plugin checkout would use SSH_AUTH_SOCK=$SSH_AUTH_SOCK (global key): $(ssh-add -l | awk '{print $2, $3, $4}')"
source "$HOOKS/pre-checkout"
echo "~~~ repository checkout uses: $(ssh-add -l | awk '{print $2, $3, $4}')"
source "$HOOKS/post-checkout"
echo "+++ :shell: command"
bash -c "$BUILDKITE_COMMAND"
source "$HOOKS/pre-exit"
"""

COMMAND = r"""
for name in ARTIFACTORY_TOKEN DATABASE_URL FAV_LESSON DEPLOY_PASSWORD; do
  value="${!name}"
  printf '%-18s %3d bytes, sha256 %s\n' "$name" "${#value}" "$(printf %s "$value" | sha256sum | cut -c1-16)"
done
echo "BUILDKITE_REDACTED_VARS=$BUILDKITE_REDACTED_VARS"
"""


def section(title: str) -> None:
    print(f"\n--- {title}", flush=True)


def run_hooks() -> int:
    """The allowed job through the hook shims, sourced by a stand-in for the agent's bootstrap."""
    with tempfile.TemporaryDirectory(prefix="kitebox-demo-") as audit_dir:
        audit_log = Path(audit_dir) / "audit.jsonl"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BUILDKITE_")},
            **sample.job_environment(),
            "BUILDKITE_COMMAND": COMMAND,
            "HOOKS": str(HOOKS),
            "KITEBOX_BASE_PATH": sample.BASE,
            "KITEBOX_AUDIT": str(audit_log),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        code = subprocess.run(["bash", "-c", AGENT_STAND_IN], env=env).returncode
        section("the audit line kitebox wrote (names and nodes, never values)")
        print(audit_log.read_text().strip())
    return code


def main() -> int:
    section("starting a local AWS (moto server on 127.0.0.1) with sample secrets, ACLs and roles")
    with MotoServer() as moto:
        os.environ.update(moto.env())
        keys = sample.seed(moto.client("ssm"), moto.client("secretsmanager"))
        print(f"moto at {moto.endpoint_url}; base path {sample.BASE}")
        print(f"repo deploy key    {keys.repo.fingerprint}  (public half goes to the git host)")
        print(f"plugins deploy key {keys.plugins.fingerprint}")
        settings = Settings(base_path=sample.BASE, audit="off")
        from kitebox.adapters.aws import SsmStore

        store = SsmStore.create()
        jobs = [
            ("hermione builds main: allowed", sample.job_environment()),
            ("hermione builds a feature branch: refused by admission", sample.job_environment(branch="feature/x")),
            ("infra-deploy by a non-SRE: refused by the team ACL", sample.job_environment(pipeline="infra-deploy")),
        ]
        for title, env in jobs:
            section(f"kitebox explain: {title}")
            sys.stdout.write(explain.as_text(evaluate(JobIdentity.from_environ(env), settings, store)))
        from kitebox.demo import boxed

        reason = boxed.why_not()
        if reason is None:
            section("running the allowed job through `kitebox job`, in its own container (box mode)")
            moto.reset()  # the boxed run seeds the same data for a repository served on this host
            code = boxed.run(moto)
        else:
            section(f"{reason}: running the allowed job through kitebox's agent hooks (hook mode)")
            code = run_hooks()
    print(f"\nDemo finished: the job exited {code}.")
    return code


if __name__ == "__main__":
    sys.exit(main())
