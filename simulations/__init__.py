"""Discrete-event simulator driving the node's real pure cores. Not built yet."""
