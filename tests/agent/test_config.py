from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "ops.pub"
    path.write_text("-----BEGIN PUBLIC KEY-----\n")
    return path


def test_toml_with_environment_overrides(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'device_id = "fridge-1"\ntrusted_keys = ["{key}"]\ngroups = ["eu"]\n'
                    '[broker]\nurl = "mqtt://127.0.0.1:1883"\n')
    config = load_config(path, {"COLDCHAIN_BROKER__URL": "mqtts://broker.local:8883",
                                "COLDCHAIN_TELEMETRY_WINDOW_S": "30", "COLDCHAIN_GROUPS": "eu,beta",
                                "OTHER": "ignored", "COLDCHAIN_DB": "sqlite:///cloud.db",  # the cloud's, not ours
                                "COLDCHAIN_BROKER": "mqtt://elsewhere:1883", "COLDCHAIN_API_TOKEN": "x" * 20})
    assert config.device_id == "fridge-1" and config.groups == ["eu", "beta"]
    assert config.broker.tls and config.broker.host == "broker.local" and config.broker.port == 8883
    assert config.telemetry_window_s == 30.0


def test_yaml_and_every_problem_named(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(f"device_id: fridge/1\ntrusted_keys: [{key}, {tmp_path / 'missing.pub'}]\n"
                    "broker: {url: 'http://nope'}\ninference_interval_s: -1\nsurprise: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    text = str(info.value)
    for field in ("device_id", "trusted_keys", "broker.url", "inference_interval_s", "surprise"):
        assert f"  - {field}" in text, text
    assert "missing.pub" in text and "mqtt://host:1883" in text


def test_tls_client_cert_needs_both_files(tmp_path: Path, key: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="cert_file and key_file go together"):
        load_config(None, {"COLDCHAIN_DEVICE_ID": "d", "COLDCHAIN_TRUSTED_KEYS": str(key),
                           "COLDCHAIN_BROKER__CERT_FILE": str(cert)})


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("device_id = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {})


def test_local_api_trigger_and_inventory_settings(tmp_path: Path, key: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(f'device_id = "fridge-1"\ntrusted_keys = ["{key}"]\ndata_dir = "{tmp_path}"\n'
                    '[source]\ntrigger = "on_request"\n[local_api]\nmode = 0o640\n[inventory]\nenter = 0.6\n')
    config = load_config(path, {"COLDCHAIN_LOCAL_API__MODE": "0o600"})
    assert config.source.trigger == "on_request" and config.inventory.enter == 0.6
    assert config.socket_path == tmp_path / "agent.sock" and config.local_api.mode == 0o600
    assert load_config(path, {}).local_api.mode == 0o640
    with pytest.raises(ConfigError) as info:
        load_config(path, {"COLDCHAIN_INVENTORY__EXIT": "0.7", "COLDCHAIN_SOURCE__TRIGGER": "door"})
    assert "inventory.exit" in str(info.value) or "inventory:" in str(info.value)
    assert "source.trigger" in str(info.value)


def test_an_activation_window_is_explained_in_words(tmp_path: Path, key: Path) -> None:
    """Found writing `window = "2:00-5:00"`: the agent answered with its regular expression
    (`String should match pattern '^([01]\\d|2[0-3]):...'`); and `"02:00-02:00"` (a window that never
    opens, or always is: which?) was taken silently."""
    path = tmp_path / "agent.toml"
    for window in ("2:00-5:00", "02:00-02:00"):
        path.write_text(f'device_id = "f"\ntrusted_keys = ["{key}"]\n[activation]\nwindow = "{window}"\n')
        with pytest.raises(ConfigError) as refused:
            load_config(path, {})
        message = str(refused.value)
        assert "activation.window" in message and "pattern" not in message, message
        assert 'HH:MM-HH:MM, local time, 24 h (e.g. "02:00-05:00"' in message, message
