"""The vmsnap domain: aggregates, the workflow machine, rules and ports. No I/O here."""
