"""Workflows: the whole pipeline and the studies as sequences of ``automoe`` commands.

They sit above the command line (`automoe.cli`): each step is a command run in this process
and echoed first, so a workflow's log is the recipe to repeat it by hand, and a study's
recorded plan is the list of its command lines. Nothing below this package imports it or
the command line (tests/test_import_graph.py).

- `automoe.workflows.pipeline`: data -> supernet -> search -> export -> translate -> plot
  (``make demo``);
- `automoe.workflows.study`: the reference study (`automoe.study`);
- `automoe.workflows.task_study`: the task-routing study (`automoe.task_study`).
"""
