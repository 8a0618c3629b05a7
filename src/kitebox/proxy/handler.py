"""The proxy's request logic, pure: `handle(request, view, clock, config) -> Response`.

IMDS (169.254.169.254) as SDKs use it, and the container credentials endpoint (169.254.170.2),
per aws-credentials.md:
- `PUT /latest/api/token`: an IMDSv2 token minted here, HMAC-bound to the calling job's
  registration (generation and container), TTL 1..21600 echoed back (the Rust SDK needs the echo);
  anything else is 400, which makes botocore give up instead of falling back to IMDSv1.
- GETs carry that token; without one they are IMDSv1, answered only when the config allows it.
- `iam/security-credentials/` → the job's role NAME only; `.../<that name>` → the IMDS JSON;
  any other name, the instance role included, → 404. `iam/info` for the job's role.
- Region through all three SDK paths; a short allowlist forwarded upstream (the server adds a
  token and never an X-Forwarded-For); everything else (user-data above all) → 404.
- Requests carrying X-Forwarded-For are refused, as AWS's IMDS refuses them: a job must not be
  able to use some relay of its own to look like another caller.
- Container endpoint: `Host` must be 169.254.170.2 (no DNS-rebound page can send that), the
  `Authorization` header must equal the job's token (constant-time compare) AND the request must
  come from the job's address: credentials bound to a secret, not only to an address.
Credentials are served only with more than 25 minutes left (botocore's refresh arithmetic).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from kitebox.proxy.model import (
    ECS,
    IMDS,
    MIN_SERVED_SECONDS,
    Credentials,
    Forward,
    Job,
    RegistryView,
    Request,
    Response,
    Unavailable,
    iso,
)

TOKEN_TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
MAX_TOKEN_TTL = 21600
ECS_HOSTS = frozenset({"169.254.170.2", "169.254.170.2:80"})
ECS_PATH = "/v1/credentials"

# Forwarded to the upstream IMDS as they are: facts about the instance, no secrets, no roles.
DEFAULT_PASSTHROUGH = (
    "/latest/meta-data/instance-id",
    "/latest/meta-data/instance-type",
    "/latest/meta-data/ami-id",
    "/latest/meta-data/placement/availability-zone-id",
    "/latest/meta-data/services/domain",
    "/latest/meta-data/services/partition",
)


@dataclass(frozen=True)
class HandlerConfig:
    token_key: bytes  # HMAC key for IMDSv2 tokens; random per proxy, kept in the state file
    region: str = ""  # empty: region paths are forwarded upstream instead
    availability_zone: str = ""
    allow_imdsv1: bool = False
    passthrough: tuple[str, ...] = DEFAULT_PASSTHROUGH


def handle(request: Request, view: RegistryView, clock: Callable[[], float], config: HandlerConfig) -> Response:
    if request.header("x-forwarded-for") is not None:
        return _text(403, "Forbidden: X-Forwarded-For is not accepted", "refused")
    if request.endpoint == ECS:
        return _container_endpoint(request, view, clock)
    return _imds(request, view, clock, config)


# -- IMDS --------------------------------------------------------------------------------------


def _imds(request: Request, view: RegistryView, clock: Callable[[], float], config: HandlerConfig) -> Response:
    path = _path(request.target)
    if path is None:
        return _text(400, "Bad Request")
    if path == "/latest/api/token":
        if request.method != "PUT":
            return _text(405, "Method Not Allowed")
        return _mint_token(request, view, clock, config)
    if request.method not in ("GET", "HEAD"):
        return _text(405, "Method Not Allowed")
    job = view.job_at(request.source)
    token = request.header(TOKEN_HEADER)
    if token is not None:
        if job is None or not _token_valid(token, job, clock(), config.token_key):
            return _text(401, "Unauthorized", "refused")
    elif not config.allow_imdsv1:
        return _text(401, "Unauthorized: IMDSv1 is disabled, use IMDSv2 tokens", "refused")
    return _imds_path(path.rstrip("/") if path != "/" else path, path.endswith("/"), job, view, clock, config)


def _imds_path(
    path: str, slash: bool, job: Job | None, view: RegistryView, clock: Callable[[], float], config: HandlerConfig
) -> Response:
    creds_prefix = "/latest/meta-data/iam/security-credentials"
    if path == creds_prefix:
        if job is None or job.session is None:
            return _not_found(job)
        return _text(200, job.role_name or "", "role-name")
    if path.startswith(creds_prefix + "/") and not slash:
        name = path[len(creds_prefix) + 1:]
        if job is None or job.session is None or name != job.role_name:
            return _not_found(job)  # never the instance role, never another job's role
        found = _fresh(view.credentials(job), clock())
        if isinstance(found, Unavailable):
            return _text(500, f"kitebox: no credentials for role {job.role_name}: {found.reason}", "unavailable")
        return _IMDS_CREDENTIALS(found)
    if path == "/latest/meta-data/iam/info":
        if job is None or job.session is None:
            return _not_found(job)
        account = job.session.role_arn.split(":")[4]
        digest = hashlib.sha256(job.session.role_arn.encode()).hexdigest()[:17].upper()
        return _json(200, {
            "Code": "Success",
            "LastUpdated": iso(clock()),
            "InstanceProfileArn": f"arn:aws:iam::{account}:instance-profile/{job.role_name}",
            "InstanceProfileId": f"AIPA{digest}",
        }, "info")
    if config.region:
        if path == "/latest/meta-data/placement/region":
            return _text(200, config.region, "region")
        if path == "/latest/meta-data/placement/availability-zone":
            return _text(200, config.availability_zone or f"{config.region}a", "region")
        if path == "/latest/dynamic/instance-identity/document":
            # Region only: the document's other fields (account, instance) are the instance's.
            return _json(200, {
                "region": config.region,
                "availabilityZone": config.availability_zone or f"{config.region}a",
            }, "region")
    else:
        config = _with_region_paths(config)
    if path in config.passthrough:
        if job is None:
            return _not_found(None)
        return Response(200, forward=Forward(path), kind="forward")
    return _not_found(job)


def _with_region_paths(config: HandlerConfig) -> HandlerConfig:
    extra = (
        "/latest/meta-data/placement/region",
        "/latest/meta-data/placement/availability-zone",
        "/latest/dynamic/instance-identity/document",
    )
    return HandlerConfig(config.token_key, passthrough=config.passthrough + extra)


def _mint_token(request: Request, view: RegistryView, clock: Callable[[], float], config: HandlerConfig) -> Response:
    raw = request.header(TOKEN_TTL_HEADER)
    # isascii() too: str.isdigit() also takes '²', which int() then refuses.
    if raw is None or not _digits(raw.strip()) or not 1 <= int(raw.strip()) <= MAX_TOKEN_TTL:
        # 400, not 403/404: botocore falls back to IMDSv1 on those, and gives up on 400.
        return _text(400, "Bad Request: x-aws-ec2-metadata-token-ttl-seconds must be 1..21600")
    job = view.job_at(request.source)
    if job is None:
        return _text(403, "Forbidden: not a kitebox job", "refused")
    ttl = int(raw.strip())
    token = _sign(job, int(clock()) + ttl, config.token_key)
    return Response(200, token.encode(), headers=((TOKEN_TTL_HEADER, str(ttl)),), kind="token")


def _binding(job: Job) -> str:
    return f"{job.generation}.{job.container_id[:64]}"


def _sign(job: Job, expires: int, key: bytes) -> str:
    payload = f"{expires}.{_binding(job)}".encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return "kbx1-" + _b64(payload) + "." + _b64(mac)


def _token_valid(token: str, job: Job, now: float, key: bytes) -> bool:
    """Signed by this proxy, not expired, and minted for this very registration."""
    signed = _signed_payload(token, key)
    if signed is None:
        return False
    expires, binding = signed
    return expires > now and hmac.compare_digest(binding, _binding(job))


@functools.lru_cache(maxsize=4096)
def _signed_payload(token: str, key: bytes) -> tuple[int, str] | None:
    """(expiry, binding) of a token this key signed, else None. Memoised: SDKs reuse a token for
    hours, and the HMAC and base64 work is most of a warm request's cost (benchmarks/proxy.py)."""
    try:
        prefix, rest = token.strip().split("-", 1)
        encoded_payload, encoded_mac = rest.split(".")
        payload = _unb64(encoded_payload)
        mac = _unb64(encoded_mac)
    except ValueError:
        return None
    if prefix != "kbx1" or not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        return None
    expires, _, binding = payload.decode("ascii", "replace").partition(".")
    return (int(expires), binding) if _digits(expires) else None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("bad base64") from None


# -- container credentials endpoint ------------------------------------------------------------


def _container_endpoint(request: Request, view: RegistryView, clock: Callable[[], float]) -> Response:
    if (request.header("host") or "").lower() not in ECS_HOSTS:
        return _error(403, "BadHost", "the Host header must be 169.254.170.2")
    if request.method not in ("GET", "HEAD"):
        return _error(405, "MethodNotAllowed", "only GET")
    if _path(request.target) != ECS_PATH:
        return _error(404, "NotFound", f"kitebox serves credentials at {ECS_PATH}")
    presented = request.header("authorization")
    if not presented:
        return _error(401, "NoAuthorization", "the Authorization header is missing")
    job = view.job_at(request.source)
    if job is None or not hmac.compare_digest(presented.encode(), job.token.reveal().encode()):
        return _error(403, "Forbidden", "the Authorization token does not belong to this container")
    if job.refusal:
        return _error(403, "RoleRefused", job.refusal)
    if job.session is None:
        return _error(404, "NoRole", "this job asked for no AWS role (set KITEBOX_ROLE on the step)")
    found = _fresh(view.credentials(job), clock())
    if isinstance(found, Unavailable):
        return _error(500, "CredentialsUnavailable", found.reason)
    return _ECS_CREDENTIALS(found)


# The answers for one set of credentials never change: render each once (memoised; pure).
@functools.lru_cache(maxsize=1024)
def _IMDS_CREDENTIALS(found: Credentials) -> Response:  # noqa: N802 - reads as the constant it is
    return _json(200, {
        "Code": "Success",
        "LastUpdated": iso(found.last_updated),
        "Type": "AWS-HMAC",
        "AccessKeyId": found.access_key_id,
        "SecretAccessKey": found.secret_access_key.reveal(),
        "Token": found.token.reveal(),
        "Expiration": iso(found.expiration),
    }, "credentials")


@functools.lru_cache(maxsize=1024)
def _ECS_CREDENTIALS(found: Credentials) -> Response:  # noqa: N802
    return _json(200, {
        "AccessKeyId": found.access_key_id,
        "SecretAccessKey": found.secret_access_key.reveal(),
        "Token": found.token.reveal(),
        "Expiration": iso(found.expiration),
        "RoleArn": found.role_arn,
        "AccountId": found.role_arn.split(":")[4],
    }, "credentials")


# -- helpers -----------------------------------------------------------------------------------


def _fresh(found: Credentials | Unavailable, now: float) -> Credentials | Unavailable:
    if isinstance(found, Credentials) and found.expiration - now <= MIN_SERVED_SECONDS:
        return Unavailable("the cached credentials have 25 minutes or less left and no refresh succeeded")
    return found


def _path(target: str) -> str | None:
    """The path of a request target, or None if it is not an absolute path with no '..'."""
    if not target.startswith("/") or any(c in target for c in "\r\n\x00 "):
        return None
    path = urlsplit(target).path
    if "/../" in path + "/" or "/./" in path + "/" or "//" in path:
        return None
    return path


def _not_found(job: Job | None) -> Response:
    if job is not None and job.refusal:
        return _text(404, job.refusal, "refused")
    return _text(404, "Not Found", "not-found")


def _text(status: int, text: str, kind: str = "other") -> Response:
    return Response(status, text.encode("utf-8"), kind=kind)


def _json(status: int, document: dict, kind: str) -> Response:
    return Response(status, json.dumps(document, indent=2).encode(), "application/json", kind=kind)


def _error(status: int, code: str, message: str) -> Response:
    kind = "credentials-error" if status == 500 else "refused"
    return _json(status, {"code": code, "message": message}, kind)


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit() also takes '²' and '٣', which int() refuses or misreads)."""
    return text.isascii() and text.isdigit()
