"""The libp2p adapter across real NATs (tests/natlab.py, root): a member behind a
home-router NAT reserves a slot on the public member's relay and is reached through it
by a member at another site; behind port-preserving (cone-like) NATs DCUtR turns the
connection direct within seconds and new streams take it; behind --random-fully
(symmetric-like) NATs it stays relayed and still carries verified transfers. Each host
is its own process in its own namespace (``natpeer.py``).
"""

from __future__ import annotations

import sys

import natlab
import pytest

pytestmark = pytest.mark.slow

SIZE = 2 * 2**20


@pytest.fixture(scope="module")
def lab_ok() -> None:
    reason = natlab.unavailable()
    if reason:
        pytest.skip(reason)


def test_cone_nat_a_relayed_connection_becomes_direct(lab_ok: None) -> None:
    with natlab.NatLab(random=False) as lab:
        out = natlab.relay_and_punch(lab, sys.executable, size=SIZE, wait=30)
        public_ip = lab.public_ip
    assert out["circuits"] and all(public_ip in c and "/p2p-circuit/" in c for c in out["circuits"])
    assert out["first"] == "relayed"  # A's own address is private: only the circuit works
    assert out["direct_after_s"] is not None and out["direct_after_s"] < 30, out
    assert out["second"] == "direct" and out["second_stream_relayed"] is False, out


def test_symmetric_nat_stays_relayed_and_transfers_verify(lab_ok: None) -> None:
    with natlab.NatLab(random=True) as lab:
        out = natlab.relay_and_punch(lab, sys.executable, size=SIZE, wait=12)
    assert out["first"] == "relayed"
    assert out["direct_after_s"] is None, out
    assert out["second"] == "relayed" and out["second_stream_relayed"] is True, out
    assert out["relayed_mb_s"] > 0 and out["second_mb_s"] > 0  # both transfers verified by SHA-256
