"""Asking the router to forward our listen port (UPnP IGD, through miniupnpc).

``[network] upnp`` (on by default) lets a daemon behind a home router that offers UPnP
become reachable without a relay: the reachability service (``node/runtime/reach.py``)
asks for the mapping once at start and again at half its lease, and removes it on exit.
Whether the mapping works is not taken on the router's word: the members' dial-back
decides (the mapping keeps the port, so a dial-back to the address members see us at
tests it).

Blocking calls (SSDP discovery waits ``DISCOVER_MS``): run them in a worker thread.
No router, no UPnP, or no miniupnpc module: ``map_port`` returns None with the reason
logged, never raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("corestate.upnp")
DISCOVER_MS = 2000
LEASE = 3600
DESCRIPTION = "corestate"


@dataclass(frozen=True, slots=True)
class PortMapping:
    external_ip: str
    port: int
    lan_ip: str
    lease: int

    @property
    def addr(self) -> str:
        return f"/ip4/{self.external_ip}/tcp/{self.port}"


def _client() -> Any:
    import miniupnpc

    u = miniupnpc.UPnP()
    u.discoverdelay = DISCOVER_MS
    if u.discover() < 1:
        raise LookupError("no UPnP device answered")
    u.selectigd()  # raises when none of them is an internet gateway
    return u


def map_port(port: int, lease: int = LEASE) -> PortMapping | None:
    """Forward TCP ``port`` on the gateway to the same port here; None when it cannot."""
    try:
        u = _client()
        lan_ip = str(u.lanaddr)
        external = str(u.externalipaddress())
        if not u.addportmapping(port, "TCP", lan_ip, port, DESCRIPTION, "", lease):
            raise RuntimeError("the gateway refused the mapping")
    except ImportError:
        log.info("UPnP: the miniupnpc module is missing; no port mapping")
        return None
    except Exception as exc:  # miniupnpc raises plain Exception with the reason
        log.info("UPnP: no port mapping for %d: %s", port, exc)
        return None
    log.info("UPnP: the gateway forwards %s:%d to %s:%d", external, port, lan_ip, port)
    return PortMapping(external, port, lan_ip, lease)


def unmap_port(port: int) -> None:
    try:
        _client().deleteportmapping(port, "TCP")
    except Exception as exc:
        log.info("UPnP: could not remove the mapping of %d: %s", port, exc)


__all__ = ["PortMapping", "map_port", "unmap_port"]
