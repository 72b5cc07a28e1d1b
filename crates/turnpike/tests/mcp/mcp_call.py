"""Calls one tool of `turnpike mcp` with the official MCP Python SDK (PyPI `mcp`) as the client.

Usage: mcp_call.py TURNPIKE_BIN TOOL ARGUMENTS_JSON [SERVER_ARG...]
       mcp_call.py TURNPIKE_BIN --calls '[{"tool": …, "arguments": {…}}, …]' [SERVER_ARG...]

The SDK starts `TURNPIKE_BIN mcp SERVER_ARG...` over stdio (the environment passes through),
calls TOOL with the JSON arguments and prints one JSON line: {"is_error", "text",
"structured", "asked"}; with --calls, the calls are made in order in one session (one
connection) and the line is {"results": [{"is_error", "text", "structured"}, …], "asked"}.
With TURNPIKE_TEST_ELICIT=accept (or decline) the client supports elicitation and answers
every approval request so; "asked" lists the messages it was shown. With
TURNPIKE_TEST_LIST_TOOLS=1 the client first lists the tools, as an agent finds them, and the
line also has "tools": {name: description}.
"""

import asyncio
import json
import os
import sys

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

ASKED = []


async def on_elicit(_context, params):
    ASKED.append(params.message)
    if os.environ.get("TURNPIKE_TEST_ELICIT") == "accept":
        return types.ElicitResult(action="accept", content={"approve": True})
    return types.ElicitResult(action="decline")


def summary(result):
    text = " ".join(c.text for c in result.content if getattr(c, "text", None))
    return {"is_error": bool(result.is_error), "text": text, "structured": result.structured_content}


async def run(server, calls, single):
    options = {}
    if os.environ.get("TURNPIKE_TEST_ELICIT"):
        options["elicitation_callback"] = on_elicit
    listed = {}
    async with Client(server, **options) as client:
        if os.environ.get("TURNPIKE_TEST_LIST_TOOLS") == "1":
            listed = {t.name: t.description for t in (await client.list_tools()).tools}
        results = [summary(await client.call_tool(c["tool"], c["arguments"])) for c in calls]
    extra = {"tools": listed} if listed else {}
    if single:
        print(json.dumps({**results[0], "asked": ASKED, **extra}))
    else:
        print(json.dumps({"results": results, "asked": ASKED, **extra}))


def main():
    binary, tool, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    server = StdioServerParameters(command=binary, args=["mcp", *sys.argv[4:]], env=dict(os.environ))
    if tool == "--calls":
        asyncio.run(run(server, arguments, single=False))
    else:
        asyncio.run(run(server, [{"tool": tool, "arguments": arguments}], single=True))


if __name__ == "__main__":
    main()
