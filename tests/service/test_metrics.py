"""The service's metrics: the monitor's figures appear only when the history holds them."""

from __future__ import annotations

from datetime import UTC, datetime

from service.metrics import ServiceMetrics

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def check(value, flagged=False, skipped="") -> dict:
    return {"checked_at": AT, "value": value, "flagged": flagged, "skipped": skipped}


def test_no_history_no_monitor_gauges():
    text = ServiceMetrics().render().decode()
    assert "dieguard_escape_rate_24h" not in text and "dieguard_drift_flagged" not in text


def test_the_latest_check_becomes_gauges():
    metrics = ServiceMetrics()
    metrics.monitor.update(
        {
            "escape_rate": check(0.02, flagged=True),
            "fpr": check(None, skipped="no data"),
            "defective_labelled": check(150.0),
            "drift_process": check(1.4, flagged=True),
            "drift_notes": check(0.1),
            "drift_images": check(None, skipped="12 dies in the window"),
        }
    )
    text = metrics.render().decode()
    assert "dieguard_escape_rate_24h 0.02" in text
    assert "dieguard_defective_labelled_24h 150.0" in text
    assert "dieguard_fpr_24h" not in text  # skipped: left out, not zero
    assert 'dieguard_drift_flagged{family="process"} 1.0' in text
    assert 'dieguard_drift_flagged{family="notes"} 0.0' in text
    assert 'family="images"' not in text
    assert 'dieguard_drift_score{family="process"} 1.4' in text
    assert f"dieguard_monitor_last_check_timestamp_seconds {AT.timestamp():.7e}" in text
    metrics.monitor.update({})
    assert "dieguard_escape_rate_24h" not in metrics.render().decode()
