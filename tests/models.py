"""The model the proxies under test serve, in-process and as processes."""

#: It answers in text as well as audio, as most of these tests need (today's default,
#: gemini-3.8-live, speaks only audio); a test of another model names it.
TEST_MODEL = "gemini-3.1-flash-live-preview"

#: How ``/api/status`` lists it as the server's model.
TEST_MODEL_STATUS = {
    "name": TEST_MODEL,
    "default": True,
    "outputs": ["AUDIO", "TEXT"],
    "thinkingLevels": ["MINIMAL", "LOW", "MEDIUM", "HIGH"],
    "interactionStatus": False,
}
