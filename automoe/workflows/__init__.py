"""Workflows: the whole pipeline and the studies, each a resumable sequence of library calls
with typed settings (the calls the ``automoe`` commands make), saying each step as it
starts. They sit on the library beside the command line: nothing below them imports them,
and they never import the command line (tests/test_import_graph.py).

- `automoe.workflows.pipeline`: data -> supernet -> search -> export -> translate -> plot
  (``make demo``);
- `automoe.workflows.study`: the reference study (`automoe.study`);
- `automoe.workflows.task_study`: the task-routing study (`automoe.task_study`);
- `automoe.workflows.steps`: what they share (the step log, data and training steps).
"""
