"""`dg dev` (what `make dev` runs) on 127.0.0.1 for the tests: started in its own process group
with its own DAGSTER_HOME, driven through the GraphQL API the UI uses, stopped with its whole
group."""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCATION = {"repositoryLocationName": "laion_pipeline", "repositoryName": "__repository__"}
DONE = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDev:
    """A running `dg dev` (webserver, daemon and code server) and a GraphQL client."""

    def __init__(self, home: Path, env: Mapping[str, str], log: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text((REPO_ROOT / "dagster_home.yaml").read_text())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        # `make dev`: dg finds the project's virtual environment through VIRTUAL_ENV.
        self.env["VIRTUAL_ENV"] = str(Path(sys.executable).parents[1])
        dg = Path(sys.executable).parent / "dg"
        self.process = subprocess.Popen(
            [str(dg), "dev", "-h", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches every child
        )

    def wait_until_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dg dev exited: {self.log.read_text()[-3000:]}")
            try:
                # Up when the code location has loaded, not only the webserver.
                data = self.query("{ repositoriesOrError { __typename } }")
                if data["repositoriesOrError"]["__typename"] == "RepositoryConnection":
                    return
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"dg dev did not start: {self.log.read_text()[-3000:]}")

    def query(self, query: str, **variables: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL errors: {answer['errors']}")
        return answer["data"]

    def launch(self, job: str, **selector: Any) -> str:
        data = self.query(
            """mutation($params: ExecutionParams!) {
                launchRun(executionParams: $params) {
                    __typename
                    ... on LaunchRunSuccess { run { runId } }
                    ... on PythonError { message }
                    ... on InvalidSubsetError { message }
                    ... on RunConfigValidationInvalid { errors { message } }
                }
            }""",
            params={"selector": {**LOCATION, "jobName": job, **selector}},
        )["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {job} failed: {data}")
        return data["run"]["runId"]

    def wait_for_run(self, run_id: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.query(
                "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", id=run_id
            )["runOrError"]["status"]
            if status in DONE:
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish in {timeout} s")

    def run_messages(self, run_id: str) -> str:
        events = self.query(
            """query($id: ID!) { runOrError(runId: $id) { ... on Run {
                eventConnection(limit: 500) { events { ... on MessageEvent { message } } }
            } } }""",
            id=run_id,
        )["runOrError"]["eventConnection"]["events"]
        return "\n".join(e.get("message", "") for e in events)[-5000:]

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to the whole process group (webserver, daemon, code server, runs); SIGKILL to
        what is left after ``timeout``; returns once no process of the group is left."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.group_alive() and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        deadline = time.monotonic() + 10
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
