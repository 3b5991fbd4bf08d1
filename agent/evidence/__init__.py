"""Evidence on request: frames around each alert kept at the edge, sent only when central asks."""
