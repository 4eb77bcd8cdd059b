"""Test settings: the demo's, plus REALTIME overrides from ``REALTIME_TEST_OVERRIDES`` (JSON).

Daphne subprocesses started with ``DJANGO_SETTINGS_MODULE=tests.settings`` and that variable
get exactly the app settings a test needs, e.g. ``{"MAX_SUBSCRIPTIONS": 2}``.
"""

import json
import os

from project.settings import *  # noqa: F403
from project.settings import REALTIME

REALTIME = {**REALTIME, **json.loads(os.environ.get("REALTIME_TEST_OVERRIDES") or "{}")}
