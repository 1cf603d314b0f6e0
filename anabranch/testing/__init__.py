"""Test servers for your own graphs: an OpenAI-compatible endpoint that fails on demand (429s,
5xx, hangs, cut streams, quotas), and a graph that only calls the LLM, for measuring."""

from anabranch.testing.fault_server import FaultConfig, FaultServer, Quota

__all__ = ["FaultConfig", "FaultServer", "Quota"]
