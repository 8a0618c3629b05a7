"""Repository URL → the repo slug that names its SSM namespace, and → a normal form for admission.

`BUILDKITE_REPO` is author-controlled: a slug must never escape its namespace (no `..`, no `/`,
no empty part, no control character), and user names or passwords in a URL are dropped and
never printed. Error messages therefore never echo the URL.

The slug keeps the seed plugin's format exactly (buildkite-contract.md lists its examples):
`<host>[-<port>]_<path with / and ~ as _>`, e.g. `github.com_a_b.git`, `github.com-22_a_b.git`;
unlike the seed, hyphenated hosts (`my-gitlab.example.com`) are kept whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kitebox.errors import BadInputError

_SCHEMES = {"ssh": 22, "git+ssh": 22, "ssh+git": 22, "https": 443, "http": 80, "git": 9418}
_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._~-]+$")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/]*)(?P<path>/.*)?$")
# scp-like: [user@]host:path, where host has no '/' (git's own rule for telling it from a path).
_SCP = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+):(?P<path>.+)$")
MAX_SLUG_LENGTH = 512


@dataclass(frozen=True)
class RepoLocation:
    """A parsed repository address: no user, no password, just where it is."""

    scheme: str  # "ssh" for scp-like addresses
    host: str
    port: int | None
    segments: tuple[str, ...]


def _refuse(reason: str) -> BadInputError:
    return BadInputError(f"BUILDKITE_REPO is not a repository URL kitebox can use: {reason}")


def parse_repo(url: str) -> RepoLocation:
    """Parse a git remote URL (https, ssh://, scp-like); raise BadInputError on anything unsafe."""
    if not url or not url.strip():
        raise _refuse("it is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in url):
        raise _refuse("it contains a control or space character")
    match = _URL.match(url)
    if match:
        scheme = match["scheme"].lower()
        if scheme not in _SCHEMES:
            raise _refuse(f"scheme {scheme!r} is not one of {', '.join(sorted(_SCHEMES))}")
        authority = match["authority"].rpartition("@")[2]  # drop user[:password]@
        host, port = _split_port(authority)
        path = match["path"] or ""
        if "?" in path or "#" in path:
            raise _refuse("it has a query or fragment")
    else:
        scp = _SCP.match(url)
        if not scp:
            raise _refuse("it is neither a URL (scheme://host/path) nor scp-like (user@host:path)")
        scheme, host, port, path = "ssh", scp["host"], None, scp["path"]
    host = host.lower()
    if host.startswith("["):
        raise _refuse("IPv6 literal hosts are not supported")
    if not _HOST.fullmatch(host) or ".." in host:
        raise _refuse("the host name is not a valid DNS name or address")
    return RepoLocation(scheme=scheme, host=host, port=port, segments=_segments(path))


def _split_port(authority: str) -> tuple[str, int | None]:
    host, sep, port = authority.rpartition(":")
    if not sep:
        return authority, None
    # ASCII digits only: str.isdigit() also takes '²' and '٢', and a huge number breaks int().
    if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise _refuse("the port is not a number from 1 to 65535")
    return host, int(port)


def _segments(path: str) -> tuple[str, ...]:
    trimmed = path.strip("/") if path.endswith("/") else path.lstrip("/")
    if not trimmed:
        raise _refuse("the repository path is empty")
    segments = tuple(trimmed.split("/"))
    for segment in segments:
        if segment in ("", ".") or ".." in segment:
            raise _refuse("the path has an empty or '.' part, or '..'")
        if not _SEGMENT.fullmatch(segment):
            raise _refuse("the path may only hold letters, digits and . _ ~ -")
    return segments


def repo_slug(url: str) -> str:
    """The seed plugin's repo slug, e.g. `git@github.com:a/b.git` → `github.com_a_b.git`."""
    where = parse_repo(url)
    head = where.host if where.port is None else f"{where.host}-{where.port}"
    slug = head + "_" + "_".join(s.replace("~", "_") for s in where.segments)
    if len(slug) > MAX_SLUG_LENGTH:
        raise _refuse(f"its slug would be longer than {MAX_SLUG_LENGTH} characters")
    return slug


def normalise_repo(url: str) -> str:
    """A form in which two URLs of the same repository compare equal (for `repository` admission).

    Scheme, user, a default port and a trailing `.git` do not matter; host case does not either.
    """
    where = parse_repo(url)
    port = "" if where.port in (None, _SCHEMES.get(where.scheme)) else f":{where.port}"
    path = "/".join(where.segments)
    if path.endswith(".git"):
        path = path[: -len(".git")]
    return f"{where.host}{port}/{path}"
