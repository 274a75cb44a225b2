"""Run a Prefect deployment through an API URL and wait for the flow run to end.

Usage: run_deployment.py API_URL DEPLOYMENT [TIMEOUT_SECONDS]     (DEPLOYMENT: flow-name/deployment-name)
Prints one JSON line {"id", "name", "state"}; exits 0 only when the run Completed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def run(api_url: str, deployment: str, timeout: float) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        async with get_client() as client:
            target = await client.read_deployment_by_name(deployment)
            flow_run = await client.create_flow_run_from_deployment(target.id)
            deadline = time.monotonic() + timeout
            while True:
                flow_run = await client.read_flow_run(flow_run.id)
                if flow_run.state and flow_run.state.is_final():
                    break
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(3)
    state = flow_run.state.type.value if flow_run.state else "NONE"
    return {"id": str(flow_run.id), "name": flow_run.name, "state": state}


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    result = asyncio.run(run(argv[0], argv[1], float(argv[2]) if len(argv) == 3 else 900))
    print(json.dumps(result))
    return 0 if result["state"] == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
