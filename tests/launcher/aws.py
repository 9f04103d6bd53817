"""A boto3 session for the launcher tests: records every API call, can answer some itself.

Every call goes through botocore's client-side validation against the service model
(``ParamValidationError`` on a malformed request) and then to the moto server, unless a
canned answer is registered for the operation (moto lacks a few, e.g. a tuning job's
BestTrainingJob, and a real model's answer from InvokeEndpoint). A canned answer with an
``Error`` entry is an error response: the client raises it as botocore would (e.g.
InvokeEndpoint's ``ModelError`` for a container's 4xx).
"""

from __future__ import annotations

import io
import json
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.response import StreamingBody


@dataclass
class Call:
    service: str
    operation: str
    params: dict[str, Any]


@dataclass
class RecordingSession:
    region: str
    calls: list[Call] = field(default_factory=list)
    canned: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.session = boto3.Session(region_name=self.region)
        self.session.events.register("provide-client-params", self._record)
        self.session.events.register("before-call", self._answer)

    def _record(self, params, model, **_):
        self.calls.append(Call(model.service_model.endpoint_prefix, model.name, dict(params)))

    def _answer(self, model, **_):
        answer = self.canned.get((model.service_model.endpoint_prefix, model.name))
        if answer is None:
            return None
        answer = dict(answer)
        if isinstance(answer.get("Body"), bytes):
            answer["Body"] = StreamingBody(io.BytesIO(answer["Body"]), len(answer["Body"]))
        # SageMaker answers a ModelError with 424; botocore raises any status >= 300.
        status = 424 if "Error" in answer else 200
        return AWSResponse("http://127.0.0.1/", status, {}, None), answer

    def factory(self):
        """For ``cli.main(session_factory=...)``."""
        return self.session

    def operations(self) -> list[str]:
        return [c.operation for c in self.calls]

    def params(self, operation: str) -> dict[str, Any]:
        matches = [c.params for c in self.calls if c.operation == operation]
        assert len(matches) == 1, (operation, self.operations())
        return matches[0]


def moto_async_results(moto_endpoint: str, *results: dict[str, Any]) -> None:
    """What moto's InvokeEndpointAsync writes to S3 for the next requests, in order: each a dict with
    ``data`` (the object's text) and ``is_failure`` (written to the FailureLocation instead)."""
    request = urllib.request.Request(
        f"{moto_endpoint}/moto-api/static/sagemaker/async-endpoint-results",
        data=json.dumps({"results": list(results)}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).close()
