"""The portal: GOV.UK-styled pages through which school DSLs, MASH staff and DPOs use Threadline.

It owns no data. People sign in with OpenID Connect (code flow with PKCE); every page is drawn
from the services' APIs, called with the signed-in person's own access token, so the APIs'
object-level rules (a school sees only its own referrals) apply to every page.
"""
