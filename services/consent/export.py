"""The subject access export as a document a person can read (UK GDPR Article 15)."""

from __future__ import annotations

from html import escape
from typing import Any

from services.consent.schemas import LedgerEntryOut, SubjectExport

NOTE = (
    "This is what the Threadline consent service holds about this person: consent records, "
    "decisions about disclosing their information (with the lawful basis of each), withdrawals "
    "and retention actions. It holds no case narratives; what happened and the child's own words "
    "are held, encrypted, by the referrals service and are exported from there."
)

NO_RETENTION = "No records of yours have reached the end of their retention period."
KIND_TITLES = {
    "consent.recorded": "Consent recorded",
    "consent.withdrawn": "Consent withdrawn",
    "disclosure.decided": "Disclosure decision",
    "retention.expired": "Retention period ended",
}
OUTCOMES = {"share": "shared", "do_not_share": "not shared", "expired": "expired"}


def _text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{key.replace('_', ' ')}: {_text(item)}" for key, item in value.items())
    return str(value).replace("_", " ")


def _entry(entry: LedgerEntryOut) -> str:
    title = KIND_TITLES.get(entry.kind, entry.kind)
    facts = {
        "When": entry.recorded_at.strftime("%d %B %Y %H:%M UTC"),
        "From": entry.from_agency,
        "To": entry.to_agency,
        "Purpose": entry.purpose,
        "Outcome": OUTCOMES.get(entry.outcome or "", entry.outcome),
        "Lawful basis (UK GDPR Article 6)": entry.lawful_basis,
        "Consent": entry.consent_status,
    }
    details = dict(entry.payload)
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td>{escape(_text(value))}</td></tr>"
        for label, value in facts.items()
        if value is not None
    )
    rows += "".join(
        f"<tr><th>{escape(key.replace('_', ' ').capitalize())}</th>"
        f"<td>{escape(_text(value))}</td></tr>"
        for key, value in sorted(details.items())
        if value not in (None, [], {})
    )
    return (
        f'<section class="entry"><h3>{escape(title)} <small>(ledger entry '
        f"{entry.sequence})</small></h3><table>{rows}</table></section>"
    )


def render(export: SubjectExport) -> str:
    consents = "".join(
        "<tr>"
        + "".join(
            f"<td>{escape(_text(value))}</td>"
            for value in (
                record.status,
                record.grantor_description or record.grantor_kind,
                record.data_categories,
                record.recipients,
                record.purposes,
                record.obtained_at.strftime("%d %B %Y"),
                f"{record.obtained_by_name} ({record.obtained_by_role})",
                record.withdrawn_at.strftime("%d %B %Y") if record.withdrawn_at else None,
            )
        )
        + "</tr>"
        for record in export.consent_records
    )
    entries = "".join(_entry(entry) for entry in export.ledger_entries)
    return f"""<!doctype html>
<html lang="en-GB"><head><meta charset="utf-8">
<title>Information held about subject {escape(str(export.subject_id))}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #1b1b1b; }}
table {{ border-collapse: collapse; width: 100%; margin-bottom: 1rem; }}
th, td {{ border: 1px solid #ccc; padding: .3rem .5rem; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; width: 16rem; }}
.entry {{ page-break-inside: avoid; }}
</style></head>
<body>
<h1>Information held about you</h1>
<p>Subject reference {escape(str(export.subject_id))}. Exported
{escape(export.exported_at.strftime("%d %B %Y at %H:%M UTC"))}.</p>
<p>{escape(export.note)}</p>
<h2>Consent records ({len(export.consent_records)})</h2>
<table><tr><th>Status</th><th>Given by</th><th>Information</th><th>To</th><th>For</th>
<th>Obtained</th><th>Recorded by</th><th>Withdrawn</th></tr>{consents}</table>
<h2>Decisions and records in the ledger ({len(export.ledger_entries)})</h2>
{entries or "<p>None.</p>"}
<h2>Retention</h2>
<p>{escape(_text(export.retention_actions)) if export.retention_actions else NO_RETENTION}</p>
</body></html>
"""
