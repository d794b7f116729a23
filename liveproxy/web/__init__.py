"""The HTTP and ``/ws`` shell: the Quart-trio app, its ASGI routes, Hypercorn (fixed), the CLI."""
