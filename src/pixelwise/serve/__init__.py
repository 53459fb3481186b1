"""HTTP service for a trained model: `create_app(predictor)` -> FastAPI app (see app.py)."""

from pixelwise.serve.app import ServeSettings, create_app

__all__ = ["create_app", "ServeSettings"]
