"""Sample secrets, ACLs, admission rules and roles, written into SSM / Secrets Manager.

Three pipelines on one queue show the three outcomes a pipeline author meets:
- `hermione` builds github.com/hogwarts/spells from `main` or `release/*`: allowed, gets the
  global token, the repo's DATABASE_URL, its own FAV_LESSON and a Secrets Manager password;
- `hermione` on a feature branch: refused by `allowed_branches`;
- `infra-deploy`, restricted to the `sre` team: refused for anyone else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kitebox.core.slug import repo_slug
from kitebox.keys import KeyPair, generate_ed25519

BASE = "/vendors/buildkite"
REPO = "git@github.com:hogwarts/spells.git"
PLUGIN_REPO = "git@github.com:hogwarts/plugins.git"
ROLE = "arn:aws:iam::123456789012:role/hermione-deploy"
# A value with every character a shell or a quoting layer could get wrong.
FAV_LESSON = "Charms \"and\" 'Potions' $HOME `id` \\n\nline two ✨"


@dataclass(frozen=True)
class SampleKeys:
    repo: KeyPair
    plugins: KeyPair


def job_environment(pipeline: str = "hermione", branch: str = "main", teams: str = "wizards",
                    repo: str = REPO, job_id: str = "0190d1c2-demo-0000-0000-000000000001") -> dict[str, str]:
    """What the agent would put in a job's environment (buildkite-contract.md)."""
    return {
        "BUILDKITE_JOB_ID": job_id,
        "BUILDKITE_BUILD_ID": "0190d1c2-build-0000-0000-000000000042",
        "BUILDKITE_BUILD_NUMBER": "42",
        "BUILDKITE_ORGANIZATION_SLUG": "hogwarts",
        "BUILDKITE_PIPELINE_SLUG": pipeline,
        "BUILDKITE_PIPELINE_PROVIDER": "github",
        "BUILDKITE_REPO": repo,
        "BUILDKITE_BRANCH": branch,
        "BUILDKITE_COMMIT": "HEAD",
        "BUILDKITE_SOURCE": "ui",
        "BUILDKITE_BUILD_CREATOR": "Hermione Granger",
        "BUILDKITE_BUILD_CREATOR_EMAIL": "hermione@example.com",
        "BUILDKITE_BUILD_CREATOR_TEAMS": teams,
        "BUILDKITE_UNBLOCKER_TEAMS": "",
        "BUILDKITE_AGENT_META_DATA_QUEUE": "default",
        "BUILDKITE_AGENT_NAME": "demo-agent-1",
        "BUILDKITE_REDACTED_VARS": "*_PASSWORD,*_SECRET,*_TOKEN",
    }


def seed(ssm, secretsmanager, base: str = BASE, repo: str = REPO) -> SampleKeys:
    """Write the sample data for `repo`; returns the generated deploy keys (public halves go to
    the git host)."""
    keys = SampleKeys(generate_ed25519("kitebox-demo repo key"), generate_ed25519("kitebox-demo plugins key"))
    repo_node = f"{base}/{repo_slug(repo)}"
    parameters = [
        (f"{base}/global/env/ARTIFACTORY_TOKEN", "tok-global-1234567890", "SecureString"),
        (f"{base}/global/ssh/key", keys.plugins.private.reveal(), "SecureString"),
        (f"{repo_node}/env/DATABASE_URL", "postgres://ci:s3cr3t-db@db.internal/spells", "SecureString"),
        (f"{repo_node}/ssh/key", keys.repo.private.reveal(), "SecureString"),
        (f"{repo_node}/allowed_pipelines", "hermione\nspells-nightly", "String"),
        (f"{base}/hermione/env/fav-lesson", FAV_LESSON, "SecureString"),
        (f"{base}/hermione/env/ARTIFACTORY_TOKEN", "tok-hermione-0987654321", "SecureString"),
        (f"{base}/hermione/env/DEPLOY_PASSWORD",
         "{{resolve:secretsmanager:buildkite/hermione/deploy:SecretString:password}}", "String"),
        (f"{base}/hermione/repository", repo, "String"),
        (f"{base}/hermione/allowed_branches", "main\nrelease/*", "String"),
        (f"{base}/hermione/allowed_roles", ROLE, "String"),
        (f"{base}/infra-deploy/allowed_teams", "sre", "String"),
        (f"{base}/infra-deploy/env/ROOT_TOKEN", "tok-infra-never-seen", "SecureString"),
    ]
    for name, value, kind in parameters:
        ssm.put_parameter(Name=name, Value=value, Type=kind, Overwrite=True)
    secretsmanager.create_secret(
        Name="buildkite/hermione/deploy", SecretString=json.dumps({"password": "p@ss w0rd \"quoted\""})
    )
    return keys
