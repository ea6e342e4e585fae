"""The JSON shapes of the inference server's bodies and answers, for its OpenAPI document.

The routes do not use these models at run time: a request is decoded once, by
:mod:`edgeloop.serving.oip`, :mod:`~edgeloop.serving.predict` and :mod:`~edgeloop.serving.labels`,
and answered with plain dicts; :mod:`edgeloop.serving.openapi` turns these into JSON Schema, and
``tests/fuzz`` checks real answers against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from edgeloop.serving.oip import MAX_RANK

Datatype = Literal["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32",
                   "INT64", "FP16", "FP32", "FP64"]  # fmt: skip
# JSON 'data': numbers, booleans, or nested lists of them (row-major).
Data = list[Any]


class Error(BaseModel):
    error: str
    type: str
    hint: str | None = None


class TensorParameters(BaseModel):
    binary_data_size: int | None = Field(None, ge=0)


class InputTensor(BaseModel):
    name: str = Field(min_length=1)
    shape: list[int] = Field(max_length=MAX_RANK)
    datatype: Datatype
    data: Data | None = None  # or parameters.binary_data_size and bytes after the JSON
    parameters: TensorParameters | None = None


class OutputParameters(BaseModel):
    binary_data: bool = False


class RequestedOutput(BaseModel):
    name: str = Field(min_length=1)
    parameters: OutputParameters | None = None


class RequestParameters(BaseModel):
    binary_data_output: bool = False


class InferRequest(BaseModel):
    model_config = ConfigDict(title="InferRequest")
    id: str | None = None
    parameters: RequestParameters | None = None
    inputs: list[InputTensor] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]
    data: Data | None = None  # absent when the output is binary
    parameters: TensorParameters | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None  # a cascade's answered_by
    outputs: list[OutputTensor]


class TensorMetadata(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]  # a free axis is -1


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any]  # variants, provider, routing, power, cascade


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class IndexEntry(BaseModel):
    name: str
    version: str
    state: Literal["loading", "ready", "draining", "retired", "failed"]
    reason: str


class SwapReport(BaseModel):
    model: str
    loaded: list[str]
    retired: list[str]
    unchanged: list[str]
    serving: str | None


class PowerBudget(BaseModel):
    watts: float = Field(gt=0)


class Policy(BaseModel):
    model: str
    version: str | None
    variant: str | None
    load: dict[str, Any] | None
    power: dict[str, Any] | None
    cascade: dict[str, Any] | None


class PredictRequest(BaseModel):
    features: Data = Field(description="one sample: flat or nested numbers")
    request_id: str | int | None = None
    model: str | None = None


class PredictAnswer(BaseModel):
    model_config = ConfigDict(extra="allow")  # plus a cascade's answered_by
    prediction: float | int | None
    confidence: float | None
    request_id: str
    model_version: str
    model: str
    variant: str


class OneLabel(BaseModel):
    request_id: str | int
    label: int | list[int]  # one class per row of the request
    model: str | None = None


class LabelBatch(BaseModel):
    labels: list[OneLabel] = Field(min_length=1)
    model: str | None = None


class Labels(RootModel[OneLabel | LabelBatch]):
    """``{"request_id", "label"}`` or ``{"labels": [...]}``."""


class LabelAnswer(BaseModel):
    model: str
    applied: int
    unknown: int
    unknown_ids: list[str]


class Monitor(BaseModel):
    model_config = ConfigDict(extra="allow")  # the detectors' figures (docs/monitoring.md)
    model: str
    version: str
    state: str
    labels: dict[str, Any]


class ModelHealth(BaseModel):
    name: str
    version: str | None
    loaded: bool


class Health(BaseModel):
    status: Literal["ok", "loading", "stopping"]
    model_loaded: bool
    models: list[ModelHealth]
    process: dict[str, Any]


class AnyJson(BaseModel):
    model_config = ConfigDict(extra="allow", title="AnyJson")
