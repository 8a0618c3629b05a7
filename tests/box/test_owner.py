"""Owners of containers and agent dirs: alive only when boot, pid and start time all match."""

from __future__ import annotations

import os

import pytest

from kitebox.box.owner import Owner, boot_id, is_alive, start_time

ME = Owner(100, "5000", "boot-a")


class TestIsAlive:
    """The reaper's one question: does the kitebox process that made this still run?"""

    @pytest.mark.parametrize(
        "owner, boot, running, alive",
        [
            (ME, "boot-a", {100: "5000"}, True),
            (ME, "boot-b", {100: "5000"}, False),  # rebooted since
            (ME, "boot-a", {}, False),  # pid gone
            (ME, "boot-a", {100: "7777"}, False),  # pid reused by another process
            (Owner(100, "", "boot-a"), "boot-a", {100: "7777"}, True),  # no start time recorded
            (None, "boot-a", {100: "5000"}, False),  # unreadable labels
        ],
        ids=["same", "rebooted", "gone", "pid-reused", "no-start-time", "no-owner"],
    )
    def test_table(self, owner, boot, running, alive):
        """Any mismatch means orphan; nothing is guessed alive."""
        assert is_alive(owner, boot, running.get) is alive

    def test_this_process(self):
        """Owner.me() is alive, and its pid with another start time is not."""
        me = Owner.me()
        assert me.pid == os.getpid() and me.start == start_time(os.getpid())
        assert is_alive(me, boot_id())
        assert not is_alive(Owner(me.pid, "1", me.boot), boot_id())


class TestSerialisation:
    """Labels and the owner file round-trip; garbage reads as no owner."""

    def test_round_trips(self):
        """Owner → labels → Owner, Owner → JSON → Owner."""
        assert Owner.from_labels(ME.labels()) == ME
        assert Owner.from_json(ME.to_json()) == ME

    @pytest.mark.parametrize("labels", [{}, {"kitebox.pid": "x", "kitebox.boot-id": "b"}, {"kitebox.pid": "1"}])
    def test_bad_labels(self, labels):
        """Missing or non-numeric labels are no owner (so: an orphan)."""
        assert Owner.from_labels(labels) is None

    @pytest.mark.parametrize("text", ["", "{", "[]", '{"pid": "x", "start": 1, "boot": 2}'])
    def test_bad_json(self, text):
        """An unreadable owner file is no owner."""
        assert Owner.from_json(text) is None

    def test_start_time_of_a_name_with_spaces_and_parens(self):
        """/proc/<pid>/stat's command name may hold ') ': the field is read after the last one."""
        assert start_time(2**22 + 12345) is None
        assert start_time(os.getpid()).isdigit()
