"""The credential cache (credentials.py) and the registry's bookkeeping (registry.py), without Docker."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import pytest

from kitebox.core.roles import RoleSession
from kitebox.core.secret import Secret
from kitebox.proxy.credentials import REFRESH_WHEN_LEFT, CredentialCache, CredentialError
from kitebox.proxy.model import Credentials, Job, Unavailable
from kitebox.proxy.registry import Registry, _has_local

ROLE = "arn:aws:iam::111111111111:role/ci-deploy"
SESSION = RoleSession(ROLE, "buildkite-job-j1", "ada@example.com", (("buildkite:pipeline", "p"),))


def job(job_id="j1", address="172.30.0.2", container="c1" * 32, session=SESSION):
    return Job(job_id, container, address, Secret("t" * 20), session)


class Clock:
    def __init__(self, now=1_800_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


@dataclass
class FakeSts:
    clock: Clock
    delay: float = 0.0
    fail: str | None = None
    calls: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def assume(self, session, job_id, duration):
        with self.lock:
            self.calls.append((session.role_arn, job_id))
            n = len(self.calls)
        time.sleep(self.delay)
        if self.fail:
            raise CredentialError(self.fail)
        now = self.clock()
        return Credentials(f"ASIA{n:016d}", Secret(f"secret-{n}"), Secret(f"token-{n}"), now + duration, now, session.role_arn)


def make(delay=0.0, fail=None, **kwargs):
    clock = Clock()
    sts = FakeSts(clock, delay, fail)
    audit: list[dict] = []
    cache = CredentialCache(sts, audit.append, clock=clock, **kwargs)
    return cache, sts, clock, audit


class TestCredentialCache:
    def test_concurrent_misses_collapse_into_one_sts_call(self):
        """50 threads asking a cold cache at once cause exactly one STS call, and all get its answer."""
        cache, sts, _, _ = make(delay=0.2)
        results, barrier = [], threading.Barrier(50)

        def ask():
            barrier.wait()
            results.append(cache.get(job()))

        threads = [threading.Thread(target=ask) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert len(sts.calls) == 1
        assert len(results) == 50 and all(isinstance(r, Credentials) for r in results)
        assert len({r.access_key_id for r in results}) == 1

    def test_prefetch_makes_the_first_request_a_hit(self):
        """Registration prefetches: afterwards get() is a lookup and STS is not called again."""
        cache, sts, _, _ = make()
        cache.prefetch(job())
        assert cache.get_within(job(), 5) is True
        for _ in range(100):
            assert isinstance(cache.peek(job()), Credentials)
        assert len(sts.calls) == 1

    def test_keyed_by_role_job_and_session(self):
        """Two jobs on the same role get different credentials (kiam keys by session; lyft by ARN only)."""
        cache, sts, _, _ = make()
        a, b = cache.get(job("j1")), cache.get(job("j2", address="172.30.0.3", container="c2" * 32))
        other_session = cache.get(job("j1", session=RoleSession(ROLE, "buildkite-job-j1", "eve", ())))
        assert len({a.access_key_id, b.access_key_id, other_session.access_key_id}) == 3
        assert len(sts.calls) == 3

    def test_refreshed_ahead_and_always_more_than_25_minutes_left(self):
        """With 1 h credentials, renewal starts at 40 min left; what is served never has <= 25 min."""
        cache, sts, clock, _ = make(duration=3600)
        first = cache.get(job())
        clock.now += 3600 - REFRESH_WHEN_LEFT - 1
        assert cache.refresh_due() == 0
        clock.now += 2
        assert cache.refresh_due() == 1
        deadline = time.monotonic() + 5
        while cache.peek(job()).access_key_id == first.access_key_id and time.monotonic() < deadline:
            time.sleep(0.01)
        served = cache.peek(job())
        assert served.access_key_id != first.access_key_id
        assert served.expiration - clock.now > 25 * 60
        assert len(sts.calls) == 2

    def test_never_serves_25_minutes_or_less(self):
        """If renewal keeps failing, credentials at 25 min left stop being served (fail closed)."""
        cache, sts, clock, _ = make(duration=3600)
        cache.get(job())
        sts.fail = "AccessDenied: role trust policy changed"
        clock.now += 3600 - 25 * 60
        found = cache.get(job())
        assert isinstance(found, Unavailable) and "AccessDenied" in found.reason

    def test_sts_failure_is_an_audit_line_and_no_credentials(self):
        """STS refusing → Unavailable with the reason, one audit line naming job, role, session."""
        cache, _, _, audit = make(fail="AccessDenied: not authorized to perform sts:AssumeRole")
        found = cache.get(job())
        assert isinstance(found, Unavailable) and "AccessDenied" in found.reason
        assert [r["outcome"] for r in audit] == ["failed"]
        assert audit[0]["job"] == "j1" and audit[0]["role"] == ROLE
        assert audit[0]["session_name"] == "buildkite-job-j1" and audit[0]["source_identity"] == "ada@example.com"

    def test_failure_is_not_retried_in_a_tight_loop(self):
        """After a failure, requests get the error without a new STS call for a few seconds."""
        cache, sts, _, _ = make(fail="Throttling")
        for _ in range(20):
            cache.get(job())
        assert len(sts.calls) == 1

    def test_audit_line_never_holds_secret_parts(self):
        """The issue audit line names job, role, session, source identity and key id, never secrets."""
        cache, _, _, audit = make()
        creds = cache.get(job())
        line = json.dumps(audit)
        assert audit[0]["outcome"] == "issued" and audit[0]["access_key_id"] == creds.access_key_id
        assert creds.secret_access_key.reveal() not in line and creds.token.reveal() not in line

    def test_forget_drops_the_entry(self):
        """Deregistration forgets the job's credentials."""
        cache, _, _, _ = make()
        cache.get(job())
        cache.forget(job())
        assert cache.peek(job()) is None and len(cache) == 0

    def test_short_durations_are_refused(self):
        """A duration that leaves no room to refresh ahead of the 25-minute floor is a config error."""
        with pytest.raises(ValueError):
            make(duration=900)

    def test_no_role_means_no_sts_call(self):
        """A job without a role never reaches STS."""
        cache, sts, _, _ = make()
        cache.prefetch(job(session=None))
        assert isinstance(cache.get(job(session=None)), Unavailable) and sts.calls == []


class FakeOwnership:
    def __init__(self):
        self.dead: set[str] = set()
        self.moved: set[str] = set()
        self.attached: list = []

    def attach(self, job, pid):
        if pid <= 0:
            raise LookupError("no process")
        self.attached.append((job.container_id, job.generation))

    def alive(self, job):
        return job.container_id not in self.dead

    def holds(self, job):
        return self.alive(job) and job.container_id not in self.moved

    def detach(self, job):
        pass


class TestRegistry:
    def test_register_and_look_up_by_address_and_container(self):
        """A registration is found by its address and by its container id, with a generation."""
        registry = Registry(FakeOwnership())
        registered, replaced = registry.register(job(), pid=10)
        assert replaced == [] and registered.generation == 1
        assert registry.job_at("172.30.0.2") == registered
        assert registry.by_container("c1" * 32) == registered

    def test_new_container_on_the_same_address_replaces_the_old(self):
        """B registered on A's old address replaces A: lookups never return A again."""
        registry = Registry(FakeOwnership())
        a, _ = registry.register(job("a", container="a" * 64), pid=10)
        b, replaced = registry.register(job("b", container="b" * 64), pid=11)
        assert replaced == [a] and b.generation > a.generation
        assert registry.job_at("172.30.0.2").job_id == "b"
        assert registry.by_container("a" * 64) is None

    def test_dead_container_is_not_served_and_forgotten(self):
        """If the registered container has died, the lookup fails and the registration goes."""
        ownership = FakeOwnership()
        registry = Registry(ownership)
        registry.register(job(), pid=10)
        ownership.dead.add("c1" * 32)
        assert registry.job_at("172.30.0.2") is None
        assert registry.jobs() == []

    def test_container_that_lost_its_address_is_not_served(self):
        """A live container that no longer holds the address gets nothing at that address."""
        ownership = FakeOwnership()
        registry = Registry(ownership)
        registry.register(job(), pid=10)
        ownership.moved.add("c1" * 32)
        assert registry.job_at("172.30.0.2") is None

    def test_deregister_and_forget_container(self):
        """Deregistration and Docker's die event both remove the job."""
        registry = Registry(FakeOwnership())
        registry.register(job("a", container="a" * 64), pid=10)
        registry.register(job("b", address="172.30.0.3", container="b" * 64), pid=11)
        assert registry.deregister("a").job_id == "a"
        assert registry.forget_container("b" * 12).job_id == "b"
        assert registry.jobs() == []

    def test_refused_attach_registers_nothing(self):
        """If the container's process cannot be followed, the registration is refused whole."""
        registry = Registry(FakeOwnership())
        with pytest.raises(LookupError):
            registry.register(job(), pid=0)
        assert registry.jobs() == []


FIB_TRIE = b"""Local:
  +-- 0.0.0.0/0 3 0 5
     +-- 172.19.0.0/16 2 0 2
        +-- 172.19.0.0/30 2 0 2
           |-- 172.19.0.0
              /16 link UNICAST
           |-- 172.19.0.2
              /32 host LOCAL
        |-- 172.19.255.255
           /32 link BROADCAST
"""


@pytest.mark.parametrize(
    ("address", "local"),
    [("172.19.0.2", True), ("172.19.0.0", False), ("172.19.255.255", False), ("172.19.0.20", False), ("172.19.0", False)],
    ids=["own-address", "network", "broadcast", "longer-prefix", "partial"],
)
def test_fib_trie_local_address(address, local):
    """Only a '/32 host LOCAL' entry makes an address the namespace's own."""
    assert _has_local(FIB_TRIE, address) is local
