"""The fake PSP: Banco Central's "API Pix" shapes (immediate charges, received payments), and a control API that
pays a charge and POSTs the payment webhook, signed with the built-in scheme, to the URL it was started with.

Charges live in memory (in a file too with `--state`). OAuth2 is optional here: `POST /oauth/token` issues a
bearer token to any client, and an `/v2` call either carries a token it issued or none (a wrong one is 401).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl

import httpx
import msgspec
import uvicorn

from domain.payments.webhook_signature import HEADER, signature_header
from hostq.sandbox import statefile
from hostq.sandbox.asgi import STOP_WITHIN_S
from hostq.sandbox.asgi import SandboxApp, respond
from hostq.sandbox.pix_api import Charge, Problem, end_to_end_id, horario, invalid, parse_time, valor_of
from hostq.stopping import exit_zero_on_stop_signals

TXID = re.compile(r"[a-zA-Z0-9]{26,35}")
SCOPES = "cob.write cob.read pix.read webhook.write webhook.read"


class FakePsp(SandboxApp):
    """One fake PSP; all state lives on the instance (and in `state_path` when given)."""

    def __init__(self, *, webhook_url: str, webhook_secret: str, host: str = "127.0.0.1:8089",
                 merchant_name: str = "HOSTQ SANDBOX", merchant_city: str = "SAO PAULO",
                 state_path: Path | None = None, http: httpx.AsyncClient | None = None) -> None:
        self.webhook_url, self.webhook_secret, self.host = webhook_url, webhook_secret, host
        self.merchant_name, self.merchant_city = merchant_name, merchant_city
        self.charges: dict[str, Charge] = {}
        self.tokens: set[str] = set()
        self.webhooks: list[dict] = []
        self.next_loc = 1
        self.state_path = state_path
        self._http = http
        self._pending: set[asyncio.Task] = set()
        if state_path is not None:
            statefile.check_writable(state_path, "fake PSP")
            if state_path.exists():
                self._load(state_path)

    def _load(self, path: Path) -> None:
        def parse(state: dict) -> tuple[list[Charge], int]:
            return ([Charge(**{**fields, "criacao": datetime.fromisoformat(fields["criacao"])})
                     for fields in state["charges"]], int(state["next_loc"]))

        charges, self.next_loc = statefile.read(path, "fake PSP", parse)
        self.charges = {charge.txid: charge for charge in charges}

    def save(self) -> None:
        """Write the charges to the state file, if any."""
        if self.state_path is not None:
            charges = [{**asdict(c), "criacao": c.criacao.isoformat()} for c in self.charges.values()]
            statefile.write(self.state_path, {"charges": charges, "next_loc": self.next_loc})

    async def handle(self, scope: dict, receive: Callable, send: Callable, body: bytes) -> None:
        method, path = scope["method"], scope["path"].rstrip("/")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        try:
            if path == "/oauth/token" and method == "POST":
                status, answer = 200, self.issue_token()
            elif path.startswith("/v2/"):
                self.authenticate(scope)
                status, answer = self.api(method, path[len("/v2/"):], query, body)
            elif path.startswith("/__sandbox/"):
                status, answer = await self.control(method, path[len("/__sandbox/"):], body)
            else:
                raise Problem(404, "NaoEncontrado", "Não encontrado.", f"no such route: {method} {path}")
        except Problem as problem:
            status, answer = problem.status, problem.body
        await respond(send, status, msgspec.json.encode(answer))

    def issue_token(self) -> dict:
        token = secrets.token_urlsafe(24)
        self.tokens.add(token)
        return {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": SCOPES}

    def authenticate(self, scope: dict) -> None:
        """A bearer token must be one this fake issued; no Authorization header at all is let through."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                kind, _, token = value.decode("latin-1").partition(" ")
                if kind.lower() != "bearer" or token.strip() not in self.tokens:
                    raise Problem(401, "AcessoNegado", "Acesso negado.", "unknown or expired access token")

    def api(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, dict]:
        """Answer one API Pix call."""
        kind, _, ident = path.partition("/")
        match method, kind:
            case "PUT", "cob" if ident:
                return 201, self.create_charge(ident, self._json(body)).view(self.merchant_name, self.merchant_city)
            case "PATCH", "cob" if ident:
                return 200, self.revise_charge(ident, self._json(body)).view(self.merchant_name, self.merchant_city)
            case "GET", "cob" if ident:
                return 200, self.charge(ident).view(self.merchant_name, self.merchant_city)
            case "GET", "pix" if ident:
                for charge in self.charges.values():
                    for payment in charge.pix:
                        if payment["endToEndId"] == ident:
                            return 200, payment
                raise Problem(404, "PixNaoEncontrado", "Pix não encontrado.", f"no payment {ident}")
            case "GET", "pix":
                return 200, self.received(query)
        raise Problem(404, "NaoEncontrado", "Não encontrado.", f"no such route: {method} /v2/{path}")

    @staticmethod
    def _json(body: bytes) -> dict:
        try:
            decoded = msgspec.json.decode(body or b"{}")
        except msgspec.DecodeError:
            raise invalid("cob", "the body is not JSON") from None
        if not isinstance(decoded, dict):
            raise invalid("cob", "the body must be a JSON object")
        return decoded

    def charge(self, txid: str) -> Charge:
        if (charge := self.charges.get(txid)) is None:
            raise Problem(404, "CobNaoEncontrado", "Cobrança não encontrada.",
                          f"Cobrança em questão não foi encontrada para a location requisitada ({txid}).")
        return charge

    def create_charge(self, txid: str, cob: dict) -> Charge:
        """`PUT /v2/cob/{txid}`: a new immediate charge; the txid is the caller's and used only once."""
        if not TXID.fullmatch(txid):
            raise invalid("cob.txid", "txid must be 26 to 35 letters and digits")
        if txid in self.charges:
            raise invalid("cob.txid", "txid já utilizado: a charge with this txid exists")
        valor, chave = valor_of(cob), cob.get("chave")
        if not isinstance(chave, str) or not chave:
            raise invalid("cob.chave", "chave (the receiver's PIX key) is required")
        expiracao = (cob.get("calendario") or {}).get("expiracao", 86400)
        if not isinstance(expiracao, int) or isinstance(expiracao, bool) or expiracao <= 0:
            raise invalid("cob.calendario.expiracao", "expiracao is a positive number of seconds")
        devedor, note = cob.get("devedor"), cob.get("solicitacaoPagador")
        if devedor is not None and not (isinstance(devedor, dict) and devedor.get("nome")
                                        and (devedor.get("cpf") or devedor.get("cnpj"))):
            raise invalid("cob.devedor", "devedor needs nome and cpf or cnpj")
        location = f"{self.host}/qr/v2/{uuid.uuid4().hex}"
        charge = Charge(txid, valor, chave, expiracao, datetime.now(UTC), self.next_loc, location, devedor,
                        note if isinstance(note, str) else None)
        self.next_loc += 1
        self.charges[txid] = charge
        self.save()
        return charge

    def revise_charge(self, txid: str, changes: dict) -> Charge:
        """`PATCH /v2/cob/{txid}`: a new amount, or removal by the receiver, while the charge is active."""
        charge = self.charge(txid)
        if charge.status != "ATIVA":
            raise invalid("cob.status", f"the charge is {charge.status}: only an ATIVA charge can be revised")
        if "status" in changes and changes["status"] != "REMOVIDA_PELO_USUARIO_RECEBEDOR":
            raise invalid("cob.status", "status can only become REMOVIDA_PELO_USUARIO_RECEBEDOR")
        valor = valor_of(changes) if "valor" in changes else charge.valor
        charge.valor, charge.revisao = valor, charge.revisao + 1
        if "status" in changes:
            charge.status = changes["status"]
        self.save()
        return charge

    def received(self, query: dict[str, str]) -> dict:
        """`GET /v2/pix`: payments received between `inicio` and `fim`, optionally of one txid, paginated."""
        if "inicio" not in query or "fim" not in query:
            raise Problem(400, "ParametroInvalido", "Parâmetro inválido.", "inicio and fim are required")
        start, end = parse_time(query["inicio"], "inicio"), parse_time(query["fim"], "fim")
        try:
            page = int(query.get("paginacao.paginaAtual", 0))
            size = int(query.get("paginacao.itensPorPagina", 100))
        except ValueError:
            page = size = -1
        if page < 0 or not 1 <= size <= 1000:
            raise Problem(400, "ParametroInvalido", "Parâmetro inválido.", "paginaAtual >= 0, itensPorPagina 1-1000")
        found = sorted((p for c in self.charges.values() for p in c.pix
                        if start <= parse_time(p["horario"], "horario") <= end
                        and query.get("txid", p["txid"]) == p["txid"]), key=lambda p: p["horario"])
        pages = -(-len(found) // size)
        paging = {"paginaAtual": page, "itensPorPagina": size, "quantidadeDePaginas": pages,
                  "quantidadeTotalDeItens": len(found)}
        return {"parametros": {"inicio": query["inicio"], "fim": query["fim"], "paginacao": paging},
                "pix": found[page * size:(page + 1) * size]}

    async def control(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """Answer one /__sandbox/ call: pay a charge, list or clear charges and webhook deliveries."""
        match method, path.split("/"):
            case "POST", ["pay", txid]:
                return 200, await self.pay(txid, self._json(body))
            case "GET", ["charges"]:
                return 200, {"charges": [c.view(self.merchant_name, self.merchant_city) for c in self.charges.values()]}
            case "DELETE", ["charges"]:
                self.charges.clear()
                self.save()
                return 200, {"charges": []}
            case "GET", ["webhooks"]:
                return 200, {"webhooks": self.webhooks}
            case "DELETE", ["webhooks"]:
                self.webhooks.clear()
                return 200, {"webhooks": []}
        raise Problem(404, "NaoEncontrado", "Não encontrado.", f"no such sandbox endpoint: {method} /__sandbox/{path}")

    async def pay(self, txid: str, options: dict) -> dict:
        """Mark the charge paid (with its amount or another) and send its webhook `deliveries` times."""
        charge, now = self.charge(txid), datetime.now(UTC)
        if charge.status != "ATIVA" or charge.expired(now):
            state = "expired" if charge.status == "ATIVA" else charge.status
            raise Problem(409, "CobOperacaoInvalida", "Cobrança não pode ser paga.", f"the charge is {state}")
        amount = options.get("amount", charge.valor)
        if isinstance(amount, (int, float)) and not isinstance(amount, bool):
            try:
                amount = f"{Decimal(str(amount)):.2f}"
            except InvalidOperation:
                pass
        deliveries, delay = options.get("deliveries", 1), options.get("delay_s", 0)
        if not isinstance(deliveries, int) or isinstance(deliveries, bool) or not 0 <= deliveries <= 10:
            raise invalid("deliveries", "deliveries is a whole number from 0 (no webhook) to 10")
        if not isinstance(delay, (int, float)) or isinstance(delay, bool) or not 0 <= delay <= 3600:
            raise invalid("delay_s", "delay_s is a number of seconds from 0 to 3600")
        payment = {"endToEndId": end_to_end_id(now), "txid": txid, "valor": valor_of({"valor": {"original": amount}}),
                   "chave": charge.chave, "horario": horario(now), "infoPagador": str(options.get("info", ""))}
        charge.pix.append(payment)
        charge.status = "CONCLUIDA"
        self.save()
        bad = bool(options.get("bad_signature", False))
        sends = [self.deliver(payment, bad) for _ in range(deliveries)]
        if delay:
            task = asyncio.ensure_future(self._later(delay, sends))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return {**payment, "webhooks": []}
        return {**payment, "webhooks": [await send for send in sends]}

    @staticmethod
    async def _later(delay: float, sends: list) -> None:
        await asyncio.sleep(delay)
        for send in sends:
            await send

    async def deliver(self, payment: dict, bad_signature: bool) -> dict:
        """POST one payment webhook and keep what came of it (GET /__sandbox/webhooks)."""
        body = msgspec.json.encode({"pix": [payment]})
        secret = self.webhook_secret + ("-not-the-secret" if bad_signature else "")
        headers = {"content-type": "application/json", HEADER: signature_header([secret], int(time.time()), body)}
        record: dict[str, Any] = {"endToEndId": payment["endToEndId"], "txid": payment["txid"],
                                  "url": self.webhook_url, "bad_signature": bad_signature,
                                  "at": horario(datetime.now(UTC)), "status": None, "error": None}
        try:
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=10)
            record["status"] = (await self._http.post(self.webhook_url, content=body, headers=headers)).status_code
        except httpx.HTTPError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.webhooks.append(record)
        return {"status": record["status"], "error": record["error"]}


def create_app(**options: Any) -> FakePsp:
    """Build a fake PSP ASGI app (see FakePsp for the options)."""
    return FakePsp(**options)


def serve(host: str = "127.0.0.1", port: int = 8089, **options: Any) -> None:
    """Run the fake PSP until interrupted."""
    exit_zero_on_stop_signals()
    uvicorn.run(create_app(host=f"{host}:{port}", **options), host=host, port=port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=STOP_WITHIN_S)
