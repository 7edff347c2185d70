"""Helpers shared by the tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

from typing import Any

import httpx2

# Every SDK call and REST request is bounded by this many seconds.
TIMEOUT_S = 30.0


class Rest:
    """Baton's native REST API, with the key (the view the tests check the SDKs against)."""

    def __init__(self, client: httpx2.Client) -> None:
        self.http = client

    def get_job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, f"GET /v1/jobs/{job_id} -> {r.status_code} {r.text}"
        return r.json()

    def recent_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        r = self.http.get("/v1/jobs", params={"limit": limit})
        assert r.status_code == 200, f"GET /v1/jobs?limit={limit} -> {r.status_code} {r.text}"
        return r.json()["data"]

    def newest_job_id(self) -> str | None:
        jobs = self.recent_jobs(1)
        return jobs[0]["id"] if jobs else None

    def find_job(self, pred, limit: int = 20) -> dict[str, Any] | None:
        for job in self.recent_jobs(limit):
            if pred(job):
                return job
        return None

    # How a job's prompt and system prompt are read (see the module functions below).
    @staticmethod
    def prompt_of(job: dict[str, Any]) -> str | None:
        return job_prompt(job)

    @staticmethod
    def system_prompt_of(job: dict[str, Any]) -> str | None:
        return job_system_prompt(job)

    def create_agent(self, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post("/v1/agents", json=body)
        assert r.status_code in (200, 201), f"POST /v1/agents {body} -> {r.status_code} {r.text}"
        return r.json()

    def delete_agent(self, name: str) -> None:
        r = self.http.delete(f"/v1/agents/{name}")
        assert r.status_code in (200, 204, 404), f"DELETE /v1/agents/{name} -> {r.status_code} {r.text}"


def job_prompt(job: dict[str, Any]) -> str | None:
    """The prompt a job was given (Baton keeps it in the job's options)."""
    if isinstance(job.get("prompt"), str):
        return job["prompt"]
    return (job.get("options") or {}).get("prompt")


def job_system_prompt(job: dict[str, Any]) -> str | None:
    if isinstance(job.get("system_prompt"), str):
        return job["system_prompt"]
    return (job.get("options") or {}).get("system_prompt")
