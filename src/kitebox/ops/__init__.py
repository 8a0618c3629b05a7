"""The operators' kit: the commands a platform team runs to set kitebox up (issue 5).

    agent_token   kitebox agent-token      the agent token from SSM into the agent config (0600)
    keys          kitebox keys ...         deploy keys: create, rotate, show
    secrets       kitebox secrets ...      env/<name> secrets: set (stdin/file only), ls, rm
    acl           kitebox acl ...          allowed_* rules, repository/branch admission, roles
    iam           kitebox iam-policy       least-privilege instance policy and deploy-role trust
    cfnyaml       CloudFormation YAML for iam-policy, without a YAML library on the instance
    common        what they share: node selection, SSM client, error translation, atomic files

Every command refuses destructive or ambiguous input without --force, and none of them can
take a secret value on the command line: values come from stdin or a file only.

The rest of the kit lives where it runs: bootstrap/install.sh (BootstrapScriptUrl), the root
Dockerfile (the proxy as a container), and the audit sinks adapters/cloudwatch.py and
adapters/journald.py.
"""
