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

Hooks in the container. The agent reads ONE global hooks directory, BUILDKITE_HOOKS_PATH (the
contract knows no second one), so the entry step builds a per-job directory in the container's
/tmp and points BUILDKITE_HOOKS_PATH at it: `environment`, `pre-checkout` and `post-checkout`
source kitebox's shim (files/hook.sh), which switches SSH_AUTH_SOCK exactly as hook mode does
and sources the operator's hook of the same name inside it (operator's environment first, then
kitebox's socket; kitebox's pre-checkout switch first, then the operator's; operator's
post-checkout first, then the switch back); every other operator hook is a symlink to the
original. The operator's directory is KITEBOX_JOB_HOOKS_PATH, by default BUILDKITE_HOOKS_PATH,
mounted read-only at its host path; set it to a container-safe directory (or `none`) when the
host's hooks do host things (hook mode's `kitebox hook ...`, the Elastic CI Stack's
environment hook). kitebox itself is not in the image: the shim is plain bash.

Privileges. `kitebox job` runs as root on the host: it manages iptables and starts the job's
ssh-agents as the container's uid. The job never runs on the host.
"""
