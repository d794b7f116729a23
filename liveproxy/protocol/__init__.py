"""Gemini Live wire-level rules shared by the proxy and the emulator.

Pure and synchronous: key casing, base64, the schema of client messages and the Google-style
close reasons. Nothing here does I/O.
"""
