"""The moto server and latency proxy live in the package (the demo's embedded default uses them
too); tests import them from here."""

from kitebox.demo.localaws import FAKE_CREDENTIALS, LatencyProxy, MotoServer, free_port

__all__ = ["FAKE_CREDENTIALS", "LatencyProxy", "MotoServer", "free_port"]
