"""Which job is behind a source address, without the reused-address race.

The known failure (kiam #499, kube2iam #17/#178): container A dies, container B gets A's address,
and B's first request is answered with A's credentials because the proxy has not yet heard of
A's death. Events alone cannot close that window: they arrive asynchronously. So a lookup is
served only after the proxy has itself checked, AFTER the request's connection arrived, that the
registered container is still alive and still holds the address:

- alive: a pidfd on the container's init process, opened at registration (and checked against
  the process's cgroup, so a recycled pid cannot pass); a pidfd never refers to another process;
- holds the address: the address is a local /32 in that process's network namespace
  (/proc/<pid>/net/fib_trie), re-read after the pidfd said alive, then the pidfd checked again.

Why that is enough: if the peer P of a connection is not the registered container R, yet R holds
the address after the connection was made, then P released the address before that; TCP replies
go to the address, so they reach R's namespace (which has no such socket and resets it), never
P. So a connection that passes the check talks to R, and the check is cached per connection
(server.py) and per registration generation. Docker events (die, destroy, network disconnect)
and a sweeper still remove dead registrations promptly; they are housekeeping, not the guard.

Registrations carry a generation that grows with every registration, so a re-registration of an
address invalidates IMDSv2 tokens and per-connection checks made for the previous holder.
"""

from __future__ import annotations

import os
import select
import threading
import time
from dataclasses import replace
from typing import Protocol

from kitebox.proxy.model import Job


class Ownership(Protocol):
    def attach(self, job: Job, pid: int) -> None:
        """Start following the container's init process; raise LookupError if it is not the container's."""

    def holds(self, job: Job) -> bool:
        """Is the job's container alive and does it hold job.address, right now?"""

    def alive(self, job: Job) -> bool:
        """Is the job's container's init process alive?"""

    def detach(self, job: Job) -> None:
        """Stop following it."""


class ProcOwnership:
    """Ownership through pidfds and /proc (Linux >= 5.3, the proxy runs as root in the host pid ns)."""

    def __init__(self, proc: str = "/proc"):
        self._proc = proc
        self._lock = threading.Lock()
        self._followed: dict[tuple[str, int], tuple[int, int]] = {}  # (container, generation) -> (pidfd, pid)

    def attach(self, job: Job, pid: int) -> None:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError as error:
            raise LookupError(f"container {job.container_id[:12]} has no live init process ({error.strerror})") from None
        try:
            with open(f"{self._proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as handle:
                cgroup = handle.read()
        except OSError:
            cgroup = ""
        if job.container_id not in cgroup or not _alive(pidfd):
            os.close(pidfd)
            raise LookupError(f"process {pid} is not container {job.container_id[:12]}'s init process")
        with self._lock:
            old = self._followed.pop((job.container_id, job.generation), None)
            self._followed[(job.container_id, job.generation)] = (pidfd, pid)
        if old:
            os.close(old[0])

    def _get(self, job: Job) -> tuple[int, int] | None:
        with self._lock:
            return self._followed.get((job.container_id, job.generation))

    def alive(self, job: Job) -> bool:
        found = self._get(job)
        return found is not None and _alive(found[0])

    def holds(self, job: Job) -> bool:
        found = self._get(job)
        if found is None or not _alive(found[0]):
            return False
        pidfd, pid = found
        try:
            with open(f"{self._proc}/{pid}/net/fib_trie", "rb") as handle:
                table = handle.read()
        except OSError:
            return False
        # alive again after the read: the pid still named the same process while we read.
        return _has_local(table, job.address) and _alive(pidfd)

    def detach(self, job: Job) -> None:
        with self._lock:
            found = self._followed.pop((job.container_id, job.generation), None)
        if found:
            os.close(found[0])


def _alive(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)  # a pidfd turns readable when the process exits


def _has_local(fib_trie: bytes, address: str) -> bool:
    """Is `address` a local /32 in this /proc/<pid>/net/fib_trie?"""
    needle = f"|-- {address}\n".encode()
    start = 0
    while (at := fib_trie.find(needle, start)) != -1:
        start = at + len(needle)
        line_end = fib_trie.find(b"\n", start)
        if b"/32 host LOCAL" in fib_trie[start:line_end if line_end != -1 else None]:
            return True
    return False


class Registry:
    """Jobs by address and by container; thread-safe; lookups verified by `Ownership`."""

    def __init__(self, ownership: Ownership):
        self._ownership = ownership
        self._lock = threading.Lock()
        self._by_address: dict[str, Job] = {}
        self._by_container: dict[str, Job] = {}
        self._by_job: dict[str, Job] = {}
        self._generation = 0
        self._registered = threading.Condition()

    def register(self, job: Job, pid: int) -> tuple[Job, list[Job]]:
        """Add `job` with a fresh generation; return it and the registrations it replaced."""
        with self._lock:
            self._generation += 1
            job = replace(job, generation=self._generation)
        self._ownership.attach(job, pid)  # raises LookupError: nothing registered
        with self._lock:
            replaced = {
                id(j): j for j in (
                    self._by_address.get(job.address),
                    self._by_container.get(job.container_id),
                    self._by_job.get(job.job_id),
                ) if j is not None
            }
            for old in replaced.values():
                self._drop(old)
            self._by_address[job.address] = job
            self._by_container[job.container_id] = job
            self._by_job[job.job_id] = job
        for old in replaced.values():
            self._ownership.detach(old)
        with self._registered:
            self._registered.notify_all()
        return job, list(replaced.values())

    def wait_for(self, address: str, timeout: float) -> Job | None:
        """The registration at `address`, waiting up to `timeout` for one to arrive.

        A job's first request can beat its registration by a few milliseconds (box mode registers
        right after `docker start`); answering 404/403 then is kube2iam #136. Callers bound how
        many requests may wait at once."""
        deadline = time.monotonic() + timeout
        with self._registered:
            while (job := self._by_address.get(address)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._registered.wait(left)
        return job

    def _drop(self, job: Job) -> None:
        for index, key in ((self._by_address, job.address), (self._by_container, job.container_id),
                           (self._by_job, job.job_id)):
            if index.get(key) is job:
                del index[key]

    def deregister(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._by_job.get(job_id)
            if job:
                self._drop(job)
        if job:
            self._ownership.detach(job)
        return job

    def forget_container(self, container_id: str) -> Job | None:
        """A container died or left the network (Docker events): forget its job at once."""
        with self._lock:
            job = self._by_container.get(container_id)
            if job is None:  # events may carry the id in full; registrations too, but be lenient
                job = next((j for c, j in self._by_container.items() if c.startswith(container_id)), None)
            if job:
                self._drop(job)
        if job:
            self._ownership.detach(job)
        return job

    def lookup(self, address: str) -> Job | None:
        """The registration at `address`, NOT verified: callers verify with `verify`."""
        return self._by_address.get(address)  # a dict read is atomic under the GIL

    def verify(self, job: Job) -> bool:
        """Does the job's container hold its address now? A dead one is forgotten on the spot."""
        if self._ownership.holds(job):
            return True
        if not self._ownership.alive(job):
            with self._lock:
                if self._by_job.get(job.job_id) is job:
                    self._drop(job)
            self._ownership.detach(job)
        return False

    def job_at(self, address: str) -> Job | None:
        """Lookup and verification in one (no per-connection cache): what tests and admin use."""
        job = self.lookup(address)
        return job if job is not None and self.verify(job) else None

    def by_container(self, container_id: str) -> Job | None:
        return self._by_container.get(container_id)

    def by_job(self, job_id: str) -> Job | None:
        return self._by_job.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._by_job.values())

    def sweep(self) -> list[Job]:
        """Forget every registration whose container's init process has exited."""
        dead = [job for job in self.jobs() if not self._ownership.alive(job)]
        for job in dead:
            with self._lock:
                if self._by_job.get(job.job_id) is job:
                    self._drop(job)
            self._ownership.detach(job)
        return dead
