"""Chaos experiments: one recorder that drives the Synod SDK and records a history, the
checkers' verdict over it, and the pure fault planner the injector Job runs.

* `synod.chaos.recorder`: KV register ops, lock acquire/fenced-write/release and ID
  generation through the SDK (so the SDK's retries are part of what is checked); used by
  the chaos recorder Job (``python -m synod.chaos.recorder``), the process-cluster tier
  and the operator e2e test;
* `synod.chaos.verdict`: the recorded history judged by `synod.checker`;
* `synod.chaos.faults`: which iptables rules (with expiry) make which partition shape.
"""
