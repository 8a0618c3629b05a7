"""Box mode's fixtures (tests/box/conftest.py) for the fault and load tests here: a job network
of kitebox's own, an sshd on its gateway, the job image, and `World`, a job started the way the
agent starts a bootstrap-script."""

from tests.box.conftest import agent_bin, box_sshd, docker_client, job_image, job_network, keys, world  # noqa: F401
