"""``make bench``: what liveproxy adds to a real-time audio session, measured.

``bench/run.py`` starts the Gemini Live emulator (echo mode), liveproxy and the load generator
(:mod:`bench.loadgen`) as three processes and writes a Markdown table, a JSON file and a PNG plot
under ``bench/results/``. See ``bench/README.md``.
"""
