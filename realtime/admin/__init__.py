"""The Django admin of the app: live connections (updating themselves, with a disconnect
action), a dashboard, and read-only views of history, presence, leases and online status.

Everything is read-only: the rows are the app's own bookkeeping, and editing them would only
make them lie. The one thing an admin may do is disconnect (``connections``). The pages
update themselves over the app's own staff-only streams (``realtime:admin:connections``,
``realtime:admin:stats``). Modules: ``base`` (shared), ``connections``, ``history``,
``filters``, ``dashboard`` (the dashboard's views).
"""

from realtime.admin import connections, history  # noqa: F401  (they register the admins)
