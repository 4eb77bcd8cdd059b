"""Storage: every ORM call of the app, on the database lanes.

``store`` (streams and events), ``registry`` (leases, connection records, online status),
``presence`` (members and their history), ``tickets``, ``cleanup`` and ``retention``,
``overview`` (what the admin reads), ``epochs``, and the machinery under them: ``dbthreads``
(the lanes) and ``groupcommit``. The models themselves are ``realtime.models``. Above it,
the core; below it, only the protocol and the settings (and ``realtime.bus.messages``, whose
presence messages ``presence`` and ``registry`` build).
"""
