"""Referrals: the front door through which agencies raise concerns about children."""
