"""History checkers: linearizability (KV, register), locks and fencing, unique ids.

Pure code over recorded client histories; used by the deterministic simulator,
the process-cluster tests and the chaos jobs alike.
"""
