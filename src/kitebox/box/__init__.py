"""Box mode: `kitebox job` runs each Buildkite job's real bootstrap in its own container.

The agent's `bootstrap-script` points at `kitebox job`. kitebox decides on the HOST, with the
instance role the job never sees, what the job may have (the same core as hook mode), then runs
the inner bootstrap in a container that holds only that.

Where is ...
- the operator's box settings, the image choice, grace periods?   config.py
- the container's environment, mounts, limits (pure)?              spec.py
- the docker SDK calls (create, attach, start, stream, wait)?      container.py
- secret delivery over stdin, and the in-container entry step?     delivery.py, files/entry.sh
- the in-container hooks that switch ssh-agents?                   files/hook.sh
- ssh-agents started as the container user?                        agents.py
- the job network and its metadata firewall (iptables)?            network.py
- build and plugin directories on the host?                        paths.py
- who owns a container or an agent dir (pid, boot id)?             owner.py
- orphans after a SIGKILL?                                         reaper.py
- the cancel signal?                                               signals.py
- the whole job, in order?                                         job.py
- the `job` and `reap` subcommands?                                command.py
"""
