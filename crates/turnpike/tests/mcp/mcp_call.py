"""Calls one tool of `turnpike mcp` with the official MCP Python SDK (PyPI `mcp`) as the client.

Usage: mcp_call.py TURNPIKE_BIN TOOL ARGUMENTS_JSON [SERVER_ARG...]

The SDK starts `TURNPIKE_BIN mcp SERVER_ARG...` over stdio (the environment passes through),
calls TOOL with the JSON arguments and prints one JSON line: {"is_error", "text",
"structured"}.
"""

import asyncio
import json
import os
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters


async def run(server, tool, arguments):
    async with Client(server) as client:
        result = await client.call_tool(tool, arguments)
        text = " ".join(c.text for c in result.content if getattr(c, "text", None))
        print(
            json.dumps(
                {
                    "is_error": bool(result.is_error),
                    "text": text,
                    "structured": result.structured_content,
                }
            )
        )


def main():
    binary, tool, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    server = StdioServerParameters(command=binary, args=["mcp", *sys.argv[4:]], env=dict(os.environ))
    asyncio.run(run(server, tool, arguments))


if __name__ == "__main__":
    main()
