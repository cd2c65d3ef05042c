"""Settings: shared by every service, overridable per service, guarded in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.notifications.settings import NotificationsSettings
from services.referrals.settings import ReferralsSettings


def test_a_service_reads_common_settings_and_its_own_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("THREADLINE_DATABASE_URL", "postgresql+asyncpg://db.example/common")
    monkeypatch.setenv("THREADLINE_REFERRALS_DATABASE_URL", "postgresql+asyncpg://db.example/own")
    monkeypatch.setenv("THREADLINE_REFERRALS_ACKNOWLEDGEMENT_WORKING_DAYS", "2")
    assert ReferralsSettings().database_url == "postgresql+asyncpg://db.example/own"
    assert ReferralsSettings().acknowledgement_working_days == 2
    assert NotificationsSettings().database_url == "postgresql+asyncpg://db.example/common"
    assert (ReferralsSettings().port, NotificationsSettings().port) == (8101, 8103)


def test_production_refuses_the_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("THREADLINE_DATABASE_URL", "THREADLINE_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("THREADLINE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="THREADLINE_DATABASE_URL must be set"):
        ReferralsSettings()
    monkeypatch.setenv("THREADLINE_DATABASE_URL", "postgresql+asyncpg://db.example/threadline")
    with pytest.raises(ValidationError, match="THREADLINE_KAFKA_BOOTSTRAP_SERVERS must be set"):
        ReferralsSettings()
    monkeypatch.setenv("THREADLINE_KAFKA_BOOTSTRAP_SERVERS", "kafka-1.example:9092")
    assert ReferralsSettings().environment == "production"
