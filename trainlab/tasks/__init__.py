"""Tasks: what a run learns and how it is judged (loss, metrics, predictions, report)."""

from trainlab.tasks import classification, detection, instance, localization, regression, segmentation  # noqa: F401  (registers the built-in tasks)
from trainlab.tasks.base import TASKS, Task, create_task, list_tasks, split_outputs, task_from_config

__all__ = ["TASKS", "Task", "create_task", "list_tasks", "split_outputs", "task_from_config"]
