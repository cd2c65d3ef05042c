"""The referrals service consumes no events yet; its inputs arrive over HTTP."""
