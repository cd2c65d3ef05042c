"""A development identity provider: OAuth2 client credentials for the demo agencies.

It stands in for the agencies' own issuers on a developer's machine and in tests, and refuses to
start in production, where services trust the agencies' issuers by configuration instead.
"""
