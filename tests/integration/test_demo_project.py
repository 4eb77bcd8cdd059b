"""The demo project's own tests (``project/demo/tests.py``, the sample of docs/testing.md),
run with the suite so the sample stays true."""

from __future__ import annotations

from project.demo.tests import TaskBoardPublishes, test_an_open_board_sees_a_new_task

__all__ = ["TaskBoardPublishes", "test_an_open_board_sees_a_new_task"]
