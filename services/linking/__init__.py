"""Linking: person records resolved to persons, persons to households (docs/linking.md)."""
