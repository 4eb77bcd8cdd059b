"""Test settings: the demo's, plus REALTIME overrides from ``REALTIME_TEST_OVERRIDES`` (JSON)
and a test app that logs realtime signals to ``REALTIME_TEST_SIGNAL_LOG``.

Daphne subprocesses started with ``DJANGO_SETTINGS_MODULE=tests.settings`` get exactly the
app settings a test needs, e.g. ``{"MAX_SUBSCRIPTIONS": 2}``.
"""

import json
import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS, REALTIME

INSTALLED_APPS = [*INSTALLED_APPS, "tests.signal_log"]
REALTIME = {**REALTIME, **json.loads(os.environ.get("REALTIME_TEST_OVERRIDES") or "{}")}
