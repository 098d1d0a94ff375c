"""`httpscale capacity`: how much one replica of an app serves before it stops keeping up.

Deliberately empty: `httpscale.capacity.run` (the locust process, under gevent) imports this
package, and must not pull in anything asyncio-based with it. Import the modules themselves.
"""
