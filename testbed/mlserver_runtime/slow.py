"""A scikit-learn runtime that loads or answers slowly: the images' slowload and slowinfer.

MLServer's own SKLearnModel, with a pause taken from model-settings.json's
`parameters.extra`: `load_seconds` before the model file is read (a big model's load:
the server is up and live meanwhile, and not ready) and `infer_seconds` before each
prediction (a slow inference, in flight while a pod is told to stop). The pauses yield
to MLServer's event loop, so health checks and other requests are answered meanwhile.
"""

from __future__ import annotations

import asyncio

from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_sklearn import SKLearnModel


class SlowSKLearnModel(SKLearnModel):  # type: ignore[misc]  # MLServer ships no type hints
    def pause(self, name: str) -> float:
        parameters = self.settings.parameters
        extra = (parameters.extra if parameters else None) or {}
        return float(extra.get(name, 0))

    async def load(self) -> bool:
        await asyncio.sleep(self.pause("load_seconds"))
        return bool(await super().load())

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        await asyncio.sleep(self.pause("infer_seconds"))
        return await super().predict(payload)
