"""The per-process core: one hub per event loop and what it delegates to.

``hub`` keeps group membership, dispatch of layer messages and coalesced writes;
``presence_tracking`` the presence of this process's connections; ``liveness`` the lease,
the leave grace period and the records of connections; ``reporting`` the figures and the
admin pages' streams; ``jobs`` runs the periodic jobs, each on its own. Above the core are
the endpoints (WebSocket, SSE, views); below it the bus and storage.
"""
