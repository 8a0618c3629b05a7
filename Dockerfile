# kitebox's own image, for operators who run the metadata proxy as a container instead of the
# systemd unit (bootstrap/kitebox-proxy.service). Every other kitebox command runs in it too.
#
#   docker build -t kitebox/kitebox:test .          # offline with the default BASE (see PACKAGES)
#   docker run --rm kitebox/kitebox:test iam-policy --trust-policy --stack-role-arn ARN
#
# Running the proxy (it owns the host's metadata redirect, so it is host-level software; the
# container packages it, it does not sandbox it):
#   docker run -d --name kitebox-proxy --restart always \
#     --network host \            # binds on the job network's gateway, reaches the real IMDS for the
#                                 # instance role, and its iptables rules live in the host's netns
#     --pid host \                # maps a request's source address to a job through pidfds and
#                                 # /proc/<pid>/net of the job's processes (proxy/registry.py)
#     --cap-drop ALL --cap-add NET_ADMIN \   # NET_ADMIN: iptables (nat redirect, filter rejects)
#     -v /run/kitebox:/run/kitebox \          # state and the admin socket box mode registers jobs on
#     -v /var/run/docker.sock:/var/run/docker.sock \   # Docker events and labels (proxy/docker.py):
#                                 # root-equivalent on the host, which the proxy is anyway
#     kitebox/kitebox:test proxy serve
# Not checked here: whether the proxy's /proc reads need CAP_SYS_PTRACE in a given kernel, and
# that the image's iptables flavour (nft or legacy) matches the host's; the systemd unit avoids both.
#
# BASE: the registry-free Debian bookworm image of images/build-base-image.sh by default; any
# Debian bookworm image works (apt then installs what is missing). kitebox goes into a venv that
# sees Debian's python3-boto3 etc. (--system-site-packages), copied from the build context, so
# neither pip nor PyPI is needed. PACKAGES the base lacks are installed with apt when the Debian
# archive answers; offline they are listed in /opt/kitebox/missing-packages and the entry point
# refuses `proxy` with that list (python3-cryptography only matters to `kitebox keys`).
ARG BASE=kitebox/base:bookworm
FROM ${BASE}

ARG PACKAGES="iptables python3-docker python3-cryptography"
ARG REQUIRED="python3 python3-boto3"

RUN set -eu; \
    installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'; }; \
    missing=""; \
    for p in $REQUIRED $PACKAGES; do installed "$p" || missing="$missing $p"; done; \
    if [ -n "$missing" ]; then \
        # apt-get update exits 0 when the archive cannot be reached, so the install decides.
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive \
              apt-get install -y -q --no-install-recommends $missing; } >/tmp/apt.log 2>&1 \
            || echo "WARNING: apt could not install:$missing (offline?); see the list below" >&2; \
        rm -rf /var/lib/apt/lists/* /tmp/apt.log; \
    fi; \
    for p in $REQUIRED; do installed "$p" || { echo "ERROR: $p is required" >&2; exit 1; }; done; \
    mkdir -p /opt/kitebox; \
    still=""; \
    for p in $PACKAGES; do installed "$p" || still="$still $p"; done; \
    printf '%s\n' "${still# }" > /opt/kitebox/missing-packages

COPY pyproject.toml /opt/kitebox/src/pyproject.toml
COPY src/kitebox /opt/kitebox/src/kitebox
COPY bootstrap/docker-entry.sh /usr/local/bin/kitebox-entry

# What `pip install .` would do for this pure-Python package, without pip: the package into the
# venv's site-packages, its metadata, and the console script.
RUN set -eu; \
    python3 -m venv --without-pip --system-site-packages /opt/kitebox/venv; \
    site=$(/opt/kitebox/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' /opt/kitebox/src/pyproject.toml); \
    cp -a /opt/kitebox/src/kitebox "$site/kitebox"; \
    info="$site/kitebox-$version.dist-info"; \
    mkdir -p "$info"; \
    printf 'Metadata-Version: 2.1\nName: kitebox\nVersion: %s\n' "$version" > "$info/METADATA"; \
    printf '[console_scripts]\nkitebox = kitebox.cli:main\n' > "$info/entry_points.txt"; \
    printf 'kitebox Dockerfile\n' > "$info/INSTALLER"; \
    printf '#!/opt/kitebox/venv/bin/python\nimport sys\nfrom kitebox.cli import main\nsys.exit(main())\n' \
        > /opt/kitebox/venv/bin/kitebox; \
    chmod 755 /opt/kitebox/venv/bin/kitebox /usr/local/bin/kitebox-entry; \
    rm -rf /opt/kitebox/src; \
    /opt/kitebox/venv/bin/python -m compileall -q "$site/kitebox"; \
    /opt/kitebox/venv/bin/kitebox --version

LABEL org.opencontainers.image.title="kitebox" \
      org.opencontainers.image.description="kitebox: per-job secrets, deploy keys and AWS roles for Buildkite on AWS"
# root: iptables and the proxy's /proc checks need it (with the capabilities above only).
USER root
ENTRYPOINT ["/usr/local/bin/kitebox-entry"]
CMD ["--help"]
