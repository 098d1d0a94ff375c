"""`upstream.Pools` counts the routes' references to each endpoint: a pool whose endpoint has
none is retired, then dropped; one that is referenced again revives. (No sockets here; the
end-to-end behaviour with real connections is in tests/interceptor/test_pools.py.)"""

from __future__ import annotations

from httpscale.interceptor.upstream import PoolLimits, Pools
from httpscale.routing.spec import Endpoint

A = Endpoint("127.0.0.1", 1)
B = Endpoint("127.0.0.1", 2)
LIMITS = PoolLimits(max_idle=4, max_total=8, max_connecting=2, idle_timeout=5.0,
                    connect_timeout=1.0, write_high_water=65536, write_low_water=16384,
                    max_head=65536)


async def test_references_retire_and_revive_pools() -> None:
    pools = Pools(LIMITS)
    pools.use([A, A, B])  # two routes use A, one uses B
    a, b = pools.get(A), pools.get(B)
    assert not a.retired and not b.retired and len(pools) == 2
    assert pools.referenced() == {A, B}
    pools.unuse([A])
    assert not a.retired, "one route still uses A"
    pools.unuse([A, B])
    # Nothing open, nothing waiting: both leave at once.
    assert a.retired and b.retired and len(pools) == 0
    assert pools.referenced() == set()


async def test_a_pool_for_an_unreferenced_endpoint_is_made_retired() -> None:
    pools = Pools(LIMITS)
    pool = pools.get(A)  # a request still running on an endpoint that left
    assert pool.retired
    assert pools.get(A) is pool, "kept until its connections end"
    pools.use([A])
    assert not pool.retired, "referenced again: revived"
    assert pools.get(A) is pool
