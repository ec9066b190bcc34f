"""Who runs which (variant, seed, fold) job: `local` runs them one after another in this process, `ray`
runs each as a Ray task (one GPU, or N CPU cores, per job) on this machine or on a cluster.

Both call the same job function (`run_job`, which calls `kit.training.loop.train_fold`) and
yield each job's result as it finishes; the stage assembles a variant's OOF once its folds exist.
`kit.executors.ray` is imported only when asked for, so the default path never imports Ray.
"""

from kit.executors.jobs import Job, JobResult, run_job

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "Job", "JobResult", "run_job"]
