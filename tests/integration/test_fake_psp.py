"""The fake PSP of operations.md: API Pix charges, payments it can be told to receive, and their signed
webhooks, delivered to the one URL it was given (here a recording transport in place of hostq)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from domain.payments import brcode
from domain.payments.webhook_signature import HEADER, verify
from hostq.sandbox.psp import create_app

TXID = "hostqinv0000000000000000000001"
HOOK = "http://127.0.0.1:8000/v1/webhooks/pix/sandbox"


class Receiver:
    """What hostq's webhook route would get, answering `status`."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[httpx.Request] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.status)


@pytest.fixture
def receiver():
    return Receiver()


@pytest.fixture
async def psp(receiver, tmp_path):
    app = create_app(webhook_url=HOOK, webhook_secret="whsec", state_path=tmp_path / "psp.json",
                     http=httpx.AsyncClient(transport=httpx.MockTransport(receiver)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://psp") as client:
        client.app = app
        yield client


def _cob(valor: str = "69.90", **extra) -> dict:
    return {"calendario": {"expiracao": 3600}, "valor": {"original": valor}, "chave": "pix@hostq.example", **extra}


async def test_a_charge_is_created_once_under_its_txid_with_a_valid_copy_and_paste_code(psp):
    created = await psp.put(f"/v2/cob/{TXID}", json=_cob(devedor={"cpf": "12345678909", "nome": "Ana"}))
    assert created.status_code == 201, created.text
    cob = created.json()
    assert (cob["txid"], cob["status"], cob["valor"], cob["revisao"]) == (TXID, "ATIVA", {"original": "69.90"}, 0)
    assert cob["calendario"]["expiracao"] == 3600 and cob["loc"]["location"] == cob["location"]
    code = brcode.fields(cob["pixCopiaECola"])
    assert code["54"] == "69.90" and brcode.parse(code["26"])["25"] == cob["location"]
    assert (await psp.get(f"/v2/cob/{TXID}")).json() == cob

    again = await psp.put(f"/v2/cob/{TXID}", json=_cob("10.00"))
    assert again.status_code == 400 and again.json()["violacoes"][0]["propriedade"] == "cob.txid"
    assert (await psp.get(f"/v2/cob/{TXID}")).json()["valor"]["original"] == "69.90"


@pytest.mark.parametrize("txid, body, prop", [
    ("short", _cob(), "cob.txid"),
    (TXID, _cob("69.9"), "cob.valor.original"),
    (TXID, {**_cob(), "valor": {"original": 69.9}}, "cob.valor.original"),
    (TXID, {"valor": {"original": "1.00"}}, "cob.chave"),
    (TXID, _cob(calendario={"expiracao": 0}), "cob.calendario.expiracao"),
    (TXID, _cob(devedor={"nome": "Ana"}), "cob.devedor"),
])
async def test_a_bad_charge_is_refused_with_its_violation_and_nothing_is_kept(psp, txid, body, prop):
    answer = await psp.put(f"/v2/cob/{txid}", json=body)
    assert answer.status_code == 400
    assert answer.json()["type"].endswith("/CobOperacaoInvalida")
    assert answer.json()["violacoes"][0]["propriedade"] == prop
    assert (await psp.get("/__sandbox/charges")).json() == {"charges": []}


async def test_paying_posts_one_signed_webhook_to_the_given_url_and_concludes_the_charge(psp, receiver):
    await psp.put(f"/v2/cob/{TXID}", json=_cob())
    paid = await psp.post(f"/__sandbox/pay/{TXID}")
    assert paid.status_code == 200, paid.text
    e2e = paid.json()["endToEndId"]
    assert len(e2e) == 32 and e2e.startswith("E") and paid.json()["webhooks"] == [{"status": 200, "error": None}]

    [request] = receiver.requests
    assert str(request.url) == HOOK  # exactly the URL it was given
    body = request.content
    assert verify(["whsec"], request.headers[HEADER], body, now=time.time())
    [pix] = json.loads(body)["pix"]
    assert (pix["endToEndId"], pix["txid"], pix["valor"]) == (e2e, TXID, "69.90")
    assert pix["horario"].endswith("Z")

    cob = (await psp.get(f"/v2/cob/{TXID}")).json()
    assert cob["status"] == "CONCLUIDA" and cob["pix"] == [pix]
    assert (await psp.get(f"/v2/pix/{e2e}")).json() == pix
    twice = await psp.post(f"/__sandbox/pay/{TXID}")
    assert twice.status_code == 409 and len(receiver.requests) == 1


async def test_deliveries_amount_and_bad_signature(psp, receiver):
    await psp.put(f"/v2/cob/{TXID}", json=_cob())
    paid = (await psp.post(f"/__sandbox/pay/{TXID}",
                           json={"amount": "50.00", "deliveries": 2, "bad_signature": True})).json()
    assert len(receiver.requests) == 2
    bodies = [json.loads(r.content)["pix"][0] for r in receiver.requests]
    assert {b["endToEndId"] for b in bodies} == {paid["endToEndId"]}  # the same payment, twice
    assert bodies[0]["valor"] == "50.00"  # another amount than the charge's is recorded as paid
    for request in receiver.requests:
        assert not verify(["whsec"], request.headers[HEADER], request.content, now=time.time())
    hooks = (await psp.get("/__sandbox/webhooks")).json()["webhooks"]
    assert [(h["status"], h["bad_signature"]) for h in hooks] == [(200, True), (200, True)]


async def test_no_webhook_then_the_payment_is_found_by_polling(psp, receiver):
    await psp.put(f"/v2/cob/{TXID}", json=_cob())
    other = TXID[:-1] + "2"
    await psp.put(f"/v2/cob/{other}", json=_cob("12.00"))
    missed = (await psp.post(f"/__sandbox/pay/{TXID}", json={"deliveries": 0})).json()
    await psp.post(f"/__sandbox/pay/{other}", json={"deliveries": 0, "amount": 12})
    assert receiver.requests == []

    now = datetime.now(UTC)
    window = {"inicio": (now - timedelta(minutes=5)).isoformat(), "fim": (now + timedelta(minutes=5)).isoformat()}
    listed = (await psp.get("/v2/pix", params={**window, "txid": TXID})).json()
    assert [p["endToEndId"] for p in listed["pix"]] == [missed["endToEndId"]]
    every = (await psp.get("/v2/pix", params={**window, "paginacao.itensPorPagina": 1})).json()
    assert every["parametros"]["paginacao"]["quantidadeTotalDeItens"] == 2 and len(every["pix"]) == 1
    earlier = {"inicio": (now - timedelta(days=2)).isoformat(), "fim": (now - timedelta(days=1)).isoformat()}
    assert (await psp.get("/v2/pix", params=earlier)).json()["pix"] == []
    assert (await psp.get("/v2/pix")).status_code == 400


async def test_a_late_webhook_comes_after_the_answer(psp, receiver):
    await psp.put(f"/v2/cob/{TXID}", json=_cob())
    paid = await psp.post(f"/__sandbox/pay/{TXID}", json={"delay_s": 0.2})
    assert paid.json()["webhooks"] == [] and receiver.requests == []
    for _ in range(50):
        if receiver.requests:
            break
        await asyncio.sleep(0.05)
    assert len(receiver.requests) == 1


async def test_an_unreachable_hostq_is_recorded_and_the_payment_stands(tmp_path):
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    app = create_app(webhook_url=HOOK, webhook_secret="s",
                     http=httpx.AsyncClient(transport=httpx.MockTransport(refuse)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://psp") as psp:
        await psp.put(f"/v2/cob/{TXID}", json=_cob())
        paid = (await psp.post(f"/__sandbox/pay/{TXID}")).json()
        assert paid["webhooks"][0]["status"] is None and "ConnectError" in paid["webhooks"][0]["error"]
        assert (await psp.get(f"/v2/cob/{TXID}")).json()["status"] == "CONCLUIDA"


async def test_removed_or_expired_charges_cannot_be_paid(psp):
    await psp.put(f"/v2/cob/{TXID}", json=_cob())
    removed = await psp.patch(f"/v2/cob/{TXID}", json={"status": "REMOVIDA_PELO_USUARIO_RECEBEDOR"})
    assert removed.json()["status"] == "REMOVIDA_PELO_USUARIO_RECEBEDOR" and removed.json()["revisao"] == 1
    assert (await psp.post(f"/__sandbox/pay/{TXID}")).status_code == 409
    other = TXID[:-1] + "9"
    await psp.put(f"/v2/cob/{other}", json=_cob())
    psp.app.charges[other].criacao -= timedelta(seconds=3601)
    refused = await psp.post(f"/__sandbox/pay/{other}")
    assert refused.status_code == 409 and "expired" in refused.json()["detail"]
    assert (await psp.post("/__sandbox/pay/unknown" + "0" * 20)).status_code == 404


async def test_tokens_it_issued_or_none_and_charges_survive_a_restart(psp, tmp_path):
    token = (await psp.post("/oauth/token", data={"grant_type": "client_credentials"})).json()
    assert token["token_type"] == "Bearer" and "cob.write" in token["scope"]
    authed = await psp.put(f"/v2/cob/{TXID}", json=_cob(), headers={"authorization": f"Bearer {token['access_token']}"})
    assert authed.status_code == 201
    wrong = await psp.get(f"/v2/cob/{TXID}", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401

    restarted = create_app(webhook_url=HOOK, webhook_secret="whsec", state_path=tmp_path / "psp.json")
    assert restarted.charges[TXID].view("X", "Y")["valor"] == {"original": "69.90"}
    assert restarted.next_loc == 2
