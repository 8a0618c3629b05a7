#!/bin/bash
# kitebox's entry step, the job container's command: `entry.sh <inner bootstrap argv...>`.
#
# 1. Read NUL-terminated NAME=value records from stdin until an empty record and export them:
#    the secrets and the agent's access token, which must never be in the container's config
#    (src/kitebox/box/delivery.py). EOF before the empty record means kitebox died: fail.
# 2. Give the bootstrap a hooks directory where kitebox's hook shim (hook.sh) runs the
#    environment, pre-checkout and post-checkout hooks and chains to the operator's hook of the
#    same name; every other operator hook is linked as it is.
# 3. exec the inner bootstrap, stdin from /dev/null.
set -euo pipefail

lib=${BASH_SOURCE[0]%/*}
terminated=0
while IFS= read -r -d '' record; do
    if [[ -z $record ]]; then
        terminated=1
        break
    fi
    name=${record%%=*}
    if [[ $record != *=* || ! $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
        echo "kitebox entry: a record on stdin is not NAME=value" >&2
        exit 95
    fi
    export "$name=${record#*=}"
done
unset record name
if [[ $terminated != 1 ]]; then
    echo "kitebox entry: stdin ended before the end of the secrets (kitebox stopped?)" >&2
    exit 95
fi

hooks=$(mktemp -d "${TMPDIR:-/tmp}/kitebox-hooks.XXXXXX")
operator=${KITEBOX_OPERATOR_HOOKS_PATH:-}
if [[ -n $operator && -d $operator ]]; then
    for hook in "$operator"/*; do
        if [[ -f $hook ]]; then ln -s "$hook" "$hooks/${hook##*/}"; fi
    done
fi
for name in environment pre-checkout post-checkout; do
    rm -f "$hooks/$name"
    printf '# kitebox box mode (entry.sh)\n. %q %q\n' "$lib/hook.sh" "$name" >"$hooks/$name"
done
export BUILDKITE_HOOKS_PATH=$hooks
unset hooks operator hook name terminated

if [[ -d /run/kitebox/bin ]]; then
    export PATH="/run/kitebox/bin:$PATH"
fi
exec "$@" </dev/null
