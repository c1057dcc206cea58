"""The Textual terminal UI. Not built yet; it will talk to a daemon only through the
control protocol."""
