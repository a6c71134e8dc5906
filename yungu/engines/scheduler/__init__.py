"""Scheduling engine. ``schedule(snapshot) -> Plan``; see ``types``."""
