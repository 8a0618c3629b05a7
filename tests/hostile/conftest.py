"""The proxy's fixtures (tests/proxy/conftest.py), for the isolation test here: a running proxy on
an --internal network with a loopback stand-in IMDS and moto's STS."""

from tests.proxy.conftest import job_network, proxy, running, standin_imds  # noqa: F401
