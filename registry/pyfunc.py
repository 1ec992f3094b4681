"""MLflow "models from code" definition: a pyfunc around a saved model directory of any family.

``mlflow.pyfunc.log_model(python_model="registry/pyfunc.py", artifacts={"model_dir": DIR}, ...)``
logs this file as the model's code and the directory as its artifact; loading restores the directory
with :func:`models.contract.load_model`. ``predict`` takes a DataFrame with a ``prompt`` column (or
``{"prompt": "..."}`` / ``[{"prompt": "..."}]``) and the generation settings as params; it returns one
text per prompt. ``predict_stream`` yields text pieces for one prompt.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


def _prompts(model_input: Any) -> list[str]:
    if isinstance(model_input, pd.DataFrame):
        if "prompt" not in model_input.columns:
            raise ValueError(f"input needs a 'prompt' column, got columns {list(model_input.columns)}")
        return [str(p) for p in model_input["prompt"]]
    if isinstance(model_input, dict):
        return [str(model_input["prompt"])]
    if isinstance(model_input, list):
        return [str(r["prompt"]) if isinstance(r, dict) else str(r) for r in model_input]
    if isinstance(model_input, str):
        return [model_input]
    raise ValueError(f"unsupported input type {type(model_input).__name__}; pass a DataFrame with a 'prompt' column")


class CreativeWriterPyfunc(mlflow.pyfunc.PythonModel):
    """Generates text with the saved model in the ``model_dir`` artifact."""

    def load_context(self, context: Any) -> None:
        """Loads the model directory once."""
        from models.families import load_model

        self.model = load_model(context.artifacts["model_dir"])

    def _settings(self, params: dict[str, Any] | None) -> Any:
        from models.contract import GenerationSettings

        return GenerationSettings.from_dict({k: v for k, v in (params or {}).items() if v is not None})

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - MLflow reads hints as a schema
        """One generated text per prompt."""
        return self.model.generate(_prompts(model_input), self._settings(params))

    def predict_stream(self, context, model_input, params=None):  # noqa: ANN001, ANN201 - see predict
        """Text pieces of one generation, as produced."""
        prompts = _prompts(model_input)
        if len(prompts) != 1:
            raise ValueError(f"predict_stream takes exactly one prompt, got {len(prompts)}")
        yield from self.model.stream(prompts[0], self._settings(params))


mlflow.models.set_model(CreativeWriterPyfunc())
