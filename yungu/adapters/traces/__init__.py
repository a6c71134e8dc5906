"""Readers for job traces, energy series and simulator scenarios (files in, plain values out)."""
