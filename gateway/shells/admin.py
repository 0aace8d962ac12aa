"""Admin API (edge): HTTP + JSON on its own mutual-TLS listener.

Only identities from the registry get in, each endpoint names the role it
needs, and every call — allowed or refused — is an ``admin_call`` audit record.

* ``POST /v1/posture`` — role ``posture_agent``; body
  ``{"identity": "spiffe://...", "level": "compliant"}`` or a list of them.
  Takes effect at once: live sessions are re-decided and, where the policy
  says so, logged out.
* role ``gateway_admin``:
  ``GET /v1/sessions`` (identity, zone, posture, CompIDs, sequence numbers on
  both legs, message counts, last decision);
  ``GET|POST /v1/kill-switch`` (``{"on": true, "global": true}`` or
  ``"identities"``/``"accounts"`` lists, ``"reason"``);
  ``POST /v1/revoke`` (``{"identity", "reason"}``: refused from now on,
  persisted, live sessions cut) and ``POST /v1/reinstate``;
  ``POST /v1/policy/reload``;
  just-in-time access: ``POST /v1/jit/requests`` (``{"identity", "minutes",
  "reason"}``, capped by ``[gateway] jit_max_minutes``), ``GET
  /v1/jit/requests``, ``POST /v1/jit/requests/{id}/approve`` — by a *second*
  administrator; the grant then runs from approval and ends by itself.
* ``GET /metrics`` — Prometheus text; any registered identity (mTLS still required).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from cryptography import x509

from gateway.core import pipeline
from gateway.core.policy.engine import POSTURE_LEVELS
from gateway.edges import tls
from gateway.edges.feeds import FeedError, read_json, write_json

if TYPE_CHECKING:
    from gateway.shells.ports import Hub

log = structlog.get_logger("fixgw.admin")

ADMIN_ROLE = "gateway_admin"
#: an unapproved JIT request lapses after this long
JIT_REQUEST_TTL = 3600.0


@dataclass
class JitRequest:
    id: str
    identity: str
    minutes: float
    reason: str
    requested_by: str
    requested_at: float
    approved_by: str | None = None
    approved_at: float | None = None
    expires_at: float | None = None

    def view(self, now: float) -> dict[str, Any]:
        state = "pending"
        if self.approved_at is not None:
            state = "active" if self.expires_at is not None and now < self.expires_at else "expired"
        elif now - self.requested_at > JIT_REQUEST_TTL:
            state = "lapsed"
        return {"id": self.id, "identity": self.identity, "minutes": self.minutes, "reason": self.reason,
                "requested_by": self.requested_by, "requested_at": _iso(self.requested_at),
                "approved_by": self.approved_by, "expires_at": _iso(self.expires_at), "state": state}


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class AdminAPI:
    def __init__(self, gw: Hub) -> None:
        self.gw = gw
        self.runner: web.AppRunner | None = None
        self.jit_requests: dict[str, JitRequest] = {}

    def _caller(self, request: web.Request, role: str | None) -> tuple[str | None, web.Response | None]:
        """The caller's identity, decided by the trust pipeline (``gateway.core.pipeline.operator``):
        registered, live — the listener's CRL, denylist, admin revocations and expiry, checked on
        every call — and holding ``role`` (None: any identity).  Refusals are audited."""
        transport = request.transport
        ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
        ident, why = self.gw.guard.identify(tls.peer_uri_sans(ssl_obj))
        revoked = None
        if ident is not None:
            serial, not_after = _leaf_facts(ssl_obj)
            revoked = self.gw.cut_reason(serial, not_after, ident.id, time.time())
        v = pipeline.operator(ident, why, revoked, role)
        if not v.allowed:
            self.gw.audit_event("admin_call", path=request.path, method=request.method, peer=request.remote,
                                identity=ident.id if ident is not None else None, allowed=False,
                                rule=v.rule_ids[0], reason=v.reason)
            return None, web.json_response({"error": v.reason}, status=403)
        assert ident is not None
        return ident.id, None

    async def post_posture(self, request: web.Request) -> web.Response:
        caller, refused = self._caller(request, "posture_agent")
        if refused is not None:
            return refused
        try:
            body: Any = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        items = body if isinstance(body, list) else [body]
        now = time.time()
        accepted = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("identity"), str) \
                    or item.get("level") not in POSTURE_LEVELS:
                return web.json_response(
                    {"error": f"each assertion needs identity and level (one of {', '.join(POSTURE_LEVELS)})"},
                    status=400)
            accepted.append((item["identity"], item["level"]))
        missed = self.gw.share_posture(accepted, now)
        self.gw.audit_event("admin_call", path=request.path, identity=caller, allowed=not missed,
                            assertions=[f"{i}={lv}" for i, lv in accepted],
                            **({"workers_not_reached": missed} if missed else {}))
        self.gw.apply_posture(accepted, now)
        if missed:  # the agent must retry: a session on an unreached worker did not hear of it
            return web.json_response({"error": f"workers {missed} did not receive the assertions; retry",
                                      "accepted": len(accepted)}, status=503)
        return web.json_response({"accepted": len(accepted)})

    def _audit(self, request: web.Request, caller: str, **fields: Any) -> None:
        self.gw.audit_event("admin_call", path=request.path, method=request.method, identity=caller,
                            allowed=True, **fields)

    def _admin(self, request: web.Request) -> str | web.Response:
        """The calling administrator's identity, or the refusal to return (audited)."""
        caller, refused = self._caller(request, ADMIN_ROLE)
        if refused is not None:
            return refused
        assert caller is not None
        return caller

    async def _admin_json(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        """``_admin`` plus the JSON object body."""
        caller = self._admin(request)
        if isinstance(caller, web.Response):
            return caller
        body = await self._body(request)
        if isinstance(body, web.Response):
            return body
        return caller, body

    async def _body(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        return body

    async def get_sessions(self, request: web.Request) -> web.Response:
        caller = self._admin(request)
        if isinstance(caller, web.Response):
            return caller
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
        self._audit(request, caller, sessions=len(out))
        return web.json_response({"sessions": out})

    async def get_kill_switch(self, request: web.Request) -> web.Response:
        caller = self._admin(request)
        if isinstance(caller, web.Response):
            return caller
        k = self.gw.kill
        self._audit(request, caller)
        return web.json_response({"global": k.everything, "identities": sorted(k.identities),
                                  "accounts": sorted(k.accounts)})

    async def post_kill_switch(self, request: web.Request) -> web.Response:
        got = await self._admin_json(request)
        if isinstance(got, web.Response):
            return got
        caller, body = got
        on = body.get("on")
        idents, accounts = body.get("identities", []), body.get("accounts", [])
        if not isinstance(on, bool) or not isinstance(idents, list) or not isinstance(accounts, list) \
                or not all(isinstance(x, str) for x in [*idents, *accounts]):
            return _error(400, 'say {"on": true|false} with "global": true and/or "identities"/"accounts" lists')
        if not (body.get("global") or idents or accounts):
            return _error(400, 'say what: "global": true, "identities": [...] or "accounts": [...]')
        path = self.gw.kill.file.path
        assert path is not None
        try:
            data = read_json(path)
        except FeedError as exc:
            return _error(500, str(exc))
        if body.get("global"):
            data["global"] = on
        for key, values in (("identities", idents), ("accounts", accounts)):
            current = set(data.get(key, []))
            data[key] = sorted(current | set(values) if on else current - set(values))
        write_json(path, data)
        self.gw.reload_feeds()  # in force now, not at the next tick
        self._audit(request, caller, on=on, everything=bool(body.get("global")), identities=idents,
                    accounts=accounts, reason=str(body.get("reason", "")))
        return await self.get_kill_switch_state()

    async def get_kill_switch_state(self) -> web.Response:
        k = self.gw.kill
        return web.json_response({"global": k.everything, "identities": sorted(k.identities),
                                  "accounts": sorted(k.accounts)})

    async def post_revoke(self, request: web.Request) -> web.Response:
        got = await self._admin_json(request)
        if isinstance(got, web.Response):
            return got
        caller, body = got
        ident, reason = body.get("identity"), body.get("reason")
        if not isinstance(ident, str) or not isinstance(reason, str) or not reason.strip():
            return _error(400, 'say {"identity": "spiffe://...", "reason": "why"}')
        if ident == caller:
            return _error(400, "an administrator cannot revoke itself")
        cut = sum(1 for c in self.gw.connections if c.identity is not None and c.identity.id == ident)
        self._audit(request, caller, target=ident, reason=reason, live_sessions=cut)
        self.gw.admin_revoke(ident, reason, caller, time.time())
        return web.json_response({"revoked": ident, "live_sessions_cut": cut})

    async def post_reinstate(self, request: web.Request) -> web.Response:
        got = await self._admin_json(request)
        if isinstance(got, web.Response):
            return got
        caller, body = got
        ident = body.get("identity")
        if not isinstance(ident, str):
            return _error(400, 'say {"identity": "spiffe://..."}')
        done = self.gw.admin_reinstate(ident)
        self._audit(request, caller, target=ident, reinstated=done)
        if not done:
            return _error(404, f"{ident} was not revoked through the admin API")
        return web.json_response({"reinstated": ident})

    async def post_policy_reload(self, request: web.Request) -> web.Response:
        caller = self._admin(request)
        if isinstance(caller, web.Response):
            return caller
        if self.gw.policy_file.path is None:
            self._audit(request, caller, result="no policy file")
            return _error(409, "this gateway has no [policy] file (allow_all)")
        error = self.gw.reload_policy_now()
        policy = self.gw.policy
        self._audit(request, caller, result=error or "loaded", sha256=policy.sha256 if policy else None)
        if error is not None:
            return _error(422, error)
        assert policy is not None
        return web.json_response({"sha256": policy.sha256, "rules": len(policy.rules)})

    # -- just-in-time access: one administrator asks, another approves ----------------
    async def post_jit_request(self, request: web.Request) -> web.Response:
        got = await self._admin_json(request)
        if isinstance(got, web.Response):
            return got
        caller, body = got
        ident, minutes, reason = body.get("identity"), body.get("minutes"), body.get("reason")
        cap = self.gw.cfg.gateway.jit_max_minutes
        if not isinstance(ident, str) or ident not in self.gw.guard.identities:
            return _error(400, f"identity {ident!r} is not in the identity registry")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or not 0 < minutes <= cap:
            return _error(400, f"minutes must be more than 0 and at most {cap} ([gateway] jit_max_minutes)")
        if not isinstance(reason, str) or not reason.strip():
            return _error(400, "a JIT request needs a reason")
        req = JitRequest(secrets.token_hex(8), ident, float(minutes), reason, caller, time.time())
        self.jit_requests[req.id] = req
        self._audit(request, caller, jit_request=req.id, target=ident, minutes=minutes, reason=reason)
        return web.json_response(req.view(time.time()), status=201)

    async def get_jit_requests(self, request: web.Request) -> web.Response:
        caller = self._admin(request)
        if isinstance(caller, web.Response):
            return caller
        now = time.time()
        self._audit(request, caller)
        return web.json_response({"requests": [r.view(now) for r in self.jit_requests.values()]})

    async def post_jit_approve(self, request: web.Request) -> web.Response:
        caller = self._admin(request)
        if isinstance(caller, web.Response):
            return caller
        now = time.time()
        req = self.jit_requests.get(request.match_info["id"])
        if req is None:
            self._audit(request, caller, result="no such request")
            return _error(404, "no such JIT request")
        state = req.view(now)["state"]
        refusal = None
        if req.requested_by == caller:
            refusal = "the administrator who asked cannot approve: a second administrator must"
        elif state != "pending":
            refusal = f"the request is {state}"
        if refusal is not None:
            self.gw.audit_event("admin_call", path=request.path, method=request.method, identity=caller,
                                allowed=False, reason=refusal, jit_request=req.id)
            return _error(409, refusal)
        req.approved_by, req.approved_at = caller, now
        req.expires_at = now + req.minutes * 60
        path = self.gw.jit.file.path
        assert path is not None
        try:
            data = read_json(path)
        except FeedError as exc:
            return _error(500, str(exc))
        data[req.identity] = max(float(data.get(req.identity, 0)), req.expires_at)
        write_json(path, data)
        self.gw.reload_feeds()
        self.gw.enforce_context(now)
        self._audit(request, caller, jit_request=req.id, target=req.identity, requested_by=req.requested_by,
                    expires_at=_iso(req.expires_at))
        return web.json_response(req.view(now))

    async def get_metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format; any registered, live identity may scrape (mTLS still required)."""
        caller, refused = self._caller(request, None)
        if refused is not None:
            return refused
        assert caller is not None
        self._audit(request, caller)
        self.gw.refresh_metrics(time.time())
        return web.Response(body=self.gw.metrics.render(), content_type="text/plain", charset="utf-8")

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_post("/v1/posture", self.post_posture)
        app.router.add_get("/v1/sessions", self.get_sessions)
        app.router.add_get("/v1/kill-switch", self.get_kill_switch)
        app.router.add_post("/v1/kill-switch", self.post_kill_switch)
        app.router.add_post("/v1/revoke", self.post_revoke)
        app.router.add_post("/v1/reinstate", self.post_reinstate)
        app.router.add_post("/v1/policy/reload", self.post_policy_reload)
        app.router.add_post("/v1/jit/requests", self.post_jit_request)
        app.router.add_get("/v1/jit/requests", self.get_jit_requests)
        app.router.add_post("/v1/jit/requests/{id}/approve", self.post_jit_approve)
        app.router.add_get("/metrics", self.get_metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=self.gw.server_ctx)
        await site.start()
        log.info("admin_listening", host=host, port=port)

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
