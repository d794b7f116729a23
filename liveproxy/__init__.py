"""liveproxy: browsers talk to Gemini Live in real time; the API key stays on the server."""

__version__ = "0.1.0"
