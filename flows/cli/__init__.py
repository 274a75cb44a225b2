"""`ecommerce-etl`: run the pipeline, write the sample, register deployments, manage the local servers.

One module per command (flows/cli/<command>.py, found by name: adding a command is adding a module);
flows/cli/_app.py builds the parser from them and is the one place that maps errors to exit codes:
0 every file loaded or skipped, 1 a file (or the source) failed, 2 a usage or configuration error.
"""

from flows.cli._app import main

__all__ = ["main"]
