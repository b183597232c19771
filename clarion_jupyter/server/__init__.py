"""The Jupyter server extension (:mod:`.app`), its REST handlers and its WebSockets.

Import it only where a Jupyter server runs: it pulls in jupyter_server and tornado's web
stack, which the engine, kernels and the CLI do not need.
"""
