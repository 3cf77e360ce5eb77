"""Rate limiting: pure algorithms, Envoy-style policies, the hash ring and the counter
store (sans-I/O; docs/ratelimit.md). The node serves them in
:mod:`synod.node.ratelimit_http`; the policies live in the replicated state
(:mod:`synod.services.ratelimit`)."""
