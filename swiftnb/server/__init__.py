"""The kernel's engine as an OpenAI-compatible endpoint: `swiftnb.serve(engine)`."""
from swiftnb.server.background import BackgroundServer, live_server, serve, stop_live_server

__all__ = ['BackgroundServer', 'live_server', 'serve', 'stop_live_server']
