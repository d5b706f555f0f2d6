"""`ttt serve`: an OpenAI-compatible HTTP server for TTT models with continuous batching over a fixed pool of
state slots, persistent sessions (disk or Redis), Prometheus metrics and a graceful drain. See docs/serving.md.

Layers: `app` (HTTP, FastAPI) → `engine` (scheduler, `slots` pool, `sampling`) → `store` (sessions, `codec`)."""

from .server import ServeOptions, serve

__all__ = ["ServeOptions", "serve"]
