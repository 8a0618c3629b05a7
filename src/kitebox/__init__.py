"""kitebox: per-job secrets, deploy keys and AWS roles for Buildkite on AWS, decided on the host."""

__version__ = "0.1.0"
