"""Thin adapters around the pure core: SSM/Secrets Manager, ssh-agent, audit sink.

Each translates its library's errors into kitebox errors at the edge (one line, no values).
"""
