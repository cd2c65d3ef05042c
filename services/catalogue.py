"""Every service that exists, in start order, and the modules that define their events."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from fastapi import FastAPI

SERVICES: tuple[str, ...] = (
    "identity",
    "consent",
    "referrals",
    "notifications",
    "linking",
    "portal",
    "timeline",
)
# The services that own a schema (and so an Alembic history); identity keeps no data.
MIGRATED: tuple[str, ...] = ("consent", "referrals", "notifications", "linking", "timeline")
# Events of a service's sub-domain, defined beside it rather than in the service's events module.
SUB_DOMAIN_EVENTS: tuple[str, ...] = ("services.referrals.contacts.events",)


def load_events() -> None:
    """Import every service's events module so the registry is complete."""
    for name in SERVICES:
        try:
            import_module(f"services.{name}.events")
        except ModuleNotFoundError as error:
            if error.name != f"services.{name}.events":
                raise
    for module in SUB_DOMAIN_EVENTS:
        import_module(module)


def app_module(name: str) -> ModuleType:
    if name not in SERVICES:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    return import_module(f"services.{name}.app")


def create_app(name: str) -> FastAPI:
    app: FastAPI = app_module(name).create_app()
    return app
