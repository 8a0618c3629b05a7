"""A proxy restart loses no registration: recovered from the state file, confirmed by labels."""

from __future__ import annotations

import pytest

from kitebox.proxy import client
from tests.proxy.conftest import ROLE_A, docker, moto_sts, sdk, start_proxy
from tests.proxy.test_churn import module_proxy

pytestmark = [pytest.mark.docker, pytest.mark.moto]


class TestRestart:
    def test_restart_recovers_registrations(self, job_network, base_image, standin_imds, moto, tmp_path_factory):
        """Stop the proxy and start a new one on the same state dir: the running job gets its
        credentials again through both endpoints; a container whose labels no longer match the
        state (token hash) is not recovered."""
        first = module_proxy(job_network, base_image, standin_imds, moto, tmp_path_factory)
        try:
            job = first.start_job("restart-1", ROLE_A)
            other = first.start_job("restart-2", ROLE_A)
            assert sdk(job, "container")["method"] == "container-role"
            # restart-2's container is replaced by one with restart-2's labels but another token:
            # its token is in no state file, so it must not be recovered.
            docker("rm", "-f", other.container)
            first.containers.remove(other.container)
            impostor = first.start_job("restart-2", ROLE_A, register=False, ip=other.address)
            state_dir = first.proxy.config.state_dir
            first.proxy.stop()
            audit: list[dict] = []
            second = start_proxy(job_network, state_dir, standin_imds.url, audit, moto_sts(moto))
            try:
                assert second.registry.by_job("restart-1") is not None
                client.ensure_running(second.config.socket_path)
                via_container, via_imds = sdk(job, "container"), sdk(job, "imds")
                assert via_container["method"] == "container-role" and via_imds["method"] == "iam-role"
                assert second.registry.by_job("restart-2") is None
                dropped = [r for r in audit if r["event"] == "kitebox.proxy.not-recovered"]
                assert impostor.container[:12] in [r.get("container") for r in dropped]
                assert sdk(impostor, "imds")["method"] is None
            finally:
                second.stop()
        finally:
            first.cleanup()
