"""
vmsnap's CloudStack-compatible HTTP API (``vmsnap serve``): CloudStack's query API at
``/client/api``, signed as CloudStack signs it, with async jobs kept in the event log.
"""
