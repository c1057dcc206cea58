"""``[metrics]`` and ``[notify]`` in config.toml (node/home.py): defaults, values, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from corestate.node.errors import ConfigError
from corestate.node.home import DEFAULT_CONFIG, Config


def load(tmp_path: Path, text: str) -> Config:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return Config.load(p)


def test_the_default_config_has_no_endpoint_and_no_notification(tmp_path: Path) -> None:
    cfg = load(tmp_path, DEFAULT_CONFIG)
    assert cfg.metrics_listen == "" and cfg.notify_webhook == "" and cfg.notify_command == ""
    assert (cfg.notify_repeat_after, cfg.notify_max_per_hour, cfg.notify_timeout) == (21600, 20, 10)


def test_values_as_a_user_writes_them(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.replace('listen = ""', 'listen = "127.0.0.1:9184"').replace(
        'webhook = ""', 'webhook = "https://hooks.example.net/x"').replace(
        'command = ""', 'command = "logger -t corestate"').replace(
        'repeat_after = "6h"', 'repeat_after = "30m"').replace('timeout = "10s"', 'timeout = "3s"')
    cfg = load(tmp_path, text)
    assert cfg.metrics_listen == "127.0.0.1:9184"
    assert cfg.notify_webhook == "https://hooks.example.net/x" and cfg.notify_command == "logger -t corestate"
    assert cfg.notify_repeat_after == 1800 and cfg.notify_timeout == 3


@pytest.mark.parametrize("section, bad, why", [
    ("[metrics]\nlisten = \"9184\"\n", "listen", "HOST:PORT"),
    ("[metrics]\nlisten = \"localhost:99999\"\n", "listen", "HOST:PORT"),
    ("[metrics]\nport = 1\n", "port", "does not know"),
    ("[notify]\nwebhook = \"ftp://x\"\n", "webhook", "http:// or https://"),
    ("[notify]\nmax_per_hour = 0\n", "max_per_hour", "max_per_hour >= 1"),
    ("[notify]\ntimeout = \"1h\"\n", "timeout", "timeout <= 5m"),
    ("[notify]\nemail = \"me@x\"\n", "email", "does not know"),
])
def test_bad_values_are_refused_with_words(tmp_path: Path, section: str, bad: str, why: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, section)
    assert why in str(e.value)
