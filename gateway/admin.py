"""Admin API (edge): HTTP + JSON on its own mutual-TLS listener.

Only identities from the registry get in, every call is audited, and each
endpoint names the role it needs.  For now it carries the posture feed's
push side; the operator endpoints (sessions, kill switch, JIT approvals)
grow here.

* ``POST /v1/posture`` — role ``posture_agent``; body
  ``{"identity": "spiffe://...", "level": "compliant"}`` or a list of them.
  The assertion takes effect at once: live sessions are re-decided and,
  where the policy says so, logged out.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from . import tls
from .policy.engine import POSTURE_LEVELS

if TYPE_CHECKING:
    from .proxy import Gateway

log = structlog.get_logger("fixgw.admin")


class AdminAPI:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.runner: web.AppRunner | None = None

    def _caller(self, request: web.Request, role: str) -> tuple[str | None, web.Response | None]:
        transport = request.transport
        ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
        ident, why = self.gw.guard.identify(tls.peer_uri_sans(ssl_obj))
        peer = request.remote
        if ident is None:
            self.gw._audit_safe("admin_call", path=request.path, peer=peer, allowed=False, reason=why)
            return None, web.json_response({"error": why}, status=403)
        if role not in ident.roles:
            reason = f"{ident.id} lacks role {role}"
            self.gw._audit_safe("admin_call", path=request.path, identity=ident.id, peer=peer, allowed=False,
                                reason=reason)
            return None, web.json_response({"error": reason}, status=403)
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
        for ident, level in accepted:
            self.gw.posture.push(ident, level, now)
        self.gw._audit_safe("admin_call", path=request.path, identity=caller, allowed=True,
                            assertions=[f"{i}={lv}" for i, lv in accepted])
        self.gw.enforce_context(now)
        return web.json_response({"accepted": len(accepted)})

    async def get_metrics(self, request: web.Request) -> web.Response:
        """Prometheus text format; any registered identity may scrape (mTLS still required)."""
        transport = request.transport
        ssl_obj = transport.get_extra_info("ssl_object") if transport is not None else None
        ident, why = self.gw.guard.identify(tls.peer_uri_sans(ssl_obj))
        if ident is None:
            return web.json_response({"error": why}, status=403)
        return web.Response(body=self.gw.metrics.render(), content_type="text/plain", charset="utf-8")

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_post("/v1/posture", self.post_posture)
        app.router.add_get("/metrics", self.get_metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, ssl_context=self.gw.server_ctx)
        await site.start()
        log.info("admin_listening", host=host, port=port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
