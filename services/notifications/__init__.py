"""Notifications: the MASH inbox now; e-mail and webhooks to agencies later."""
