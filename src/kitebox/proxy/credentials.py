"""STS behind a small interface, and the credential cache in front of it.

    Sts.assume(session, job_id, duration)   one STS call (AssumeRole, or AssumeRoleWithWebIdentity)
    CredentialCache                         keyed by (role, job, session parameters):
        prefetch(job)   at registration, so the job's first request is a cache hit
        get(job)        never calls STS on the warm path; a cold miss waits for the one
                        in-flight call (concurrent misses collapse into it), bounded by
                        `wait_seconds` (< botocore's 1 s IMDS timeout)
        refresh_due()   the refresher thread: renews ahead of expiry, so what is served always
                        has more than 25 minutes left (kiam #41/#270: never 15-minute credentials)
        forget(job)     at deregistration
STS failures are audit lines and `Unavailable` answers: fail closed, never a fallback role.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from kitebox.core.roles import RoleSession
from kitebox.core.secret import Secret
from kitebox.proxy.model import MIN_SERVED_SECONDS, Credentials, Job, Unavailable, iso

DEFAULT_DURATION = 3600  # AssumeRole's default; also the cap for chained roles
REFRESH_WHEN_LEFT = 40 * 60  # renew with 40 min left: 15 min of margin above the 25 min floor
MIN_DURATION = REFRESH_WHEN_LEFT + 5 * 60
RETRY_AFTER_FAILURE = 5.0


class CredentialError(Exception):
    """STS refused or could not be reached; the message names the call, never a secret."""


class Sts(Protocol):
    def assume(self, session: RoleSession, job_id: str, duration: int) -> Credentials:
        """Credentials for the session, or CredentialError."""


class BotoSts:
    """STS through botocore. Endpoint and region come from the proxy's own environment
    (AWS_ENDPOINT_URL points at moto in tests). `web_identity_dir`: optional mode where each
    job's Buildkite OIDC token is read from `<dir>/<job id>.jwt` (written by box mode, root-only)
    and exchanged with AssumeRoleWithWebIdentity, so the role's trust policy pins the pipeline
    itself (`agent.buildkite.com:sub`); that call takes no session tags and no SourceIdentity
    from us (they come from the token's claims)."""

    def __init__(self, client, web_identity_dir: Path | None = None):
        self._client = client
        self._web_identity_dir = web_identity_dir

    @classmethod
    def create(cls, timeout: float = 5.0, max_attempts: int = 3, web_identity_dir: Path | None = None,
               region: str | None = None) -> "BotoSts":
        from kitebox.adapters.aws import client_config, new_client

        # A region gives the regional STS endpoint (lower latency, no dependency on us-east-1).
        client = new_client("sts", client_config(max_attempts, timeout), region)
        return cls(client, web_identity_dir)

    def assume(self, session: RoleSession, job_id: str, duration: int) -> Credentials:
        import botocore.exceptions

        from kitebox.adapters.aws import describe_error

        try:
            if self._web_identity_dir is not None:
                token = (self._web_identity_dir / f"{job_id}.jwt").read_text().strip()
                answer = self._client.assume_role_with_web_identity(
                    RoleArn=session.role_arn, RoleSessionName=session.session_name,
                    WebIdentityToken=token, DurationSeconds=duration,
                )
                call = "AssumeRoleWithWebIdentity"
            else:
                kwargs = {
                    "RoleArn": session.role_arn,
                    "RoleSessionName": session.session_name,
                    "DurationSeconds": duration,
                }
                if session.tags:
                    kwargs["Tags"] = [{"Key": k, "Value": v} for k, v in session.tags]
                if session.source_identity:
                    kwargs["SourceIdentity"] = session.source_identity
                answer = self._client.assume_role(**kwargs)
                call = "AssumeRole"
        except OSError as error:
            raise CredentialError(f"cannot read the job's web identity token: {error.strerror}") from None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise CredentialError(f"STS call for {session.role_arn} failed: {describe_error(error)}") from None
        found = answer["Credentials"]
        return Credentials(
            access_key_id=found["AccessKeyId"],
            secret_access_key=Secret(found["SecretAccessKey"]),
            token=Secret(found["SessionToken"]),
            expiration=found["Expiration"].timestamp(),
            last_updated=time.time(),
            role_arn=session.role_arn,
        )


@dataclass
class _Entry:
    job: Job
    creds: Credentials | None = None
    error: str | None = None
    failed_at: float = 0.0
    fetching: threading.Event | None = None  # set when the in-flight call ends


class CredentialCache:
    def __init__(
        self,
        sts: Sts,
        audit: Callable[[dict], None],
        *,
        duration: int = DEFAULT_DURATION,
        clock: Callable[[], float] = time.time,
        wait_seconds: float = 0.8,
        workers: int = 8,
    ):
        if duration < MIN_DURATION:
            raise ValueError(f"credential duration must be at least {MIN_DURATION} s to refresh ahead of expiry")
        self._sts = sts
        self._audit = audit
        self._duration = duration
        self._clock = clock
        self._wait = wait_seconds
        self._lock = threading.Lock()
        self._entries: dict[tuple, _Entry] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kitebox-sts")
        self.sts_calls = 0
        self.sts_failures = 0

    @staticmethod
    def key(job: Job) -> tuple:
        assert job.session is not None
        return (job.session.role_arn, job.job_id, job.session)

    def prefetch(self, job: Job) -> None:
        if job.session is not None:
            self._start(job, wait=False)

    def peek(self, job: Job) -> Credentials | Unavailable | None:
        """Without blocking: fresh credentials, a recent STS failure, or None (get() would wait)."""
        if job.session is None:
            return Unavailable("no role")
        with self._lock:
            entry = self._entries.get(self.key(job))
            if entry is None:
                return None
            if entry.creds and entry.creds.expiration - self._clock() > MIN_SERVED_SECONDS:
                return entry.creds
            if entry.error and entry.fetching is None and self._clock() - entry.failed_at < RETRY_AFTER_FAILURE:
                return Unavailable(entry.error)
        return None

    def get(self, job: Job) -> Credentials | Unavailable:
        if job.session is None:
            return Unavailable("no role")
        with self._lock:
            entry = self._entries.get(self.key(job))
            if entry and entry.creds and entry.creds.expiration - self._clock() > MIN_SERVED_SECONDS:
                return entry.creds  # the warm path: a dict lookup under a lock
        event = self._start(job, wait=True)
        if event is not None:
            event.wait(self._wait)
        with self._lock:
            entry = self._entries.get(self.key(job))
            if entry and entry.creds and entry.creds.expiration - self._clock() > MIN_SERVED_SECONDS:
                return entry.creds
            if entry and entry.error:
                return Unavailable(entry.error)
        return Unavailable("credentials are still being fetched from STS; retry")

    def get_within(self, job: Job, seconds: float) -> bool | str:
        """Wait up to `seconds` for the job's credentials: True, or why there are none."""
        deadline = time.monotonic() + seconds
        while True:
            found = self.peek(job)
            if found is not None:
                return True if isinstance(found, Credentials) else found.reason
            event = self._start(job, wait=True)
            found = self.peek(job)
            if found is not None:
                return True if isinstance(found, Credentials) else found.reason
            left = deadline - time.monotonic()
            if left <= 0:
                return "still fetching from STS"
            if event is not None:
                event.wait(left)
            else:
                time.sleep(min(left, 0.05))

    def _start(self, job: Job, wait: bool) -> threading.Event | None:
        """Start one STS call for the job unless one is in flight; return what to wait on."""
        key = self.key(job)
        with self._lock:
            entry = self._entries.setdefault(key, _Entry(job))
            if entry.fetching is not None:
                return entry.fetching  # collapse: everyone waits on the one call
            if entry.creds and entry.creds.expiration - self._clock() > REFRESH_WHEN_LEFT:
                return None  # fresh, not yet due for renewal
            if entry.error and self._clock() - entry.failed_at < RETRY_AFTER_FAILURE and not entry.creds:
                return None  # STS just failed: answer the error instead of hammering it
            entry.fetching = threading.Event()
            event = entry.fetching
        self._pool.submit(self._fetch, key, entry)
        return event

    def _fetch(self, key: tuple, entry: _Entry) -> None:
        job = entry.job
        assert job.session is not None
        record = {
            "event": "kitebox.proxy.credentials",
            "job": job.job_id,
            "container": job.container_id[:12],
            "role": job.session.role_arn,
            "session_name": job.session.session_name,
            "source_identity": job.session.source_identity,
        }
        try:
            with self._lock:
                self.sts_calls += 1
            creds = self._sts.assume(job.session, job.job_id, self._duration)
        except Exception as error:  # CredentialError, or a bug: either way no credentials
            message = str(error) if isinstance(error, CredentialError) else f"internal error: {type(error).__name__}"
            with self._lock:
                self.sts_failures += 1
                entry.error, entry.failed_at = message, self._clock()
                entry.fetching, event = None, entry.fetching
            self._audit({**record, "outcome": "failed", "error": message, "time": iso(self._clock())})
            if event:
                event.set()
            return
        with self._lock:
            current = self._entries.get(key)
            if current is entry:  # not forgotten meanwhile
                entry.creds, entry.error = creds, None
            entry.fetching, event = None, entry.fetching
        self._audit({
            **record, "outcome": "issued", "access_key_id": creds.access_key_id,
            "expiration": iso(creds.expiration), "time": iso(self._clock()),
        })
        if event:
            event.set()

    def refresh_due(self) -> int:
        """Start a renewal for every entry with less than REFRESH_WHEN_LEFT; how many started."""
        now = self._clock()
        with self._lock:
            due = [
                e.job for e in self._entries.values()
                if e.fetching is None and (
                    (e.creds is not None and e.creds.expiration - now < REFRESH_WHEN_LEFT)
                    or (e.creds is None and now - e.failed_at >= RETRY_AFTER_FAILURE)
                )
            ]
        for job in due:
            self._start(job, wait=False)
        return len(due)

    def forget(self, job: Job) -> None:
        if job.session is None:
            return
        with self._lock:
            self._entries.pop(self.key(job), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def run_refresher(cache: CredentialCache, stop: threading.Event, interval: float = 15.0) -> None:
    """The refresher loop; runs in its own thread until `stop` is set."""
    while not stop.wait(interval):
        cache.refresh_due()
