"""The embedded default: a local moto-backed AWS with sample secrets, ACLs and roles, and a
sample job run through kitebox. `kitebox demo` runs it; tests and benchmarks reuse the data."""
