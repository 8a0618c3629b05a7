# shellcheck shell=bash
# kitebox box mode's hook shim, sourced by the bootstrap as a global hook: `. hook.sh <name>`.
# It does inside the container what hook mode's `kitebox hook <name>` does on the host
# (src/kitebox/hook.py), around the operator's own hook of the same name:
#   environment    operator's hook, then SSH_AUTH_SOCK -> the global key's agent (plugin checkout)
#   pre-checkout   SSH_AUTH_SOCK -> the repo key's agent (old value kept aside), then operator's
#   post-checkout  operator's hook, then SSH_AUTH_SOCK back (unless KITEBOX_KEEP_REPO_KEY=true)
# Sourced: no `exit`, locals prefixed, and the last command must succeed.
__kitebox_hook=$1
__kitebox_operator=${KITEBOX_OPERATOR_HOOKS_PATH:+$KITEBOX_OPERATOR_HOOKS_PATH/$1}

if [[ $__kitebox_hook == pre-checkout && -n ${KITEBOX_REPO_SSH_AUTH_SOCK:-} ]]; then
    echo "kitebox: using the repository's deploy key for checkout" >&2
    export KITEBOX_SAVED_SSH_AUTH_SOCK=${SSH_AUTH_SOCK:--}
    export SSH_AUTH_SOCK=$KITEBOX_REPO_SSH_AUTH_SOCK
fi

if [[ -n $__kitebox_operator && -f $__kitebox_operator ]]; then
    # shellcheck disable=SC1090  # the operator's hook, known only at run time
    . "$__kitebox_operator"
fi

if [[ $__kitebox_hook == environment && -n ${KITEBOX_GLOBAL_SSH_AUTH_SOCK:-} ]]; then
    export SSH_AUTH_SOCK=$KITEBOX_GLOBAL_SSH_AUTH_SOCK
fi
if [[ $__kitebox_hook == post-checkout && -n ${KITEBOX_SAVED_SSH_AUTH_SOCK+set} \
      && ${KITEBOX_KEEP_REPO_KEY:-false} != true ]]; then
    if [[ $KITEBOX_SAVED_SSH_AUTH_SOCK == - ]]; then
        unset SSH_AUTH_SOCK
    else
        export SSH_AUTH_SOCK=$KITEBOX_SAVED_SSH_AUTH_SOCK
    fi
    unset KITEBOX_SAVED_SSH_AUTH_SOCK
fi
unset __kitebox_hook __kitebox_operator
