"""The kernel's engine as an OpenAI-compatible endpoint: `swiftnb.serve(engine)`."""
from swiftnb.server.app import create_app
from swiftnb.server.background import BackgroundServer, serve

__all__ = ['BackgroundServer', 'create_app', 'serve']
