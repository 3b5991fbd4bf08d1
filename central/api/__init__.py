"""Central's read API (FastAPI): cameras, agents, counts, patterns, alerts, gaps and a live
stream, for bearer tokens scoped by jurisdiction or site."""
