"""Trace-driven simulation of the scheduler on a virtual clock, and the LP optimum bound."""
