"""`kitebox proxy`: per-job AWS credentials for job containers; the instance role is never exposed.

Where is ...
- the request answered (IMDS, container endpoint)?   handler.py (pure)
- a source address mapped to a job, safely?          registry.py
- STS called, cached, collapsed, refreshed?          credentials.py
- the HTTP server, the threads?                      server.py
- register / deregister, health, metrics?            admin.py (root-only socket, admin address)
- the iptables redirect?                             rules.py
- Docker events, labels, recovery after restart?     docker.py, state.py
- what box mode calls?                               client.py
- the daemon put together?                           daemon.py
"""
