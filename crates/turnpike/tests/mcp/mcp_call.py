"""Calls one tool of `turnpike mcp` with the official MCP Python SDK (PyPI `mcp`) as the client.

Usage: mcp_call.py TURNPIKE_BIN TOOL ARGUMENTS_JSON [SERVER_ARG...]

The SDK starts `TURNPIKE_BIN mcp SERVER_ARG...` over stdio (the environment passes through),
calls TOOL with the JSON arguments and prints one JSON line: {"is_error", "text",
"structured", "asked"}. With TURNPIKE_TEST_ELICIT=accept (or decline) the client supports
elicitation and answers every approval request so; "asked" lists the messages it was shown.
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


async def run(server, tool, arguments):
    options = {}
    if os.environ.get("TURNPIKE_TEST_ELICIT"):
        options["elicitation_callback"] = on_elicit
    async with Client(server, **options) as client:
        result = await client.call_tool(tool, arguments)
        text = " ".join(c.text for c in result.content if getattr(c, "text", None))
        print(
            json.dumps(
                {
                    "is_error": bool(result.is_error),
                    "text": text,
                    "structured": result.structured_content,
                    "asked": ASKED,
                }
            )
        )


def main():
    binary, tool, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    server = StdioServerParameters(command=binary, args=["mcp", *sys.argv[4:]], env=dict(os.environ))
    asyncio.run(run(server, tool, arguments))


if __name__ == "__main__":
    main()
