"""The session engine: the session's nursery and driver, the upstream course, the browser
reader and queue, the link, the upstream connection and the ports."""
