"""``sessionctl mcp``: sessions as memory for agents, over the Model Context Protocol.

:mod:`sessionctl.mcp.tools` is the memory the tools give (schemas, scope, results)
on top of the service layer, with no MCP import; :mod:`sessionctl.mcp.server` puts
it on the wire with the official ``mcp`` SDK (stdio, or Streamable HTTP with a
bearer token). Only the ``mcp`` command imports either.
"""
