"""The portal's pages. Thin: who is signed in, may they see this, ask the API, draw the page.

Every POST carries the session's CSRF token; every page checks the person's role; every read of
a referral goes to the API with the person's own token, so the API's object-level rules apply.
"""

from __future__ import annotations

import hmac
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from services.portal import display, forms, wording
from services.portal.api import ApiError, Apis
from services.portal.oidc import OpenIDClient, SignInFailed
from services.portal.sessions import Session, SessionStore
from services.portal.settings import PortalSettings
from shared import web
from shared.logging import get_logger

log = get_logger(__name__)
router = APIRouter()

SESSION_COOKIE = "threadline_session"
SIGN_IN_COOKIE = "threadline_sign_in"
CSRF_FIELD = "csrf_token"

pages = web.templates(Path(__file__).parent / "templates")
pages.env.filters.update(display.filters())
pages.env.filters.update(wording.filters())

#: The home page of each role, and the roles that may see each area.
HOME = {
    "dsl": "/referrals",
    "mash_worker": "/mash/queue",
    "mash_manager": "/mash/queue",
    "dpo": "/dpo",
}
DSL = frozenset({"dsl"})
MASH = frozenset({"mash_worker", "mash_manager"})
MANAGER = frozenset({"mash_manager"})
DPO = frozenset({"dpo"})


class FormValues(dict[str, str]):
    """What was typed, to show again; a field never typed is empty (never "None" on a page)."""

    def get(self, key: str, default: str = "") -> str:  # type: ignore[override]
        return super().get(key) or default


class NotSignedIn(Exception):
    def __init__(self, reason: str = "signed_out") -> None:
        self.reason = reason


class Forbidden(Exception):
    def __init__(self, detail: str) -> None:
        self.detail = detail


# -- dependencies ------------------------------------------------------------------------------


async def _settings(request: Request) -> PortalSettings:
    settings: PortalSettings = request.app.state.settings
    return settings


async def _store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


async def _apis(request: Request) -> Apis:
    apis: Apis = request.app.state.apis
    return apis


async def _oidc(request: Request) -> OpenIDClient:
    client: OpenIDClient = request.app.state.oidc
    return client


async def optional_session(request: Request) -> Session | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    store: SessionStore = request.app.state.sessions
    return store.get(session_id) if session_id else None


async def current_session(request: Request) -> Session:
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        raise NotSignedIn()
    session = await optional_session(request)
    if session is None:
        raise NotSignedIn("timed_out")
    request.state.session = session
    return session


def role(*allowed: frozenset[str]) -> Any:
    """A dependency admitting a signed-in person whose role is in one of ``allowed``; POSTs
    must also carry the session's CSRF token."""
    roles = frozenset().union(*allowed)

    async def checked(request: Request) -> Session:
        session = await current_session(request)
        if session.person.role not in roles:
            log.info("portal.refused", role=session.person.role, path=request.url.path)
            raise Forbidden(
                "This page is for other people's work. Use the links at the top of the page "
                "to go to yours."
            )
        if request.method == "POST":
            await check_csrf(request, session)
        return session

    return Depends(checked)


async def check_csrf(request: Request, session: Session) -> None:
    form = await request.form()
    offered = form.get(CSRF_FIELD)
    if not isinstance(offered, str) or not hmac.compare_digest(
        offered.encode(), session.csrf_token.encode()
    ):
        log.info("portal.csrf_refused", path=request.url.path)
        raise Forbidden(
            "This form could not be accepted because it did not come from this service's own "
            "page (or the page was open too long). Go back, reload the page and send it again."
        )


SettingsDep = Annotated[PortalSettings, Depends(_settings)]
StoreDep = Annotated[SessionStore, Depends(_store)]
ApisDep = Annotated[Apis, Depends(_apis)]
OIDCDep = Annotated[OpenIDClient, Depends(_oidc)]
MaybeSession = Annotated[Session | None, Depends(optional_session)]
DslSession = Annotated[Session, role(DSL)]
MashSession = Annotated[Session, role(MASH)]
ManagerSession = Annotated[Session, role(MANAGER)]
DpoSession = Annotated[Session, role(DPO)]
AnySession = Annotated[Session, role(DSL, MASH, DPO)]


# -- rendering ---------------------------------------------------------------------------------


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    session: Session | None = getattr(request.state, "session", None)
    response: HTMLResponse = pages.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "person": session.person if session else None,
            "csrf_token": session.csrf_token if session else "",
            "nav": _navigation(request, session),
            **(context or {}),
        },
        status_code=status_code,
    )
    return response


def problem_page(
    request: Request, status_code: int, title: str, detail: str, *, sign_in: bool = False
) -> HTMLResponse:
    return render(
        request,
        "problem.html",
        {"title": title, "detail": detail, "sign_in": sign_in},
        status_code=status_code,
    )


def _navigation(request: Request, session: Session | None) -> list[dict[str, Any]]:
    if session is None:
        return []
    items: list[tuple[str, str]] = []
    if session.person.role == "dsl":
        items = [("/referrals", "Your school's referrals"), ("/referrals/new", "Raise a concern")]
        items.append(("/notifications", "Notifications about your pupils"))
    elif session.person.is_mash:
        items = [
            ("/mash/queue", "Triage queue"),
            ("/mash/people", "Find a child"),
            ("/mash/links", "Records to check"),
        ]
        if session.person.role == "mash_manager":
            items.append(("/mash/escalations", "Escalations"))
    elif session.person.role == "dpo":
        items = [
            ("/dpo", "Overview"),
            ("/dpo/ledger", "Ledger"),
            ("/dpo/disclosures", "Without consent"),
            ("/dpo/withdrawals", "Withdrawals"),
            ("/dpo/integrity", "Integrity"),
            ("/dpo/subjects", "Subject access"),
            ("/dpo/retention", "Retention"),
        ]
    path = request.url.path
    # The longest link the page is at or under is the current one (/dpo/ledger, not /dpo).
    under = [href for href, _ in items if path == href or path.startswith(href + "/")]
    current = max(under, key=len) if under else None
    return [{"href": href, "text": text, "active": href == current} for href, text in items]


# -- operations --------------------------------------------------------------------------------


@router.get("/healthz", include_in_schema=False)
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", include_in_schema=False)
async def readyz(oidc: OIDCDep) -> JSONResponse:
    """Ready once the identity provider's discovery document can be read (sign-in needs it)."""
    try:
        await oidc.metadata()
    except Exception as error:  # any failure means "not ready", and says which
        return JSONResponse(
            {"status": "not ready", "checks": {"identity": f"unavailable: {type(error).__name__}"}},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "checks": {"identity": "ok"}})


# -- signing in and out ------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def start(request: Request, session: MaybeSession) -> Response:
    if session is not None:
        return RedirectResponse(HOME[session.person.role], status_code=303)
    notice = None
    if "timed_out" in request.query_params:
        notice = "You were signed out because you had not done anything for a while."
    elif "signed_out" in request.query_params:
        notice = "Sign in to carry on."
    return render(request, "start.html", {"notice": notice})


@router.get("/sign-in")
async def begin_sign_in(
    store: StoreDep, oidc: OIDCDep, settings: SettingsDep, request: Request
) -> Response:
    key, pending = store.begin_sign_in()
    try:
        location = await oidc.authorization_url(pending)
    except Exception as error:  # the provider cannot be reached: tell the person
        log.warning("portal.identity_unavailable", error=repr(error))
        return problem_page(
            request,
            503,
            "Sorry, you cannot sign in just now",
            "The sign-in service is not answering. Try again in a few minutes.",
        )
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(
        SIGN_IN_COOKIE,
        key,
        max_age=600,
        path="/auth",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


@router.get("/auth/callback")
async def finish_sign_in(
    request: Request, store: StoreDep, oidc: OIDCDep, settings: SettingsDep
) -> Response:
    key = request.cookies.get(SIGN_IN_COOKIE, "")
    pending = store.finish_sign_in(key) if key else None
    state = request.query_params.get("state", "")
    code = request.query_params.get("code", "")
    issuer = request.query_params.get("iss")
    failed = problem_page(
        request,
        400,
        "Sorry, we could not sign you in",
        "The sign-in did not finish properly, or took too long. Start again.",
        sign_in=True,
    )
    if pending is None or not hmac.compare_digest(state.encode(), pending.state.encode()):
        log.info("portal.sign_in_refused", reason="state")
        return failed
    if issuer is not None and issuer != settings.identity_issuer:
        log.info("portal.sign_in_refused", reason="issuer")  # RFC 9207: a mix-up attempt
        return failed
    if not code:
        log.info("portal.sign_in_refused", reason=request.query_params.get("error", "no code"))
        return failed
    try:
        signed_in = await oidc.complete(pending, code)
    except (SignInFailed, ApiError) as error:
        log.info("portal.sign_in_refused", reason=str(error))
        return failed
    if signed_in.person.role not in HOME:
        return problem_page(request, 403, "You cannot use this service", "Your role has no pages.")
    session = store.create(signed_in.person, signed_in.access_token, signed_in.expires_in)
    log.info("portal.signed_in", user=signed_in.person.username, role=signed_in.person.role)
    response = RedirectResponse(HOME[signed_in.person.role], status_code=303)
    response.delete_cookie(SIGN_IN_COOKIE, path="/auth")
    response.set_cookie(
        SESSION_COOKIE,
        session.id,
        path="/",
        secure=settings.cookie_secure,
        httponly=True,
        samesite="lax",
    )
    return response


@router.post("/sign-out")
async def sign_out(session: AnySession, store: StoreDep, settings: SettingsDep) -> Response:
    store.end(session.id)
    response = RedirectResponse("/signed-out", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=settings.cookie_secure, httponly=True, samesite="lax"
    )
    return response


@router.get("/signed-out", response_class=HTMLResponse)
async def signed_out(request: Request) -> Response:
    return render(request, "signed_out.html")


# -- DSL: my school's referrals, raising a concern ---------------------------------------------


@router.get("/referrals", response_class=HTMLResponse)
async def school_referrals(request: Request, session: DslSession, apis: ApisDep) -> Response:
    referrals = await apis.referrals(session)
    notices = await apis.inbox(session, status="open")
    now = datetime.now(UTC)
    rows = [
        {
            **referral,
            "next": display.next_deadline(referral),
            "overdue": display.overdue(referral, now),
            "feedback_given": display.feedback_given(referral),
        }
        for referral in referrals.items
    ]
    return render(
        request,
        "dsl/referrals.html",
        {"referrals": rows, "complete": referrals.complete, "notices": notices},
    )


@router.get("/referrals/new", response_class=HTMLResponse)
async def new_referral(request: Request, session: DslSession) -> Response:
    values = {"referrer-name": session.person.name, "referrer-role": "Designated Safeguarding Lead"}
    return _referral_form(request, values, [], forms.FormErrors())


def _referral_form(
    request: Request,
    values: dict[str, str],
    categories: list[str],
    errors: forms.FormErrors,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    order = forms.field_order()
    return render(
        request,
        "dsl/raise_concern.html",
        {
            "values": FormValues(values),
            "chosen_categories": categories,
            "errors": errors.by_field,
            "error_list": errors.summary(order),
            "idempotency_key": values.get("idempotency_key") or secrets.token_urlsafe(24),
            "child_slots": forms.CHILD_SLOTS,
            "member_slots": forms.MEMBER_SLOTS,
            "categories": forms.CATEGORIES,
            "relationships": forms.RELATIONSHIPS,
            "sexes": forms.SEXES,
            "consent_options": forms.CONSENT,
        },
        status_code=status_code,
    )


@router.post("/referrals/new", response_class=HTMLResponse)
async def raise_concern(request: Request, session: DslSession, apis: ApisDep) -> Response:
    posted = await request.form()
    parsed = forms.parse_referral_form(
        posted,
        organisation_code=session.person.organisation_code,
        organisation_name=session.person.organisation_name,
    )
    key = parsed.values.get("idempotency_key", "")
    if not (8 <= len(key) <= 200) or not key.replace("-", "").replace("_", "").isalnum():
        key = secrets.token_urlsafe(24)
        parsed.values["idempotency_key"] = key
    if not parsed.errors:
        try:
            created = await apis.raise_concern(session, parsed.body, key)
        except ApiError as error:
            if error.status == 409:  # this form was sent before, with other answers
                return problem_page(
                    request,
                    409,
                    "This concern has already been sent",
                    "This form was sent to the MASH before, and what it holds now is different. "
                    "Check your school's referrals; to add something, raise a new concern.",
                )
            if error.status != 422:
                raise
            forms.api_errors(error.errors, parsed.errors, forms.field_order())
        else:
            log.info("portal.concern_raised", referral_id=created["id"])
            return RedirectResponse(f"/referrals/{created['id']}?raised=1", status_code=303)
    return _referral_form(request, parsed.values, parsed.categories, parsed.errors, status_code=400)


@router.get("/referrals/{referral_id}", response_class=HTMLResponse)
async def school_referral(
    request: Request, referral_id: uuid.UUID, session: DslSession, apis: ApisDep
) -> Response:
    referral = await apis.referral(session, referral_id)
    return render(
        request,
        "dsl/referral.html",
        {"referral": referral, "raised": "raised" in request.query_params},
    )


# -- MASH: the triage queue, a referral and its actions, escalations ---------------------------


@router.get("/mash/queue", response_class=HTMLResponse)
async def triage_queue(request: Request, session: MashSession, apis: ApisDep) -> Response:
    referrals = await apis.referrals(session)
    new_items = await apis.inbox(session, audience="mash_worker", status="open")
    waiting = {item["referral_id"] for item in new_items}
    now = datetime.now(UTC)
    open_referrals = [
        referral
        for referral in referrals.items
        if display.next_deadline(referral) is not None or referral["status"] == "received"
    ]
    rows = [
        {
            **referral,
            "next": display.next_deadline(referral),
            "overdue": display.overdue(referral, now),
            "new": referral["id"] in waiting,
        }
        for referral in display.queue_order(open_referrals)
    ]
    return render(
        request,
        "mash/queue.html",
        {"referrals": rows, "complete": referrals.complete, "new_count": len(waiting)},
    )


ACTIONS = ("acknowledge", "rating", "decision", "feedback")


@router.get("/mash/referrals/{referral_id}", response_class=HTMLResponse)
async def mash_referral(
    request: Request, referral_id: uuid.UUID, session: MashSession, apis: ApisDep
) -> Response:
    referral = await apis.referral(session, referral_id)
    done = request.query_params.get("done")
    return _mash_referral_page(request, referral, done=done if done in ACTIONS else None)


def _mash_referral_page(
    request: Request,
    referral: dict[str, Any],
    *,
    done: str | None = None,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status_code: int = 200,
    feedback_refused: bool = False,
) -> HTMLResponse:
    errors = errors or {}
    return render(
        request,
        "mash/referral.html",
        {
            "feedback_refused": feedback_refused,
            "override_bases": list(OVERRIDE_BASES.items()),
            "referral": referral,
            "done": done,
            "errors": errors,
            "error_list": [{"text": text, "href": f"#{field}"} for field, text in errors.items()],
            "values": FormValues(values or {}),
            # One key per feedback form shown (kept when the form comes back with an error): a
            # second submission of the same form gives the feedback once.
            "feedback_key": (values or {}).get("idempotency_key") or secrets.token_urlsafe(24),
            "decisions": list(display.DECISION.items()),
            "overdue": display.overdue(referral, datetime.now(UTC)),
        },
        status_code=status_code,
    )


OVERRIDE_BASES = {
    "public_task": "Public task: the local authority's safeguarding duties (UK GDPR 6(1)(e))",
    "vital_interests": "Vital interests: to protect a child's life or safety (UK GDPR 6(1)(d))",
    "legal_obligation": "Legal obligation (UK GDPR 6(1)(c))",
}
#: The API's override fields (422 errors) and the form's.
OVERRIDE_FIELDS = {
    "override.basis": "override_basis",
    "override.reason": "override_reason",
    "override.approved_by": "override_approved_by",
    "override.approved_by.name": "override_approved_by",
}


def _refusal_text(detail: str) -> str:
    """The decision point's refusal in words for the MASH worker (the API's detail names
    subjects and consent records by id, for integrators and the DPO)."""
    for status in ("withdrawn", "refused"):
        if f"consent {status}" in detail:
            return (
                f"The feedback was not sent: a parent or the child has {status} consent to it "
                "being shared with the person who raised the concern. If the law allows sharing "
                "anyway, give the basis, your reason and the approving manager below."
            )
    return (
        "The feedback was not sent: the information sharing agreement does not allow it to be "
        "shared with the person who raised the concern. Ask your data protection officer."
    )


def _feedback_override(values: dict[str, str], errors: dict[str, str]) -> dict[str, Any] | None:
    """The override of a refusal of consent, when the form gives one (all three parts, or an
    error at each missing one); None when it gives none."""
    basis, reason = values.get("override_basis"), values.get("override_reason")
    manager = values.get("override_approved_by")
    if not (basis or reason or manager):
        return None
    if basis not in OVERRIDE_BASES:
        errors["override_basis"] = "Select the lawful basis for sharing without consent"
    if not reason or len(reason) < 10:
        errors["override_reason"] = "Say why the referrer must be told despite the refusal"
    if not manager:
        errors["override_approved_by"] = "Enter the name of the manager who approved it"
    return {
        "basis": basis,
        "reason": reason,
        "approved_by": {"name": manager, "role": "MASH manager"},
    }


@router.post("/mash/referrals/{referral_id}/{action}", response_class=HTMLResponse)
async def mash_action(
    request: Request, referral_id: uuid.UUID, action: str, session: MashSession, apis: ApisDep
) -> Response:
    if action not in ACTIONS:
        return problem_page(request, 404, "Page not found", "There is no such action.")
    posted = await request.form()
    values = {key: value.strip() for key, value in posted.items() if isinstance(value, str)}
    by = session.person.name
    errors: dict[str, str] = {}
    body: dict[str, Any]
    if action == "acknowledge":
        body = {"acknowledged_by": by}
    elif action == "rating":
        if values.get("rag") not in {"red", "amber", "green"}:
            errors["rag"] = "Select a rating: red, amber or green"
        if not values.get("rating_reason"):
            errors["rating_reason"] = "Say why you chose this rating"
        body = {"rag": values.get("rag"), "reason": values.get("rating_reason"), "rated_by": by}
    elif action == "decision":
        if values.get("decision") not in display.DECISION:
            errors["decision"] = "Select what happens next"
        if not values.get("decision_reason"):
            errors["decision_reason"] = "Say why (for no further action, why it is safe to close)"
        body = {
            "decision": values.get("decision"),
            "reason": values.get("decision_reason"),
            "decided_by": by,
        }
    else:
        if not values.get("feedback_message"):
            errors["feedback_message"] = "Write the feedback for the person who raised the concern"
        body = {"message": values.get("feedback_message"), "given_by": by}
        override = _feedback_override(values, errors)
        if override is not None:
            body["override"] = override
    if not errors:
        try:
            key = values.get("idempotency_key") if action == "feedback" else None
            await apis.act(session, referral_id, action, body, idempotency_key=key or None)
        except ApiError as error:
            refused = error.status == 403 and "may not be shared" in error.detail
            if action == "feedback" and (refused or error.status == 503):
                # The consent service decided the feedback may not be shared (its reasons are
                # in the detail), or could not be asked: nothing was sent either way.
                feedback_refused = refused
                errors["feedback_message"] = (
                    _refusal_text(error.detail)
                    if refused
                    else "The feedback was not sent: whether it may be shared could not be "
                    "checked just now. Try again in a minute."
                )
                referral = await apis.referral(session, referral_id)
                return _mash_referral_page(
                    request,
                    referral,
                    errors=errors,
                    values=values,
                    status_code=400,
                    feedback_refused=feedback_refused,
                )
            if error.status == 422 and action == "feedback":
                for item in error.errors:
                    target = OVERRIDE_FIELDS.get(str(item.get("field", "")))
                    if target is not None:
                        errors[target] = str(item.get("message", "is not valid")).capitalize()
                if errors:
                    referral = await apis.referral(session, referral_id)
                    return _mash_referral_page(
                        request, referral, errors=errors, values=values, status_code=400
                    )
            if error.status not in {409, 422}:
                raise
            target = {
                "acknowledge": "acknowledge",
                "rating": "rag",
                "decision": "decision",
                "feedback": "feedback_message",
            }[action]
            errors[target] = (
                error.detail[:1].upper() + error.detail[1:]
                if error.status == 409
                else "Check what you entered: " + error.detail
            )
        else:
            log.info("portal.mash_action", action=action, referral_id=str(referral_id))
            return RedirectResponse(f"/mash/referrals/{referral_id}?done={action}", status_code=303)
    referral = await apis.referral(session, referral_id)
    return _mash_referral_page(request, referral, errors=errors, values=values, status_code=400)


@router.get("/mash/escalations", response_class=HTMLResponse)
async def escalations(request: Request, session: ManagerSession, apis: ApisDep) -> Response:
    items = await apis.inbox(session, audience="mash_manager", status="open")
    return render(request, "mash/escalations.html", {"items": items})
