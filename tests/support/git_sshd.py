"""The git server over ssh lives in the package (the demo's embedded default uses it too);
tests import it from here."""

from kitebox.demo.gitserver import SSHD_PATH, GitSshServer, SshAgent, generate_ed25519

__all__ = ["GitSshServer", "SshAgent", "generate_ed25519", "SSHD_PATH"]
