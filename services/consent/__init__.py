"""Consent: the ledger of lawful bases for every disclosure (built out in its own issue)."""
