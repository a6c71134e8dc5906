"""Telemetry: the node agent, its on-disk buffer, and the platform's ingestion store."""
