#!/usr/bin/env bash
# kitebox on an Elastic CI Stack for AWS instance: the script `BootstrapScriptUrl` points at.
#
# The stack runs it as root at boot, after /etc/buildkite-agent/buildkite-agent.cfg is written and
# before the agent starts (buildkite-contract.md). It takes no arguments, so settings come from
# the environment: point BootstrapScriptUrl at a two-line wrapper that exports them and runs this
# script (README, "Operators").
#
# What it does, in this order (a failing step stops the script; nothing after it runs):
#   1. kitebox into $PREFIX/venv, from a wheel or a pinned version; `kitebox` on PATH
#   2. the queue's settings into /etc/kitebox/kitebox.env (every KITEBOX_* below)
#   3. box mode:  bootstrap-script="sudo -n /opt/kitebox/venv/bin/kitebox job" in the agent config
#                 (+ /etc/sudoers.d/kitebox: root, environment reset but for BUILDKITE_*/KITEBOX_*), the
#                 agent's unit loads kitebox.env, the metadata proxy's unit is enabled and started
#      hook mode: the hook shims in $PREFIX/hooks, sourced from the agent's hooks, and
#                 /var/lib/buildkite-agent/cfn-env (sourced by the environment hook) loads kitebox.env
#   4. the agent token, when KITEBOX_INSTALL_TOKEN_PARAMETER names its parameter
#
# Idempotent: every file is written to a temporary file in its own directory and renamed into
# place, and only when its content or mode differs, so a second run changes nothing and a
# failure leaves the previous agent config as it was.
#
# Install settings (none of these reaches kitebox.env):
#   KITEBOX_ROOT                     prefix for every path written (tests: a temporary directory);
#                                    when set, systemctl is not run unless SYSTEMCTL names one
#   KITEBOX_INSTALL_MODE             box (default) or hook
#   KITEBOX_INSTALL_WHEEL            a kitebox wheel file on this machine, or
#   KITEBOX_INSTALL_VERSION          a version to install from the package index (kitebox==VERSION)
#   KITEBOX_INSTALL_PIP_ARGS         extra pip arguments, e.g. "--no-index --find-links /srv/wheels"
#   KITEBOX_INSTALL_PREFIX           /opt/kitebox
#   KITEBOX_INSTALL_AGENT_CFG        /etc/buildkite-agent/buildkite-agent.cfg
#   KITEBOX_INSTALL_HOOKS_PATH       /etc/buildkite-agent/hooks
#   KITEBOX_INSTALL_CFN_ENV          /var/lib/buildkite-agent/cfn-env
#   KITEBOX_INSTALL_ENV_FILE         /etc/kitebox/kitebox.env
#   KITEBOX_INSTALL_SYSTEMD_DIR      /etc/systemd/system
#   KITEBOX_INSTALL_SUDOERS          /etc/sudoers.d/kitebox (box mode: `sudo kitebox job`, env reset)
#   KITEBOX_INSTALL_AGENT_USER       buildkite-agent (the user the agent runs as)
#   KITEBOX_INSTALL_AGENT_UNIT       buildkite-agent.service
#   KITEBOX_INSTALL_BIN_LINK         /usr/local/bin/kitebox
#   KITEBOX_INSTALL_PROXY_UNIT       the proxy's unit file to install (default: kitebox-proxy.service
#                                    next to this script; skipped with a note when absent)
#   KITEBOX_INSTALL_TOKEN_PARAMETER  SSM path or ARN of the agent token (see `kitebox agent-token`)
#   PYTHON, PIP, SYSTEMCTL           commands (python3; $PREFIX/venv/bin/pip; systemctl when
#                                    systemd runs here)
# Queue settings: every other exported KITEBOX_* variable (KITEBOX_BASE_PATH, KITEBOX_IMAGE,
# KITEBOX_AUDIT, ...) is written to kitebox.env. Values may not hold " \ $ ` or a newline, so the
# file reads the same to systemd's EnvironmentFile= and to the shell.
set -euo pipefail
# `... | write_file` must run write_file in this shell, so that it can record what it changed.
shopt -s lastpipe

log() { printf 'kitebox-install: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ROOT=${KITEBOX_ROOT:-}
ROOT=${ROOT%/}
MODE=${KITEBOX_INSTALL_MODE:-box}
PREFIX=${KITEBOX_INSTALL_PREFIX:-/opt/kitebox}
AGENT_CFG=${KITEBOX_INSTALL_AGENT_CFG:-/etc/buildkite-agent/buildkite-agent.cfg}
HOOKS_PATH=${KITEBOX_INSTALL_HOOKS_PATH:-/etc/buildkite-agent/hooks}
CFN_ENV=${KITEBOX_INSTALL_CFN_ENV:-/var/lib/buildkite-agent/cfn-env}
ENV_FILE=${KITEBOX_INSTALL_ENV_FILE:-/etc/kitebox/kitebox.env}
SYSTEMD_DIR=${KITEBOX_INSTALL_SYSTEMD_DIR:-/etc/systemd/system}
SUDOERS_FILE=${KITEBOX_INSTALL_SUDOERS:-/etc/sudoers.d/kitebox}
AGENT_USER=${KITEBOX_INSTALL_AGENT_USER:-buildkite-agent}
AGENT_UNIT=${KITEBOX_INSTALL_AGENT_UNIT:-buildkite-agent.service}
BIN_LINK=${KITEBOX_INSTALL_BIN_LINK:-/usr/local/bin/kitebox}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROXY_UNIT_SRC=${KITEBOX_INSTALL_PROXY_UNIT:-$SCRIPT_DIR/kitebox-proxy.service}
TOKEN_PARAMETER=${KITEBOX_INSTALL_TOKEN_PARAMETER:-}
WHEEL=${KITEBOX_INSTALL_WHEEL:-}
VERSION=${KITEBOX_INSTALL_VERSION:-}
PYTHON=${PYTHON:-python3}
VENV=$PREFIX/venv                 # as the agent sees it at run time
PIP=${PIP:-$ROOT$VENV/bin/pip}
KITEBOX_BIN=$ROOT$VENV/bin/kitebox
if [[ -z ${SYSTEMCTL+x} ]]; then
    # Never touch the host's systemd from a test root; on a host, only when systemd runs.
    SYSTEMCTL=
    if [[ -z $ROOT ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        SYSTEMCTL=systemctl
    fi
fi
MARK_BEGIN="# >>> kitebox (managed by kitebox bootstrap/install.sh; edits here are replaced) >>>"
MARK_END="# <<< kitebox <<<"
PHASES=(environment pre-checkout post-checkout pre-exit)
changed=()
temp_file=
trap '[[ -n $temp_file ]] && rm -f -- "$temp_file"' EXIT

# write_file PATH MODE: stdin becomes PATH (ROOT-prefixed by the caller), atomically and only if
# content or mode differ; the previous owner is kept (the agent reads its files as its own user).
write_file() {
    local path=$1 mode=$2 dir
    dir=$(dirname -- "$path")
    mkdir -p -- "$dir"
    temp_file=$(mktemp -- "$dir/.$(basename -- "$path").kitebox-XXXXXX")
    cat >"$temp_file"
    if [[ -f $path && ! -L $path ]] && cmp -s -- "$temp_file" "$path" \
            && [[ $(stat -c %a -- "$path") == "${mode#0}" ]]; then
        rm -f -- "$temp_file"
        temp_file=
        return 0
    fi
    chmod "$mode" "$temp_file"
    if [[ -e $path && $(id -u) -eq 0 ]]; then
        chown --reference="$path" -- "$temp_file"
    fi
    sync -- "$temp_file" 2>/dev/null || true
    mv -f -- "$temp_file" "$path"
    temp_file=
    changed+=("$path")
    log "wrote $path"
}

# current_mode PATH DEFAULT: the file's octal mode, or DEFAULT when it does not exist yet.
current_mode() {
    if [[ -e $1 ]]; then stat -c %a -- "$1"; else printf '%s\n' "$2"; fi
}

# set_cfg_line FILE KEY VALUE: KEY=VALUE replaces the first active KEY= line (later ones are
# dropped) or is appended; VALUE empty: remove KEY= lines whose value mentions "kitebox job".
set_cfg_line() {
    local file=$1 key=$2 value=$3 input=/dev/null
    if [[ -f $file ]]; then
        input=$file
    elif [[ -z $value ]]; then
        return 0  # nothing to remove from a file that is not there
    fi
    KEY=$key VALUE=$value awk '
        BEGIN { key = ENVIRON["KEY"]; value = ENVIRON["VALUE"]; done = 0 }
        $0 ~ "^[ \t]*" key "[ \t]*=" {
            if (value == "") { if (index($0, "kitebox job")) next; print; next }
            if (!done) { print key "=" value; done = 1 }
            next
        }
        { print }
        END { if (value != "" && !done) print key "=" value }
    ' "$input" | write_file "$file" "$(current_mode "$file" 600)"
}

# with_block FILE BODY: FILE's text without our marked block, plus the block with BODY (BODY
# empty: without it). Text outside the markers is never changed.
with_block() {
    local file=$1 body=$2
    if [[ -f $file ]]; then
        BEGIN_MARK=$MARK_BEGIN END_MARK=$MARK_END awk '
            $0 == ENVIRON["BEGIN_MARK"] { skip = 1; next }
            skip && $0 == ENVIRON["END_MARK"] { skip = 0; next }
            !skip { print }
        ' "$file"
    fi
    if [[ -n $body ]]; then
        printf '%s\n%s\n%s\n' "$MARK_BEGIN" "$body" "$MARK_END"
    fi
}

ensure_block() {  # FILE BODY MODE-IF-NEW [FIRST-LINE-IF-NEW]
    local file=$1 body=$2 mode=$3 first=${4:-} text
    if [[ -f $file ]]; then
        text=$(with_block "$file" "$body")
    else
        text=$( [[ -n $first ]] && printf '%s\n' "$first"; with_block "$file" "$body")
    fi
    printf '%s\n' "$text" | write_file "$file" "$(current_mode "$file" "$mode")"
}

remove_block() {  # FILE
    local file=$1 text
    if [[ ! -f $file ]] || ! grep -qxF -- "$MARK_BEGIN" "$file"; then
        return 0
    fi
    text=$(with_block "$file" "")
    printf '%s\n' "$text" | write_file "$file" "$(current_mode "$file" 644)"
}

remove_file() {
    if [[ -e $1 || -L $1 ]]; then
        rm -f -- "$1"
        changed+=("$1")
        log "removed $1"
    fi
}

# The hook shim, identical to hooks/<phase> in the kitebox repository (a test compares them), so
# that this one script is all BootstrapScriptUrl needs.
hook_shim() {
    cat <<EOF
#!/usr/bin/env bash
# kitebox hook mode: the agent sources this hook; kitebox prints shell to eval (messages on stderr).
# A refusal makes kitebox exit non-zero, which fails the job before anything else runs.
kitebox_shell="\$(kitebox hook $1)" || exit \$?
eval "\$kitebox_shell"
unset kitebox_shell
EOF
}

queue_settings() {
    local name value
    while IFS= read -r name; do
        case $name in KITEBOX_ROOT | KITEBOX_INSTALL_*) continue ;; esac
        value=${!name}
        if [[ $value == *[\"\\\$\`]* || $value == *$'\n'* ]]; then
            die "$name holds \" \\ \$ \` or a newline, which kitebox.env cannot carry"
        fi
        printf '%s="%s"\n' "$name" "$value"
    done < <(compgen -e | grep '^KITEBOX_' | LC_ALL=C sort)
}

# -- checks before anything is written ---------------------------------------------------------
case $MODE in box | hook) ;; *) die "KITEBOX_INSTALL_MODE must be box or hook, not '$MODE'" ;; esac
if [[ -n $WHEEL && -n $VERSION ]]; then
    die "set KITEBOX_INSTALL_WHEEL or KITEBOX_INSTALL_VERSION, not both"
elif [[ -n $WHEEL ]]; then
    [[ -f $WHEEL ]] || die "KITEBOX_INSTALL_WHEEL $WHEEL is not a file"
    package=$WHEEL
    stamp="wheel sha256:$(sha256sum -- "$WHEEL" | cut -d' ' -f1)"
elif [[ -n $VERSION ]]; then
    [[ $VERSION =~ ^[0-9A-Za-z.+!-]+$ ]] || die "KITEBOX_INSTALL_VERSION '$VERSION' is not a version"
    package="kitebox==$VERSION"
    stamp="version $VERSION"
else
    die "set KITEBOX_INSTALL_WHEEL (a wheel file) or KITEBOX_INSTALL_VERSION (a pinned version)"
fi
if [[ $MODE == box && -z ${KITEBOX_IMAGE:-} ]]; then
    die "box mode needs KITEBOX_IMAGE, the queue's job image"
fi
settings=$(queue_settings)
read -r -a pip_args <<<"${KITEBOX_INSTALL_PIP_ARGS:-}"

# -- 1. kitebox itself -------------------------------------------------------------------------
if [[ ! -x $ROOT$VENV/bin/python ]]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$ROOT$VENV"
    changed+=("$ROOT$VENV")
fi
if [[ $(cat -- "$ROOT$PREFIX/installed" 2>/dev/null || true) != "$stamp" ]]; then
    log "installing $package"
    "$PIP" install --disable-pip-version-check --no-input "${pip_args[@]}" "$package" >&2
    printf '%s\n' "$stamp" | write_file "$ROOT$PREFIX/installed" 644
fi
"$KITEBOX_BIN" --version >/dev/null || die "$VENV/bin/kitebox does not run after installing $package"
if [[ $(readlink -- "$ROOT$BIN_LINK" 2>/dev/null || true) != "$VENV/bin/kitebox" ]]; then
    mkdir -p -- "$(dirname -- "$ROOT$BIN_LINK")"
    ln -sfn -- "$VENV/bin/kitebox" "$ROOT$BIN_LINK"
    changed+=("$ROOT$BIN_LINK")
    log "linked $BIN_LINK"
fi

# -- 2. the queue's settings -------------------------------------------------------------------
{
    echo "# kitebox settings of this queue, written by kitebox bootstrap/install.sh."
    echo "# Read by systemd (EnvironmentFile=) and by the shell (set -a; . this file)."
    [[ -n $settings ]] && printf '%s\n' "$settings"
} | write_file "$ROOT$ENV_FILE" 644

# -- 3. the agent: box or hook mode ------------------------------------------------------------
sudoers_rule() {
    printf '# kitebox box mode, written by kitebox bootstrap/install.sh: the agent runs kitebox job\n'
    printf '# as root with a reset environment (no LD_PRELOAD, PYTHONPATH... from the job).\n'
    printf 'Defaults!%s env_reset, env_keep = "BUILDKITE_* KITEBOX_* AWS_REGION AWS_DEFAULT_REGION AWS_ENDPOINT_URL"\n' "$VENV/bin/kitebox"
    printf '%s ALL=(root) NOPASSWD: %s job\n' "$AGENT_USER" "$VENV/bin/kitebox"
}

dropin=$ROOT$SYSTEMD_DIR/$AGENT_UNIT.d/kitebox.conf
cfn_body="if [ -r $ENV_FILE ]; then set -a; . $ENV_FILE; set +a; fi"
if [[ $MODE == box ]]; then
    # Through sudo: the agent starts a bootstrap-script with the JOB's variables, so without
    # env_reset a pipeline could set LD_PRELOAD or PYTHONPATH for kitebox's own root process
    # (sudo is setuid: the loader ignores LD_PRELOAD for it too). Only the agent's BUILDKITE_*,
    # kitebox's settings and the AWS region/endpoint pass.
    set_cfg_line "$ROOT$AGENT_CFG" bootstrap-script "\"sudo -n $VENV/bin/kitebox job\""
    sudoers_rule | write_file "$ROOT$SUDOERS_FILE" 440
    printf '[Service]\nEnvironmentFile=%s\n' "$ENV_FILE" | write_file "$dropin" 644
    remove_block "$ROOT$CFN_ENV"
    for phase in "${PHASES[@]}"; do
        remove_block "$ROOT$HOOKS_PATH/$phase"
    done
else
    set_cfg_line "$ROOT$AGENT_CFG" bootstrap-script ""
    remove_file "$dropin"
    remove_file "$ROOT$SUDOERS_FILE"
    ensure_block "$ROOT$CFN_ENV" "$cfn_body" 644
    for phase in "${PHASES[@]}"; do
        hook_shim "$phase" | write_file "$ROOT$PREFIX/hooks/$phase" 755
        ensure_block "$ROOT$HOOKS_PATH/$phase" "source $PREFIX/hooks/$phase" 755 "#!/usr/bin/env bash"
    done
fi

# -- systemd -----------------------------------------------------------------------------------
proxy_unit=$ROOT$SYSTEMD_DIR/kitebox-proxy.service
if [[ $MODE == box ]]; then
    if [[ -f $PROXY_UNIT_SRC ]]; then
        write_file "$proxy_unit" 644 <"$PROXY_UNIT_SRC"
    else
        log "no proxy unit at $PROXY_UNIT_SRC: jobs get no AWS role until kitebox-proxy.service is installed"
    fi
fi
if [[ -n $SYSTEMCTL ]]; then
    for path in "${changed[@]}"; do
        if [[ $path == "$ROOT$SYSTEMD_DIR"/* ]]; then
            "$SYSTEMCTL" daemon-reload
            break
        fi
    done
    if [[ $MODE == box && -f $proxy_unit ]]; then
        "$SYSTEMCTL" enable --now kitebox-proxy.service
    fi
elif [[ ${#changed[@]} -gt 0 ]]; then
    log "systemctl not run (no systemd here, or KITEBOX_ROOT set without SYSTEMCTL)"
fi

# -- 4. the agent token ------------------------------------------------------------------------
if [[ -n $TOKEN_PARAMETER ]]; then
    "$KITEBOX_BIN" agent-token --parameter "$TOKEN_PARAMETER" --config "$ROOT$AGENT_CFG" >&2
fi

log "done: $MODE mode, ${#changed[@]} change(s)"
