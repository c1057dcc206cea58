"""The discrete-event simulator (issue 16): durability, availability and repair traffic of a
mesh, computed by driving the node's own pure cores (scheduler, repair planner, placement,
holder book) on a simulated clock. See README.md and VALIDATION.md in this folder.

Imports only ``corestate.node.core``, ``protocol``, ``erasure`` and ``kernel.fake`` (an
import-linter contract): never the runtime, the engine or trio.
"""
