"""The Jupyter server extension (:mod:`.app`), its REST handlers and WebSockets.

Imported only by the Jupyter server, never by kernels or the CLI: it pulls in jupyter_server
and tornado, which the engine itself does not need.
"""
