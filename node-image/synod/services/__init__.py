"""Replicated service state machines: kv, leases, sessions, and the node-local watch hub.

Everything here is sans-I/O and deterministic: no clock, no sockets, no threads. The
Raft node feeds committed entries to :class:`synod.services.state.ServiceStateMachine`.
"""
