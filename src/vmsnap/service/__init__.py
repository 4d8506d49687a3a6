"""
The application service, in rooms: ``runtime`` (what they share: wiring, identity,
claims), ``commands`` (create, revert, delete), ``queries`` (the views), ``recovery``
and ``auditing``. :class:`vmsnap.Controller` is their facade.
"""
