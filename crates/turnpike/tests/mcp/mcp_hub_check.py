"""Drives `turnpike mcp --hub` with the official MCP Python SDK (PyPI `mcp`) as the client.

Usage: mcp_hub_check.py TURNPIKE_BIN HUB_URL ADMIN_API_URL ALICE_TOKEN UPSTREAM_URL

The SDK starts `TURNPIKE_BIN mcp --wallet agent --hub HUB_URL …` over stdio (the environment
passes through: the wallet file and the agent's LNbits key). The hub (a real `turnpike serve`
with [hub]) has alice's `quote` (21 sats, GET, with a description and an input schema), `x.y`
and `x_y` (1 sat each: their tool names collide), bob's `data` (100 sats, above the wallet's
max_per_call of 50) and its route `ingest` (5 sats, POST); the wallet asks approval above 20
sats (the first session approves through elicitation). The upstream echoes {method, uri, body}, and answers 404 under
`/missing`. LNbits invoices are in whole sats: the hub asks 21 sats + 2 % as 22 sats, and its
directory lists that. The script exits non-zero on the first failed check and prints one JSON summary
line on success.
"""

import asyncio
import json
import os
import sys
import urllib.request

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

CHANGED = []
ASKED = []


async def on_elicit(_context, params):
    ASKED.append(params.message)
    return types.ElicitResult(action="accept", content={"approve": True})


async def on_message(message):
    if isinstance(message, types.ToolListChangedNotification):
        CHANGED.append(message.method)


def text_of(result):
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def echoed(result):
    """The upstream's echo of a successful call."""
    check(not result.is_error, f"call failed: {text_of(result)}")
    out = result.structured_content
    check(out["status"] == 200 and out["body_encoding"] == "text", f"answer: {out}")
    return out, json.loads(out["body"])


def admin_call(admin, token, method, path, body):
    req = urllib.request.Request(
        f"{admin}{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


def listed_price(hub, service):
    with urllib.request.urlopen(f"{hub}/directory?provider=alice", timeout=10) as resp:
        entries = json.loads(resp.read())["services"]
    return next(e["price_msat"] for e in entries if e["service"] == service)


async def set_quote_price(hub, admin, alice_token, sats):
    """Alice sets the price of `quote`; returns once the hub's directory lists it."""
    check(admin_call(admin, alice_token, "PATCH", "/services/quote", {"price_sats": sats}) == 200, "priced")
    for _ in range(100):
        if listed_price(hub, "quote") == sats * 1000:
            return
        await asyncio.sleep(0.1)
    check(False, f"the hub lists quote at {sats} sats")


async def run(binary, hub, admin, alice_token, upstream):
    summary = {}
    async with Client(
        server(binary, hub, 1), message_handler=on_message, elicitation_callback=on_elicit
    ) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        check({"l402_fetch", "l402_spending_report"} <= set(tools), f"built-ins kept: {sorted(tools)}")
        hub_tools = sorted(n for n in tools if not n.startswith("l402_"))
        summary["hub_tools"] = hub_tools

        # The provider's registration: description with the price, the input schema.
        quote = tools["alice__quote"]
        check("Stock quotes" in quote.description, quote.description)
        check("Costs 21 sat per call (22 sat with fee)" in quote.description, quote.description)
        schema = quote.input_schema
        check(schema["type"] == "object" and schema["required"] == ["symbol"], f"schema: {schema}")
        check(schema["properties"]["symbol"]["type"] == "string", f"schema: {schema}")
        check("_path" in schema["properties"], f"_path offered: {schema}")
        data = tools["bob__data"]
        check("Costs 100 sat per call (102 sat with fee)" in data.description, data.description)
        ingest = tools["bob__data__ingest"]
        check("Costs 5 sat per call (6 sat with fee)" in ingest.description, ingest.description)
        # No schema registered: an open object.
        check(tools["alice__x_y"].input_schema["type"] == "object", "open schema")
        # "alice/x.y" and "alice/x_y" both make "alice__x_y": the first id keeps it.
        check("alice/x.y" in tools["alice__x_y"].description, tools["alice__x_y"].description)
        check("alice/x_y" in tools["alice__x_y_2"].description, tools["alice__x_y_2"].description)

        # A paid call: the arguments as the query, the upstream's answer back. 22 sats is above
        # the wallet's approve_above of 20: the person is asked (and approves), as for l402_fetch.
        r = await client.call_tool("alice__quote", {"symbol": "BTC", "n": 2})
        check(len(ASKED) == 1 and "22 sats" in ASKED[0], f"approval asked: {ASKED}")
        out, echo = echoed(r)
        check(echo == {"method": "GET", "uri": "/quote?n=2&symbol=BTC", "body": ""}, f"echo: {echo}")
        check(out["paid"] is True and out["paid_sats"] == 22, f"paid 22 sats: {out}")
        summary["paid_hash"] = out["payment_hash"]

        # The second of the colliding names reaches its own service, below it with _path.
        r = await client.call_tool("alice__x_y_2", {"_path": "deep/er", "a": ["1", "2"]})
        out, echo = echoed(r)
        check(echo["uri"] == "/under/deep/er?a=1&a=2", f"echo: {echo}")
        check(out["paid_sats"] == 2, f"1.02 sat paid as 2: {out}")

        # An answer of 400 or above is a tool error, after paying (the hub asked first).
        r = await client.call_tool("alice__x_y", {"_path": "missing"})
        check(r.is_error is True, f"404 is a tool error: {r}")
        check(r.structured_content["status"] == 404, f"status: {r.structured_content}")
        check(r.structured_content["paid_sats"] == 2, f"paid: {r.structured_content}")

        # A POST route: the arguments as the JSON body.
        r = await client.call_tool("bob__data__ingest", {"rows": [1, 2], "meta": {"a": None}})
        out, echo = echoed(r)
        check(echo["method"] == "POST" and echo["uri"] == "/data/ingest", f"echo: {echo}")
        check(json.loads(echo["body"]) == {"rows": [1, 2], "meta": {"a": None}}, f"body: {echo}")
        check(out["paid_sats"] == 6, f"5.1 sat paid as 6: {out}")

        # Above the budget: refused, nothing paid, nothing sent upstream.
        r = await client.call_tool("bob__data", {"rows": [1, 2]})
        check(r.is_error is True, f"over budget is a tool error: {r}")
        check("max_per_call" in text_of(r) and "nothing was paid" in text_of(r), text_of(r))

        # The agent cannot leave the service: refused before anything is sent.
        for bad in ["../admin", "/etc/passwd", "a/%2e%2e/b", "x\\..\\y"]:
            r = await client.call_tool("alice__quote", {"symbol": "BTC", "_path": bad})
            check(r.is_error is True, f"_path {bad!r} refused: {r}")
            check("refused" in text_of(r) and "nothing was sent" in text_of(r), text_of(r))
        r = await client.call_tool("alice__quote", {"symbol": {"nested": 1}})
        check(r.is_error is True and "object" in text_of(r), f"object in a query: {text_of(r)}")

        rep = await client.call_tool("l402_spending_report", {})
        check(rep.structured_content["total_sats"] == 32, f"22 + 2 + 2 + 6 sats: {rep.structured_content}")
        check(len(ASKED) == 1, f"nothing below approve_above asked: {ASKED}")

        # A service added on the hub shows after the TTL, with notifications/tools/list_changed.
        service = {"name": "fresh", "path": "/fresh", "upstream": upstream, "price_sats": 3}
        check(admin_call(admin, alice_token, "POST", "/services", service) == 201, "service added")
        await asyncio.sleep(1.5)
        names = {t.name for t in (await client.list_tools()).tools}
        check("alice__fresh" in names, f"new tool listed: {sorted(names)}")
        for _ in range(50):
            if CHANGED:
                break
            await asyncio.sleep(0.1)
        check(CHANGED == ["notifications/tools/list_changed"], f"list_changed sent: {CHANGED}")
        # Read again after the TTL, nothing changed: no more notifications.
        await asyncio.sleep(1.2)
        await client.list_tools()
        await asyncio.sleep(0.3)
        check(len(CHANGED) == 1, f"one notification: {CHANGED}")
    summary["notified"] = len(CHANGED)

    # The provider raises its price after the agent read the list: the tool pays at most the
    # price it showed (22 sats), so the 41 sats now asked are refused and nothing is paid.
    async with Client(server(binary, hub, 600)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        check("(22 sat with fee)" in tools["alice__quote"].description, "the price shown")
        await set_quote_price(hub, admin, alice_token, 40)
        r = await client.call_tool("alice__quote", {"symbol": "BTC"})
        check(r.is_error is True, f"a raised price is refused: {r}")
        check("41" in text_of(r) and "nothing was paid" in text_of(r), text_of(r))
        check("22 sat the hub's directory lists" in text_of(r), text_of(r))
        rep = await client.call_tool("l402_spending_report", {})
        check(rep.structured_content["total_sats"] == 32, f"still 32 sats: {rep.structured_content}")

    # A call made after the TTL re-reads the directory: when it shows the tool changed since the
    # agent listed the tools (here its price), the call is refused with nothing sent, until the
    # agent lists them again.
    async with Client(server(binary, hub, 1)) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        check("(41 sat with fee)" in tools["alice__quote"].description, "the raised price shown")
        await set_quote_price(hub, admin, alice_token, 21)
        await asyncio.sleep(1.2)
        r = await client.call_tool("alice__quote", {"symbol": "ETH"})
        check(r.is_error is True, f"a changed tool is refused: {r}")
        check("list the tools again" in text_of(r) and "nothing was sent" in text_of(r), text_of(r))
        tools = {t.name: t for t in (await client.list_tools()).tools}
        check("(22 sat with fee)" in tools["alice__quote"].description, "the new price shown")
        rep = await client.call_tool("l402_spending_report", {})
        check(rep.structured_content["total_sats"] == 32, f"still 32 sats: {rep.structured_content}")
    print(json.dumps(summary))


def server(binary, hub, ttl_secs):
    """`turnpike mcp` on the hub, re-reading its directory after `ttl_secs`."""
    return StdioServerParameters(
        command=binary,
        args=[
            "mcp",
            "--wallet",
            "agent",
            "--hub",
            hub,
            "--allow-host",
            "127.0.0.1",
            "--max-sats",
            "500",
            "--hub-ttl-secs",
            str(ttl_secs),
        ],
        env=dict(os.environ),
    )


def main():
    binary, hub, admin, alice_token, upstream = sys.argv[1:6]
    asyncio.run(run(binary, hub, admin, alice_token, upstream))


if __name__ == "__main__":
    main()
