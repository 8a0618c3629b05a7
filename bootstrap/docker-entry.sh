#!/bin/sh
# Entry point of kitebox's own image (the root Dockerfile): run `kitebox ARGS...`.
# An image built offline from a base without the proxy's packages can still run every other
# command; the proxy is refused here in one line instead of failing on a missing module later.
set -eu
missing=$(cat /opt/kitebox/missing-packages 2>/dev/null || true)
if [ "${1:-}" = proxy ]; then
    for package in iptables python3-docker; do
        case " $missing " in
            *" $package "*)
                echo "kitebox: this image was built without $package, which the proxy needs; rebuild it" \
                     "with network access to the Debian archive, or from a base image that has it" >&2
                exit 1 ;;
        esac
    done
fi
exec /opt/kitebox/venv/bin/kitebox "$@"
