"""Bounds that two layers must agree on, declared once (a leaf: no synod imports).

The node refuses to promote a learner further behind than this, and the operator
waits for a learner to come this close before it asks: with two numbers the
operator could ask forever for a promotion the node keeps refusing.
"""

from __future__ import annotations

# A learner within this many entries of the leader's last index may be promoted.
PROMOTE_LAG_ENTRIES_MAX = 1000
