"""The cloud's configuration file: defaults without one, relative paths from its folder, and a
clear error (never a traceback) for an unknown key, a bad value or a bad group name."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import CloudConfig, load_config
from cloud.errors import CloudError


def test_config_file(tmp_path: Path) -> None:
    assert load_config(None) == CloudConfig()
    assert CloudConfig().retention.telemetry_days == 10 and CloudConfig().retention.events_days == 10
    assert (CloudConfig().retention.rollup_minutes_days, CloudConfig().retention.rollup_hours_days) == (10, 400)
    path = tmp_path / "etc" / "cloud.yaml"
    path.parent.mkdir()
    path.write_text("alerts:\n  webhooks:\n    - {name: ops, url: 'http://127.0.0.1:9/hook', kinds: [gate_failed]}\n"
                    "  retry: {max_attempts: 3}\n"
                    "bundles: {trusted_keys: [keys/release.pub], dir: bundles}\n"
                    "retention: {telemetry_days: 2, audit_days: null}\n"
                    "telemetry: {inventory: counts, groups: {kitchen-eu: 'off'}}\n"
                    "exports: {pseudonym_key_file: keys/p.key}\n")
    config = load_config(path)
    assert config.alerts.webhooks[0].kinds == ["gate_failed"] and config.alerts.retry.max_attempts == 3
    assert config.bundles.trusted_keys == [path.parent.resolve() / "keys" / "release.pub"]
    assert config.bundles.dir == path.parent.resolve() / "bundles"
    assert config.exports.pseudonym_key_file == path.parent.resolve() / "keys" / "p.key"
    assert (config.retention.telemetry_days, config.retention.audit_days) == (2, None)
    assert config.telemetry.inventory_for(["kitchen-eu", "x"]) == "off"
    assert config.telemetry.inventory_for(["x"]) == "counts"
    for bad, said in (("alerts: {webhoks: []}\n", "webhoks"), ("retention: {telemetry_days: -1}\n", "telemetry_days"),
                      ("retention: {rollup_minutes_days: 30, rollup_hours_days: 20}\n", "rollup_hours_days"),
                      ("telemetry: {groups: {'a/b': 'off'}}\n", "telemetry.groups"),
                      ("alerts: {webhooks: [{name: x, url: 'ftp://h'}]}\n", "url"), (": : :\n", "not valid")):
        path.write_text(bad)
        with pytest.raises(CloudError, match=said):
            load_config(path)
    with pytest.raises(CloudError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
