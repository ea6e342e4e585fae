"""The baseline: a plain FastAPI + ONNX Runtime server, written the way the simple case usually is.

This is the server MISSION.md's "inference server users expect" section describes, as tutorials
and most hand-written services build it: a pydantic model with a JSON list of floats, a sync
endpoint (FastAPI runs it in its thread pool), one ``session.run`` per request with the
session's default settings, ``uvicorn.run`` with its defaults (uvloop and httptools when
installed, as they are here). Nothing is tuned in its disfavour, and nothing is tuned for it.

    .venv/bin/python bench/baseline_server.py MODEL.onnx PORT
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

session = ort.InferenceSession(sys.argv[1])
input_meta = session.get_inputs()[0]
sample_shape = [1, *[d if isinstance(d, int) else 1 for d in input_meta.shape[1:]]]

app = FastAPI()


class PredictRequest(BaseModel):
    features: list[float]
    request_id: str | None = None


@app.post("/predict")
def predict(request: PredictRequest) -> dict[str, object]:
    x = np.array(request.features, dtype=np.float32).reshape(sample_shape)
    probs = session.run(None, {input_meta.name: x})[0][0]
    return {
        "prediction": int(np.argmax(probs)),
        "confidence": float(np.max(probs)),
        "request_id": request.request_id,
        "model_version": "1",
    }


@app.get("/health")
def health() -> dict[str, object]:
    return {"status": "ok", "model_loaded": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
