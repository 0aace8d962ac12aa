"""Admin API (edge): HTTP + JSON on its own mutual-TLS listener.

Every call, on every path (an unknown one too), is first decided by the trust
pipeline (``gateway.core.pipeline.operator``): a registered identity that is
live *now* — not in the listener's CRL, the denylist or the administrators'
revocations, certificate not expired; checked on each request, so a kept-alive
connection loses access the moment its certificate is revoked — holding the
role the endpoint names.  Every call then leaves exactly one ``admin_call``
audit record (``method``, ``path``, ``peer``, ``identity``, ``status``,
``allowed`` = status below 400, what was asked, and ``rule``/``reason`` or
``error`` when refused) — refusals (403), bad requests (400), unknown paths
(404) and every ``/metrics`` scrape included (one record per scrape: a few a
minute at Prometheus rates).  A call that changes something is recorded
*before* the change; when the audit stream cannot take the record the change
is not made (503).

* ``POST /v1/posture`` — role ``posture_agent``; body
  ``{"identity": "spiffe://...", "level": "compliant"}`` or a list of them.
  Takes effect at once: live sessions are re-decided and, where the policy
  says so, logged out.
* role ``gateway_admin``:
  ``GET /v1/sessions`` (identity, zone, posture, CompIDs, sequence numbers on
  both legs, message counts, last decision);
  ``GET|POST /v1/kill-switch`` (``{"on": true, "global": true}`` or
  ``"identities"``/``"accounts"`` lists, ``"reason"``): *on* takes effect at
  once; *off* is a request (202) a second administrator approves;
  ``POST /v1/revoke`` (``{"identity", "reason"}``: refused from now on,
  persisted, live sessions cut) and ``POST /v1/reinstate`` (``{"identity"}``):
  requests (202) a second administrator approves;
  ``POST /v1/policy/reload``;
  just-in-time access: ``POST /v1/jit/requests`` (``{"identity", "minutes",
  "reason"}``, capped by ``[gateway] jit_max_minutes``; 201), ``GET
  /v1/jit/requests``; the grant runs from approval and ends by itself;
  the two-person rule (``gateway.core.approvals``): ``GET /v1/requests`` lists
  every request, ``POST /v1/requests/{id}/approve`` (or
  ``/v1/jit/requests/{id}/approve``) — by a *second* administrator, who is
  neither the one who asked nor the identity the request is about — carries it
  out.  Requests are held by the worker whose API took them and lapse
  unapproved after an hour.
* ``GET /metrics`` — Prometheus text; any registered, live identity.
"""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from cryptography import x509

from gateway.core import approvals, pipeline
from gateway.core.approvals import JIT, KILL_SWITCH_OFF, REINSTATE, REVOKE, Request
from gateway.core.policy.engine import POSTURE_LEVELS
from gateway.edges import tls
from gateway.edges.feeds import FeedError, read_json, write_json

if TYPE_CHECKING:
    from gateway.shells.ports import Hub

log = structlog.get_logger("fixgw.admin")

ADMIN_ROLE = "gateway_admin"
POSTURE_ROLE = "posture_agent"

Handler = Callable[[web.Request, str], Awaitable[web.Response]]


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def view(req: Request, now: float) -> dict[str, Any]:
    """A request as the API shows it (JIT requests keep the fields they always had)."""
    out: dict[str, Any] = {"id": req.id, "action": req.action, "identity": req.identity, "reason": req.reason,
                           "requested_by": req.requested_by, "requested_at": _iso(req.requested_at),
                           "approved_by": req.approved_by, "approved_at": _iso(req.approved_at),
                           "state": req.state(now), **req.details}
    if req.action == JIT:
        out["expires_at"] = _iso(req.expires_at)
    if req.failed is not None:
        out["error"] = req.failed
    return out


class AdminAPI:
    def __init__(self, gw: Hub) -> None:
        self.gw = gw
        self.runner: web.AppRunner | None = None
        self.requests: dict[str, Request] = {}

    # -- every call: decided first, recorded once -----------------------------------------
    def _decide(self, request: web.Request, role: str | None) -> str | web.Response:
        """The caller's identity, decided by the trust pipeline (``gateway.core.pipeline.operator``):
        registered, live — the listener's CRL, denylist, admin revocations and expiry, checked on
        every call — and holding ``role`` (None: any identity); else the 403 to answer."""
        transport = request.transport
        ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
        ident, why = self.gw.guard.identify(tls.peer_uri_sans(ssl_obj))
        revoked = None
        if ident is not None:
            request["identity"] = ident.id
            serial, not_after = _leaf_facts(ssl_obj)
            request["cert"] = (serial, not_after)
            revoked = self.gw.cut_reason(serial, not_after, ident.id, time.time())
        v = pipeline.operator(ident, why, revoked, role)
        if not v.allowed:
            request["audit"].update(rule=v.rule_ids[0], reason=v.reason)
            return _error(403, v.reason)
        assert ident is not None
        return ident.id

    def _guarded(self, role: str | None, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        """``handler`` runs only for a caller ``_decide`` lets through, and gets the caller's identity."""
        async def guarded(request: web.Request) -> web.Response:
            caller = self._decide(request, role)
            if isinstance(caller, web.Response):
                return caller
            return await handler(request, caller)
        return guarded

    def _record(self, request: web.Request, status: int, **fields: Any) -> bool:
        """The call's ``admin_call`` record; False when the audit stream could not take it."""
        request["recorded"] = status
        return self.gw.audit_event("admin_call", method=request.method, path=request.path, peer=request.remote,
                                   identity=request.get("identity"), status=status, allowed=status < 400,
                                   **request["audit"], **fields)

    def _commit(self, request: web.Request, status: int, **fields: Any) -> web.Response | None:
        """Record a change *before* making it: None to go ahead, or the 503 to answer (nothing changed)."""
        request["audit"].update(fields)
        if self._record(request, status):
            return None
        return _error(503, "the audit stream cannot record this call, so nothing was changed; retry")

    @web.middleware
    async def _audited(self, request: web.Request,
                       handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """One ``admin_call`` record per call, whatever the answer; no traceback reaches the caller."""
        request["audit"] = {}
        response: web.StreamResponse
        try:
            refused = None
            if request.match_info.http_exception is not None:  # unknown path or method: who asked, still
                refused = self._decide(request, None)
            response = refused if isinstance(refused, web.Response) else await handler(request)
        except web.HTTPException as exc:  # aiohttp's own answers: 404, 405, 413 ...
            response = _error(exc.status, exc.reason)
        except Exception:  # noqa: BLE001 - a bug answers 500 and is recorded, never a traceback to the caller
            log.exception("admin_call_failed", method=request.method, path=request.path)
            response = _error(500, "internal error (see the gateway log)")
        if request.get("recorded") != response.status:
            extra = {}
            if response.status >= 400 and isinstance(response, web.Response) and isinstance(response.body, bytes):
                try:
                    extra["error"] = str(json.loads(response.body).get("error"))
                except (ValueError, AttributeError):
                    pass
            try:
                self._record(request, response.status, **extra)
            except Exception:  # noqa: BLE001 - the answer stands; the failure is in the log (and audit_failed)
                log.exception("admin_call_not_recorded", method=request.method, path=request.path)
        return response

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        return body

    # -- posture agents ----------------------------------------------------------------------
    async def post_posture(self, request: web.Request, caller: str) -> web.Response:
        try:
            body: Any = await request.json()
        except web.HTTPRequestEntityTooLarge:  # no silent limit: name it, so the agent splits the batch
            limit = request.client_max_size
            return web.json_response({"error": f"posture batch above the {limit}-byte request limit; send it "
                                      "in several requests", "limit_bytes": limit}, status=413)
        except ValueError:
            return _error(400, "body is not JSON")
        items = body if isinstance(body, list) else [body]
        accepted = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("identity"), str) \
                    or item.get("level") not in POSTURE_LEVELS:
                return _error(400, f"each assertion needs identity and level (one of {', '.join(POSTURE_LEVELS)})")
            accepted.append((item["identity"], item["level"]))
        refused = self._commit(request, 200, assertions=[f"{i}={lv}" for i, lv in accepted])
        if refused is not None:
            return refused
        now = time.time()
        missed = await self.gw.share_posture(accepted, now)
        self.gw.apply_posture(accepted, now)
        if missed:  # the agent must retry: a session on an unreached worker did not hear of it
            request["audit"]["workers_not_reached"] = missed
            return web.json_response({"error": f"workers {missed} did not receive the assertions; retry",
                                      "accepted": len(accepted)}, status=503)
        return web.json_response({"accepted": len(accepted)})

    # -- looking -------------------------------------------------------------------------------
    async def get_sessions(self, request: web.Request, caller: str) -> web.Response:
        out = []
        for conn in sorted(self.gw.connections, key=lambda c: c.route.name if c.route else ""):
            s = conn.session
            if conn.identity is None or s is None or conn.route is None:
                continue
            up = conn.route.upstream
            up_s = up.protocol.session if up.protocol is not None else None
            last = conn.last_decision
            out.append({
                "identity": conn.identity.id, "user": conn.user, "zone": conn.zone, "posture": conn.posture,
                "peer": conn.peer[0] if conn.peer else None, "session": conn.route.name,
                "sender_comp_id": s.config.target_comp_id.decode(), "target_comp_id": s.config.sender_comp_id.decode(),
                "logged_on": s.is_logged_on,
                "client_seq": {"next_in": s.store.next_target_seq(), "next_out": s.store.next_sender_seq()},
                "exchange": {"name": up.name, "logged_on": up.logged_on,
                             "next_in": up_s.store.next_target_seq() if up_s else None,
                             "next_out": up_s.store.next_sender_seq() if up_s else None},
                "messages": {"in": conn.app_in, "out": conn.app_out},
                "last_decision": None if last is None else {"decision": last[0], "rules": last[1],
                                                            "msg_type": last[2], "at": _iso(last[3])},
            })
        request["audit"]["sessions"] = len(out)
        return web.json_response({"sessions": out})

    async def get_kill_switch(self, request: web.Request, caller: str) -> web.Response:
        return self._kill_switch_state()

    def _kill_switch_state(self) -> web.Response:
        k = self.gw.kill
        return web.json_response({"global": k.everything, "identities": sorted(k.identities),
                                  "accounts": sorted(k.accounts)})

    async def get_metrics(self, request: web.Request, caller: str) -> web.Response:
        """Prometheus text format; any registered, live identity may scrape (mTLS still required)."""
        self.gw.refresh_metrics(time.time())
        return web.Response(body=self.gw.metrics.render(), content_type="text/plain", charset="utf-8")

    # -- acting at once: the kill switch on, a policy reload ---------------------------------------
    async def post_kill_switch(self, request: web.Request, caller: str) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        on = body.get("on")
        idents, accounts = body.get("identities", []), body.get("accounts", [])
        if not isinstance(on, bool) or not isinstance(idents, list) or not isinstance(accounts, list) \
                or not all(isinstance(x, str) for x in [*idents, *accounts]):
            return _error(400, 'say {"on": true|false} with "global": true and/or "identities"/"accounts" lists')
        everything = bool(body.get("global"))
        if not (everything or idents or accounts):
            return _error(400, 'say what: "global": true, "identities": [...] or "accounts": [...]')
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            return _error(400, '"reason" must be a string')
        scope = {"everything": everything, "identities": sorted(set(idents)), "accounts": sorted(set(accounts))}
        if not on:  # lifting a protection: a second administrator approves
            return self._ask(request, caller, KILL_SWITCH_OFF, None, reason, scope)
        refused = self._commit(request, 200, on=True, reason=reason, **scope)
        if refused is not None:
            return refused
        error = self._set_kill_switch(True, scope)
        return _error(500, error) if error else self._kill_switch_state()

    def _set_kill_switch(self, on: bool, scope: dict[str, Any]) -> str | None:
        """Write the kill-switch file and put it in force now; the error, if it could not be written."""
        path = self.gw.kill.file.path
        assert path is not None
        try:
            data = read_json(path)
            if scope["everything"]:
                data["global"] = on
            for key in ("identities", "accounts"):
                current = set(data.get(key, []))
                data[key] = sorted(current | set(scope[key]) if on else current - set(scope[key]))
            write_json(path, data)
        except (FeedError, OSError) as exc:
            return f"kill switch not changed: {exc}"
        self.gw.reload_feeds()  # in force now, not at the next tick
        return None

    async def post_policy_reload(self, request: web.Request, caller: str) -> web.Response:
        if self.gw.policy_file.path is None:
            request["audit"]["result"] = "no policy file"
            return _error(409, "this gateway has no [policy] file (allow_all)")
        error = self.gw.reload_policy_now()
        policy = self.gw.policy
        request["audit"].update(result=error or "loaded", sha256=policy.sha256 if policy else None)
        if error is not None:
            return _error(422, error)
        assert policy is not None
        return web.json_response({"sha256": policy.sha256, "rules": len(policy.rules)})

    # -- asking: what waits for a second administrator ----------------------------------------------
    def _ask(self, request: web.Request, caller: str, action: str, identity: str | None, reason: str,
             details: dict[str, Any], status: int = 202) -> web.Response:
        """Hold ``action`` until a second administrator approves it (``gateway.core.approvals``)."""
        now = time.time()
        req = Request(secrets.token_hex(8), action, identity, reason, caller, now, details,
                      requester_cert=request.get("cert", (None, None)))
        refused = self._commit(request, status, request_id=req.id, action=action, target=identity, reason=reason,
                               **details)
        if refused is not None:
            return refused
        self.requests[req.id] = req
        return web.json_response(view(req, now), status=status)

    async def post_revoke(self, request: web.Request, caller: str) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        ident, reason = body.get("identity"), body.get("reason")
        if not isinstance(ident, str) or not isinstance(reason, str) or not reason.strip():
            return _error(400, 'say {"identity": "spiffe://...", "reason": "why"}')
        if ident == caller:
            return _error(400, "an administrator cannot revoke itself")
        return self._ask(request, caller, REVOKE, ident, reason, {})

    async def post_reinstate(self, request: web.Request, caller: str) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        ident, reason = body.get("identity"), body.get("reason", "")
        if not isinstance(ident, str) or not isinstance(reason, str):
            return _error(400, 'say {"identity": "spiffe://...", "reason": "why"}')
        if self.gw.cut_reason(None, None, ident, time.time()) is None:
            return _error(404, f"{ident} is not revoked")
        return self._ask(request, caller, REINSTATE, ident, reason, {})

    async def post_jit_request(self, request: web.Request, caller: str) -> web.Response:
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        ident, minutes, reason = body.get("identity"), body.get("minutes"), body.get("reason")
        cap = self.gw.cfg.gateway.jit_max_minutes
        if not isinstance(ident, str) or ident not in self.gw.guard.identities:
            return _error(400, f"identity {ident!r} is not in the identity registry")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= cap:
            return _error(400, f"minutes must be more than 0 and at most {cap} ([gateway] jit_max_minutes)")
        if not isinstance(reason, str) or not reason.strip():
            return _error(400, "a JIT request needs a reason")
        return self._ask(request, caller, JIT, ident, reason, {"minutes": float(minutes)}, status=201)

    async def get_requests(self, request: web.Request, caller: str) -> web.Response:
        now = time.time()
        return web.json_response({"requests": [view(r, now) for r in self.requests.values()]})

    async def get_jit_requests(self, request: web.Request, caller: str) -> web.Response:
        now = time.time()
        return web.json_response({"requests": [view(r, now) for r in self.requests.values() if r.action == JIT]})

    # -- approving: the second administrator ------------------------------------------------------
    async def post_approve(self, request: web.Request, caller: str) -> web.Response:
        now = time.time()
        req = self.requests.get(request.match_info["id"])
        if req is None:
            request["audit"]["request_id"] = request.match_info["id"][:64]
            return _error(404, "no such request")
        request["audit"].update(request_id=req.id, action=req.action, target=req.identity,
                                requested_by=req.requested_by)
        why = approvals.refusal(req, caller, now, self._still_admin(req, now))
        if why is not None:
            return _error(409, why)
        approvals.approve(req, caller, now)  # before anything awaits: no second approval can slip in
        refused = self._commit(request, 200, reason=req.reason, **req.details,
                               **({"expires_at": _iso(req.expires_at)} if req.expires_at else {}))
        if refused is not None:
            req.approved_by = req.approved_at = req.expires_at = None  # not carried out: still pending
            return refused
        req.failed = self._carry_out(req, caller, now)
        if req.failed is not None:
            return _error(500, req.failed)
        return web.json_response(view(req, now))

    def _still_admin(self, req: Request, now: float) -> str | None:
        """Why the administrator who asked may no longer act (the certificate they asked with revoked or
        expired, the identity denylisted, revoked or no longer holding the role), or None: a request
        dies with its requester's authority."""
        ident = self.gw.guard.identities.get(req.requested_by)
        if ident is None or ADMIN_ROLE not in ident.roles:
            return f"{req.requested_by} no longer holds role {ADMIN_ROLE}"
        serial, not_after = req.requester_cert
        return self.gw.cut_reason(serial, not_after, req.requested_by, now)

    def _carry_out(self, req: Request, approver: str, now: float) -> str | None:
        """Do what ``req`` asked; returns why it failed, if it did."""
        if req.action == KILL_SWITCH_OFF:
            return self._set_kill_switch(False, req.details)
        assert req.identity is not None
        if req.action == REVOKE:
            self.gw.admin_revoke(req.identity, req.reason, f"{req.requested_by}, approved by {approver}", now)
            return None
        if req.action == REINSTATE:
            return None if self.gw.admin_reinstate(req.identity) else \
                f"{req.identity} was not revoked through the admin API (the CRL or the denylist refuses it)"
        path = self.gw.jit.file.path  # JIT
        assert path is not None and req.expires_at is not None
        try:
            data = read_json(path)
            data[req.identity] = max(float(data.get(req.identity, 0)), req.expires_at)
            write_json(path, data)
        except (FeedError, OSError, TypeError, ValueError) as exc:
            return f"JIT grant not written: {exc}"
        self.gw.reload_feeds()
        self.gw.enforce_context(now)
        return None

    # -- the listener ----------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        app = web.Application(middlewares=[self._audited])
        admin = ADMIN_ROLE
        routes: list[tuple[str, str, str | None, Handler]] = [
            ("POST", "/v1/posture", POSTURE_ROLE, self.post_posture),
            ("GET", "/v1/sessions", admin, self.get_sessions),
            ("GET", "/v1/kill-switch", admin, self.get_kill_switch),
            ("POST", "/v1/kill-switch", admin, self.post_kill_switch),
            ("POST", "/v1/revoke", admin, self.post_revoke),
            ("POST", "/v1/reinstate", admin, self.post_reinstate),
            ("POST", "/v1/policy/reload", admin, self.post_policy_reload),
            ("POST", "/v1/jit/requests", admin, self.post_jit_request),
            ("GET", "/v1/jit/requests", admin, self.get_jit_requests),
            ("POST", "/v1/jit/requests/{id}/approve", admin, self.post_approve),
            ("GET", "/v1/requests", admin, self.get_requests),
            ("POST", "/v1/requests/{id}/approve", admin, self.post_approve),
            ("GET", "/metrics", None, self.get_metrics),
        ]
        for method, path, role, handler in routes:
            app.router.add_route(method, path, self._guarded(role, handler))
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=self._following_context())
        await site.start()
        log.info("admin_listening", host=host, port=port)

    def _following_context(self) -> ssl.SSLContext:
        """The listener's TLS context for a site that keeps the one it was given: each handshake
        switches to the server certificate in force *now* (the watch replaces the context when the
        files rotate), as the FIX listener does, so the admin API never serves a retired certificate."""
        ctx = self.gw.server_ctx
        hub = self.gw

        def current(obj: ssl.SSLObject, _name: str | None, given: ssl.SSLContext) -> None:
            now = hub.server_ctx
            if now is not given:  # same CA and verification; the certificate and key in force now
                obj.context = now

        ctx.sni_callback = current  # called with an SSLObject under asyncio
        return ctx

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def _leaf_facts(ssl_obj: Any) -> tuple[int | None, float | None]:
    """Serial number and expiry of the verified client certificate (None when there is none)."""
    der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
    if not der:
        return None, None
    leaf = x509.load_der_x509_certificate(der)
    return leaf.serial_number, leaf.not_valid_after_utc.timestamp()
