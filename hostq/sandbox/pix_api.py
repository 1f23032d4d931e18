"""API Pix shapes the fake PSP answers with: charges, errors (RFC 7807 with `violacoes`), times and ids."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from domain.payments import brcode

ERRORS = "https://pix.bcb.gov.br/api/v2/error/"
PAYER_ISPB = "99999999"


class Problem(Exception):
    """An API Pix error (RFC 7807, with `violacoes` for a bad request)."""

    def __init__(self, status: int, kind: str, title: str, detail: str, violations: list | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.body = {"type": ERRORS + kind, "title": title, "status": status, "detail": detail}
        if violations:
            self.body["violacoes"] = [{"razao": reason, "propriedade": prop} for prop, reason in violations]


def invalid(prop: str, reason: str) -> Problem:
    """A 400 naming the property at fault."""
    return Problem(400, "CobOperacaoInvalida", "Cobrança inválida.",
                   "A requisição que busca alterar ou criar uma cobrança para pagamento imediato não respeita o "
                   "schema ou está semanticamente errada.", [(prop, reason)])


def horario(at: datetime) -> str:
    """API Pix's time: UTC, milliseconds, `Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse_time(value: str, name: str) -> datetime:
    """An RFC 3339 query parameter, or a 400 naming it."""
    try:
        # A '+' sent unencoded in a query string arrives as a space.
        parsed = datetime.fromisoformat(value.replace(" ", "+").replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise Problem(400, "ParametroInvalido", "Parâmetro inválido.",
                      f"'{name}' must be an RFC 3339 date-time with an offset, like 2026-11-22T00:00:00Z")
    return parsed


@dataclass
class Charge:
    txid: str
    valor: str
    chave: str
    expiracao: int
    criacao: datetime
    loc_id: int
    location: str
    devedor: dict | None = None
    solicitacao: str | None = None
    status: str = "ATIVA"
    revisao: int = 0
    pix: list[dict] = field(default_factory=list)

    def view(self, merchant_name: str, merchant_city: str) -> dict[str, Any]:
        """The charge as `GET /v2/cob/{txid}` shows it."""
        shown: dict[str, Any] = {
            "calendario": {"criacao": horario(self.criacao), "expiracao": self.expiracao},
            "txid": self.txid, "revisao": self.revisao,
            "loc": {"id": self.loc_id, "location": self.location, "tipoCob": "cob"},
            "location": self.location, "status": self.status, "valor": {"original": self.valor},
            "chave": self.chave,
            "pixCopiaECola": brcode.dynamic(self.location, amount=self.valor, merchant_name=merchant_name,
                                            merchant_city=merchant_city),
        }
        if self.devedor:
            shown["devedor"] = self.devedor
        if self.solicitacao:
            shown["solicitacaoPagador"] = self.solicitacao
        if self.pix:
            shown["pix"] = self.pix
        return shown

    def expired(self, now: datetime) -> bool:
        return now > self.criacao + timedelta(seconds=self.expiracao)


def valor_of(cob: dict) -> str:
    """`valor.original` of a request body, checked, or a 400."""
    original = (cob.get("valor") or {}).get("original") if isinstance(cob.get("valor"), dict) else None
    try:
        return brcode.amount_text(original if isinstance(original, str) else str(original))
    except (ValueError, ArithmeticError):
        raise invalid("cob.valor.original", 'valor.original is a string amount with two decimals, like "69.90"') \
            from None


def end_to_end_id(at: datetime) -> str:
    """`E` + the payer institution's ISPB + yyyyMMddHHmm + 11 characters: 32 in all."""
    tail = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(11))
    return f"E{PAYER_ISPB}{at.strftime('%Y%m%d%H%M')}{tail}"
