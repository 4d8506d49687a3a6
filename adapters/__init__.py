"""Adapters: the hypervisors, storage drivers and stores behind the domain ports."""
