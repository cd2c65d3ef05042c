"""Settings: shared by every service, overridable per service, guarded in production."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.notifications.settings import NotificationsSettings
from services.referrals.settings import ReferralsSettings
from shared.crypto import MasterKeyring


def test_a_service_reads_common_settings_and_its_own_override(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("THREADLINE_DATABASE_URL", "postgresql+asyncpg://db.example/common")
    monkeypatch.setenv("THREADLINE_REFERRALS_DATABASE_URL", "postgresql+asyncpg://db.example/own")
    monkeypatch.setenv("THREADLINE_REFERRALS_POLICY_FILE", "config/policy/default.toml")
    assert ReferralsSettings().database_url == "postgresql+asyncpg://db.example/own"
    assert ReferralsSettings().policy_file == "config/policy/default.toml"
    assert NotificationsSettings().database_url == "postgresql+asyncpg://db.example/common"
    assert (ReferralsSettings().port, NotificationsSettings().port) == (8101, 8103)


def test_production_refuses_every_development_default_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("THREADLINE_DATABASE_URL", "THREADLINE_KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("THREADLINE_ENVIRONMENT", "production")
    with pytest.raises(ValidationError) as refused:
        NotificationsSettings()
    message = str(refused.value)
    for problem in (
        "THREADLINE_DATABASE_URL must be set",
        "THREADLINE_KAFKA_BOOTSTRAP_SERVERS must be set",
        "http://127.0.0.1:8100 is not a production issuer",
    ):
        assert problem in message

    monkeypatch.setenv("THREADLINE_DATABASE_URL", "postgresql+asyncpg://db.example/threadline")
    monkeypatch.setenv("THREADLINE_KAFKA_BOOTSTRAP_SERVERS", "kafka-1.example:9092")
    monkeypatch.setenv(
        "THREADLINE_AUTH_ISSUERS",
        '[{"issuer": "https://idp.example.nhs.uk", "jwks_uri": "http://idp.example.nhs.uk/k"}]',
    )
    with pytest.raises(ValidationError, match="must be https"):
        NotificationsSettings()
    monkeypatch.setenv(
        "THREADLINE_AUTH_ISSUERS",
        '[{"issuer": "https://idp.example.nhs.uk", "jwks_uri": "https://idp.example.nhs.uk/k"}]',
    )
    # The notifications service also asks the decision point (as every disclosing service does:
    # a platform client secret, https to consent and the token endpoint) and sends e-mail.
    with pytest.raises(ValidationError) as refused:
        NotificationsSettings()
    for problem in (
        "THREADLINE_NOTIFICATIONS_CLIENT_SECRET must be set",
        "CONSENT_URL (or THREADLINE_CONSENT_URL) must be https",
        "TOKEN_URL (or THREADLINE_IDENTITY_URL) must be https",
        "SMTP must use TLS",
    ):
        assert problem in str(refused.value)
    monkeypatch.setenv("THREADLINE_NOTIFICATIONS_CLIENT_SECRET", "from-the-secret-store")
    monkeypatch.setenv("THREADLINE_CONSENT_URL", "https://consent.threadline.example")
    monkeypatch.setenv("THREADLINE_IDENTITY_URL", "https://idp.threadline.example")
    monkeypatch.setenv("THREADLINE_NOTIFICATIONS_SMTP_STARTTLS", "true")
    assert NotificationsSettings().environment == "production"
    # The referrals service also holds the master keys of the narrative encryption, and asks the
    # decision point before it records feedback to a referrer (a platform client secret).
    with pytest.raises(ValidationError, match="THREADLINE_REFERRALS_CLIENT_SECRET must be set"):
        ReferralsSettings()
    monkeypatch.setenv("THREADLINE_REFERRALS_CLIENT_SECRET", "from-the-secret-store")
    with pytest.raises(ValidationError, match="development"):
        ReferralsSettings()
    monkeypatch.setenv("THREADLINE_REFERRALS_MASTER_KEYS", MasterKeyring.generate_setting("k1"))
    assert ReferralsSettings().environment == "production"
