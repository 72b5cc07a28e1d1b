"""Drives `turnpike mcp` with the official MCP Python SDK (PyPI `mcp`) as the client.

Usage: mcp_check.py stdio BASE TURNPIKE_BIN   (the SDK starts `turnpike mcp` as a subprocess;
                                                the environment passes through)
       mcp_check.py http BASE MCP_URL         (a running `turnpike mcp --http`)

BASE is the gateway's base URL. The gateway has /single (5 sats), /big (100 sats, above the
wallet's max_per_call of 50) and /approve (30 sats, above its approve_above of 20). A second
session without elicitation support checks that such a payment is refused. The script exits
non-zero on the first failed check and prints one JSON summary line on success.
"""

import asyncio
import json
import os
import sys
import time

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

# What the elicitation callback answers next: "accept" or "decline".
ANSWER = {"next": "accept", "asked": 0}


async def on_elicit(_context, params):
    ANSWER["asked"] += 1
    assert "sats" in params.message, params.message
    if ANSWER["next"] == "accept":
        return types.ElicitResult(action="accept", content={"approve": True})
    return types.ElicitResult(action="decline")


def text_of(result):
    return " ".join(c.text for c in result.content if getattr(c, "text", None))


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


async def run(server, base):
    summary = {}
    async with Client(server, elicitation_callback=on_elicit) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        expected = {
            "l402_fetch",
            "l402_quote",
            "l402_balance",
            "l402_spending_report",
            "l402_discover",
            "l402_lower_budget",
        }
        check(expected <= set(tools), f"tools listed: {sorted(tools)}")
        for name in ("l402_quote", "l402_balance", "l402_spending_report", "l402_discover"):
            ann = tools[name].annotations
            check(ann is not None and ann.read_only_hint is True, f"{name} is read-only: {ann}")
        check(tools["l402_fetch"].annotations.read_only_hint is False, "l402_fetch is not read-only")
        check(tools["l402_fetch"].output_schema is not None, "l402_fetch has an output schema")
        summary["tools"] = sorted(tools)

        # The price, nothing paid.
        q = await client.call_tool("l402_quote", {"url": f"{base}/single"})
        check(not q.is_error, f"quote: {text_of(q)}")
        check(q.structured_content["payment_required"] is True, f"quote: {q.structured_content}")
        check(q.structured_content["amount_sats"] == 5, f"quote: {q.structured_content}")

        # A paid fetch returns the body.
        r = await client.call_tool("l402_fetch", {"url": f"{base}/single"})
        check(not r.is_error, f"paid fetch: {text_of(r)}")
        out = r.structured_content
        check(out["status"] == 200 and out["body"] == "ok", f"paid fetch: {out}")
        check(out["paid"] is True and out["paid_sats"] == 5, f"paid fetch: {out}")
        check(len(out["payment_hash"]) == 64, f"payment hash: {out}")
        summary["paid_hash"] = out["payment_hash"]

        # Over budget: a tool error naming the limit; nothing paid.
        r = await client.call_tool("l402_fetch", {"url": f"{base}/big"})
        check(r.is_error is True, f"over budget is a tool error: {r}")
        check("max_per_call" in text_of(r) and "nothing was paid" in text_of(r), text_of(r))
        # max_sats can only lower the limit: 3 sats refuses a 5-sat call.
        r = await client.call_tool("l402_fetch", {"url": f"{base}/single", "max_sats": 3})
        check(r.is_error is True, f"max_sats 3 refuses 5 sats: {text_of(r)}")

        # Above approve_above: the person is asked; declined → not paid.
        ANSWER["next"] = "decline"
        r = await client.call_tool("l402_fetch", {"url": f"{base}/approve"})
        check(r.is_error is True, f"declined is a tool error: {r}")
        check("did not approve" in text_of(r), text_of(r))
        check(ANSWER["asked"] == 1, f"asked once: {ANSWER}")
        # Accepted → paid.
        ANSWER["next"] = "accept"
        r = await client.call_tool("l402_fetch", {"url": f"{base}/approve"})
        check(not r.is_error, f"approved fetch: {text_of(r)}")
        check(r.structured_content["paid_sats"] == 30, f"approved: {r.structured_content}")
        check(ANSWER["asked"] == 2, f"asked again: {ANSWER}")

        # SSRF: a private address is refused before any connection (a connection attempt to
        # 10.0.0.1 would take the 10 s connect timeout).
        started = time.monotonic()
        r = await client.call_tool("l402_fetch", {"url": "http://10.0.0.1/admin"})
        check(r.is_error is True, f"private address refused: {r}")
        check("refused" in text_of(r) and "10.0.0.1" in text_of(r), text_of(r))
        check(time.monotonic() - started < 5, "refused without trying to connect")
        r = await client.call_tool("l402_discover", {"url": "http://169.254.169.254/"})
        check(r.is_error is True and "refused" in text_of(r), f"metadata address: {text_of(r)}")

        # The ledger: 5 + 30 sats, nothing for the declined or refused calls.
        rep = await client.call_tool("l402_spending_report", {})
        check(not rep.is_error, f"report: {text_of(rep)}")
        rep = rep.structured_content
        check(rep["total_sats"] == 35, f"report total: {rep}")
        check(len(rep["payments"]) == 2, f"two payments: {rep['payments']}")
        check(all("preimage" not in p for p in rep["payments"]), "no preimage in the report")
        bal = await client.call_tool("l402_balance", {})
        check(not bal.is_error, f"balance: {text_of(bal)}")
        check(bal.structured_content["spent_total_sats"] == 35, f"balance: {bal.structured_content}")

        # Lowering the budget for this connection, never raising it.
        low = await client.call_tool("l402_lower_budget", {"max_per_call": 4, "approve_above": 1000})
        check(not low.is_error, f"lower: {text_of(low)}")
        b = low.structured_content["budget"]
        check(b["max_per_call"] == 4 and b["approve_above"] == 20, f"lowered: {b}")
        r = await client.call_tool("l402_fetch", {"url": f"{base}/single"})
        check(r.is_error is True and "max_per_call" in text_of(r), f"lowered cap: {text_of(r)}")

        # Discovery: the gateway's catalogue.
        d = await client.call_tool("l402_discover", {"url": f"{base}/anything"})
        check(not d.is_error, f"discover: {text_of(d)}")
        names = sorted(s["name"] for s in d.structured_content["manifest"]["services"])
        check(names == ["approve", "big", "single"], f"discovered: {names}")
        summary["discovered"] = names

        # Bad arguments are tool errors too.
        r = await client.call_tool("l402_fetch", {"url": "not a url"})
        check(r.is_error is True, f"bad URL: {r}")
    # A client that cannot ask the person (no elicitation callback, so no capability declared):
    # a payment above approve_above is refused, nothing paid. (Refused as "cannot ask", not by
    # max_per_call: the first session's lowered budget did not outlive that session.)
    async with Client(server) as client:
        r = await client.call_tool("l402_fetch", {"url": f"{base}/approve"})
        check(r.is_error is True, f"no elicitation: refused: {r}")
        check("cannot ask" in text_of(r) and "nothing was paid" in text_of(r), text_of(r))
        rep = await client.call_tool("l402_spending_report", {})
        check(rep.structured_content["total_sats"] == 35, f"still 35 sats: {rep.structured_content}")
    summary["elicitations"] = ANSWER["asked"]
    print(json.dumps(summary))


def main():
    mode, base, target = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "stdio":
        server = StdioServerParameters(
            command=target,
            args=["mcp", "--wallet", "agent", "--allow-host", "127.0.0.1"],
            env=dict(os.environ),
        )
    else:
        server = target
    asyncio.run(run(server, base))


if __name__ == "__main__":
    main()
