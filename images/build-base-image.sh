#!/usr/bin/env bash
# Build the local base image kitebox/base:bookworm without any container registry:
# debootstrap a minimal Debian bookworm from the same Debian mirror apt uses on this machine,
# add the buildkite-agent user, and `docker import` the tree.
#
# Usage: images/build-base-image.sh [--force] [--refresh]
#   --force    rebuild the image even if it is current (reuses the cached .deb tarball);
#              without it, an image whose key label differs (see below) is rebuilt anyway
#   --refresh  also download the packages again (implies --force)
#
# Environment:
#   KITEBOX_DEBIAN_MIRROR  Debian mirror URL; default: the first bookworm `deb` source found in
#                          /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources}
#   KITEBOX_BASE_IMAGE     image name (default kitebox/base:bookworm)
#   KITEBOX_CACHE_DIR      cache directory (default /var/cache/kitebox)
#
# Caches, so that a second run costs one `docker image inspect`, and a rebuild after
# `docker system prune -a` costs one `docker import`:
#   $KITEBOX_CACHE_DIR/debs-<key>.tgz    debootstrap --make-tarball output (the downloaded .debs)
#   $KITEBOX_CACHE_DIR/rootfs-<key>.tar  the finished root filesystem (what gets imported)
# The .deb key hashes what decides the download (suite, variant, arch, package list); the rootfs
# key adds what decides the tree (the user, RECIPE_VERSION).
set -euo pipefail

IMAGE=${KITEBOX_BASE_IMAGE:-kitebox/base:bookworm}
CACHE_DIR=${KITEBOX_CACHE_DIR:-/var/cache/kitebox}
SUITE=bookworm
VARIANT=minbase
PACKAGES=git,openssh-client,ca-certificates,python3,python3-boto3,procps
AGENT_USER=buildkite-agent
AGENT_UID=2000
AGENT_HOME=/var/lib/buildkite-agent
# Bump when the way the root filesystem is made changes, so old caches are not reused.
RECIPE_VERSION=2

log() { printf '[build-base-image] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

force=0
refresh=0
for arg in "$@"; do
    case $arg in
        --force) force=1 ;;
        --refresh) force=1; refresh=1 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown argument: $arg (see --help)" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
command -v docker >/dev/null || die "docker client not found"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info failed)"

ARCH=$(dpkg --print-architecture)
debs_key=$(printf '%s\n' "$SUITE" "$VARIANT" "$ARCH" "$PACKAGES" | sha256sum | cut -c1-16)
key=$(printf '%s\n' "$debs_key" "$RECIPE_VERSION" "$AGENT_USER:$AGENT_UID:$AGENT_HOME" \
        | sha256sum | cut -c1-16)
debs_tarball=$CACHE_DIR/debs-$debs_key.tgz
rootfs_tar=$CACHE_DIR/rootfs-$key.tar

# The image records its key as a label, so a changed package list or recipe rebuilds it.
image_is_current() {
    [[ $(docker image inspect --format '{{index .Config.Labels "org.kitebox.base.key"}}' \
            "$IMAGE" 2>/dev/null) == "$key" ]]
}
if [[ $force -eq 0 ]] && image_is_current; then
    log "$IMAGE is up to date (key $key); nothing to do (use --force to rebuild)"
    exit 0
fi

# Print the first bookworm (not -security/-updates) `deb` source apt is configured with here,
# from both the one-line format (*.list) and the deb822 format (*.sources).
discover_mirror() {
    local f
    local -a list_files=() deb822_files=()
    [[ -f /etc/apt/sources.list ]] && list_files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list; do [[ -f $f ]] && list_files+=("$f"); done
    for f in /etc/apt/sources.list.d/*.sources; do [[ -f $f ]] && deb822_files+=("$f"); done
    if [[ ${#list_files[@]} -gt 0 ]]; then
        awk -v suite="$SUITE" '
            /^[[:space:]]*deb[[:space:]]/ {
                i = 2
                if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "${list_files[@]}"
    fi
    if [[ ${#deb822_files[@]} -gt 0 ]]; then
        awk -v suite="$SUITE" '
            function flush() {
                if (types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && enabled != "no" \
                    && (" " suites " ") ~ (" " suite " ") && uri != "") { print uri; found = 1; exit }
                types = ""; suites = ""; uri = ""; enabled = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            tolower($1) == "types:" { $1 = ""; types = $0 }
            tolower($1) == "suites:" { $1 = ""; suites = $0; gsub(/[[:space:]]+/, " ", suites) }
            tolower($1) == "uris:" { uri = $2 }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }' "${deb822_files[@]}"
    fi
}

if [[ -z ${KITEBOX_DEBIAN_MIRROR:-} ]]; then
    discovered=$(discover_mirror | head -n1 || true)
    [[ -n $discovered ]] && log "Debian mirror from apt's sources: $discovered"
    KITEBOX_DEBIAN_MIRROR=${discovered:-http://deb.debian.org/debian}
fi
MIRROR=$KITEBOX_DEBIAN_MIRROR

# debootstrap downloads with wget, which reads *_proxy; reuse apt's proxy if it has one.
eval "$(apt-config shell apt_http_proxy Acquire::http::Proxy apt_https_proxy Acquire::https::Proxy)"
if [[ -n ${apt_http_proxy:-} && -z ${http_proxy:-} ]]; then export http_proxy=$apt_http_proxy; fi
if [[ -n ${apt_https_proxy:-} && -z ${https_proxy:-} ]]; then export https_proxy=$apt_https_proxy; fi

mkdir -p "$CACHE_DIR"
# Serialise concurrent builds (parallel test sessions may all call this at once).
exec 9>"$CACHE_DIR/build.lock"
flock 9
if [[ $force -eq 0 ]] && image_is_current; then
    log "$IMAGE was built by a concurrent run; nothing to do"
    exit 0
fi

workdir=$(mktemp -d /var/tmp/kitebox-rootfs.XXXXXX)
cleanup() {
    # A failed debootstrap can leave /proc or /sys mounted inside the tree.
    local m
    for m in proc sys dev/pts; do
        mountpoint -q "$workdir/rootfs/$m" 2>/dev/null && umount -l "$workdir/rootfs/$m"
    done
    rm -rf "$workdir"
}
trap cleanup EXIT

if [[ $refresh -eq 1 ]]; then
    rm -f "$debs_tarball" "$debs_tarball.mirror"
fi

# No network for anything that runs in the chroot: the unpack must work from the tarball alone.
offline=()
if unshare --net true 2>/dev/null; then
    offline=(unshare --net)
fi

if [[ $force -eq 1 || ! -s $rootfs_tar ]]; then
    if [[ ! -s $debs_tarball ]]; then
        log "downloading packages from $MIRROR into $debs_tarball"
        start=$SECONDS
        debootstrap --variant="$VARIANT" --arch="$ARCH" --include="$PACKAGES" \
            --make-tarball="$workdir/debs.tgz" "$SUITE" "$workdir/download" "$MIRROR" \
            >"$workdir/debootstrap-download.log" 2>&1 \
            || { tail -n 30 "$workdir/debootstrap-download.log" >&2; die "debootstrap --make-tarball failed"; }
        # The tarball's package lists are named after the mirror URL, so unpacking it needs
        # that same URL: keep it beside the tarball.
        printf '%s\n' "$MIRROR" >"$CACHE_DIR/.debs.mirror.tmp"
        cp "$workdir/debs.tgz" "$CACHE_DIR/.debs.tgz.tmp"
        mv "$CACHE_DIR/.debs.mirror.tmp" "$debs_tarball.mirror"
        mv "$CACHE_DIR/.debs.tgz.tmp" "$debs_tarball"
        log "downloaded in $((SECONDS - start)) s"
    else
        log "reusing cached packages $debs_tarball"
    fi
    tarball_mirror=$(cat "$debs_tarball.mirror" 2>/dev/null || printf '%s' "$MIRROR")

    log "debootstrap $SUITE ($VARIANT, +$PACKAGES) from the cached packages${offline:+, without network}"
    start=$SECONDS
    rootfs=$workdir/rootfs
    "${offline[@]}" debootstrap --variant="$VARIANT" --arch="$ARCH" --include="$PACKAGES" \
        --unpack-tarball="$debs_tarball" "$SUITE" "$rootfs" "$tarball_mirror" \
        >"$workdir/debootstrap.log" 2>&1 \
        || { tail -n 30 "$workdir/debootstrap.log" >&2; die "debootstrap failed"; }
    log "debootstrap done in $((SECONDS - start)) s"

    log "adding user $AGENT_USER (uid $AGENT_UID, home $AGENT_HOME)"
    chroot "$rootfs" /usr/sbin/groupadd --gid "$AGENT_UID" "$AGENT_USER"
    chroot "$rootfs" /usr/sbin/useradd --uid "$AGENT_UID" --gid "$AGENT_UID" \
        --home-dir "$AGENT_HOME" --create-home --shell /bin/bash "$AGENT_USER"

    # Trim what a container never needs and what would leak this host into the image;
    # Docker provides /etc/hosts, /etc/hostname and /etc/resolv.conf at run time.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log "$rootfs"/debootstrap
    rm -f "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf
    : >"$rootfs/etc/machine-id"
    # Documentation is dead weight in a job container; keep only the licences, and tell dpkg
    # to skip the same paths when a derived image installs more packages.
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/kitebox-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF

    log "writing root filesystem tarball $rootfs_tar"
    tar --numeric-owner --xattrs -C "$rootfs" -cf "$CACHE_DIR/.rootfs.tar.tmp" .
    mv "$CACHE_DIR/.rootfs.tar.tmp" "$rootfs_tar"
else
    log "reusing cached root filesystem $rootfs_tar"
fi

log "importing $rootfs_tar as $IMAGE"
start=$SECONDS
old_id=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL org.kitebox.base.key=$key" \
    --message "kitebox base image: debootstrap $SUITE $VARIANT +$PACKAGES" \
    - "$IMAGE" <"$rootfs_tar" >/dev/null
log "imported in $((SECONDS - start)) s"
if [[ -n $old_id && $old_id != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    # The replaced image is now untagged; drop it unless a container or child image uses it.
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi

# Drop stale caches from older package lists or recipes.
find "$CACHE_DIR" -maxdepth 1 \( \( -name 'debs-*' ! -name "debs-$debs_key.*" \) \
    -o \( -name 'rootfs-*.tar' ! -name "rootfs-$key.tar" \) \) -delete
log "built $IMAGE ($(docker image inspect --format '{{.Size}}' "$IMAGE") bytes)"
