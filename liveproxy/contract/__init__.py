"""The browser-facing contract: models, codec, the browser <-> Gemini mapping, errors, endings."""
