"""The upstream adapter: Gemini Live (or the emulator) over trio-websocket, behind the engine's
:class:`~liveproxy.core.ports.Upstream` port.

:mod:`.target` says where and as whom to connect; :mod:`.credentials` gives the handshake's
headers; :mod:`.dial` opens the WebSocket; :mod:`.connection` takes one through its setup and
translates every trio-websocket error into the engine's (once, here); :mod:`.keepalive` pings;
:mod:`.startup` resolves the upstream a server uses (Google's, or the built-in emulator).
"""
