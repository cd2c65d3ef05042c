"""The notifications service emits no events yet (delivery events arrive with e-mail/webhooks)."""
