"""``[network]`` and ``[relay]`` in config.toml (node/home.py): defaults, values, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from corestate.node.errors import ConfigError
from corestate.node.home import DEFAULT_CONFIG, Config


def load(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return Config.load(p)


def test_defaults_carry_backup_sized_circuits_and_upnp_on(tmp_path: Path) -> None:
    cfg = load(tmp_path, DEFAULT_CONFIG)
    assert cfg.listen_port == 0 and cfg.upnp is True
    assert cfg.relay_serve and cfg.relay_use and cfg.relays == 2 and cfg.hole_punch
    assert cfg.relay_circuit_bytes >= 1 << 30 and cfg.relay_circuit_duration >= 3600
    assert cfg.relay_circuit_rate == 10 << 20 and cfg.relayed_rate == 0  # the relay paces bulk traffic


def test_values_and_turning_things_off(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.replace("port = 0", "port = 4101").replace("upnp = true", "upnp = false")
    text = text.replace('circuit_bytes = "4 GiB"', 'circuit_bytes = "2 GiB"').replace(
        'circuit_duration = "2h"', 'circuit_duration = "90m"').replace(
        'circuit_rate = "10 MiB"', 'circuit_rate = "20 MiB"').replace("hole_punch = true", "hole_punch = false")
    cfg = load(tmp_path, text)
    assert (cfg.listen_port, cfg.upnp, cfg.hole_punch) == (4101, False, False)
    assert cfg.relay_circuit_bytes == 2 << 30 and cfg.relay_circuit_duration == 5400
    assert cfg.relay_circuit_rate == 20 << 20


@pytest.mark.parametrize("old,new", [
    ("port = 0", "port = 70000"),
    ("upnp = true", 'upnp = "yes"'),
    ("relays = 2", "relays = 99"),
    ('circuit_bytes = "4 GiB"', 'circuit_bytes = "1 KiB"'),
    ("hole_punch = true", "hole_punch = true\nrelay_everyone = true"),
])
def test_bad_values_are_refused(tmp_path: Path, old: str, new: str) -> None:
    assert old in DEFAULT_CONFIG
    with pytest.raises(ConfigError):
        load(tmp_path, DEFAULT_CONFIG.replace(old, new, 1))


@pytest.mark.parametrize("text", [
    "[chunking]\nmin_size = inf\n",  # TOML has inf and nan; int(inf) raised OverflowError
    "[mesh]\nk = -inf\n",
    '[mesh]\nquota_per_peer = "1e400"\n',  # _size: float("1e400") is inf
    '[restore]\nbuffer = "1e300 TiB"\n',
    "[packing]\npack_size = nan\n",
    "a = " + "[" * 5000 + "]" * 5000 + "\n",  # tomllib recursed into RecursionError
], ids=["inf", "-inf", "1e400", "1e300-TiB", "nan", "deep-arrays"])
def test_values_no_integer_can_hold_are_config_errors(tmp_path: Path, text: str) -> None:
    """Found by fuzzing (tests/fuzz, target config): these escaped Config.load as
    OverflowError or RecursionError instead of a ConfigError that says what to fix."""
    with pytest.raises(ConfigError):
        load(tmp_path, text)
