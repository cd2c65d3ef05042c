"""Tests of the linking service: the matching engine, link-file, the API and the event flow."""
