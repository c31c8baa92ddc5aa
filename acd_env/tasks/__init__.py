"""Prompt suites: toy grammar tasks, the seed's pretrained-model prompts, and custom prompts."""

from acd_env.tasks.grammar import TOY_TASKS
from acd_env.tasks.loader import available_tasks, load_task, prompts_from
from acd_env.tasks.prompt import Prompt

__all__ = ["TOY_TASKS", "Prompt", "available_tasks", "load_task", "prompts_from"]
