"""Who runs which (variant, seed, fold) job: executors behind one interface (`kit.executors.base.Executor`:
`run(jobs)` yields each job's result as it finishes), registered by name in `EXECUTORS`. `local` runs them one
after another in this process, `ray` runs each as a Ray task (one GPU, or N CPU cores, per job) on this machine
or on a cluster.

Both call the same job function (`run_job`, which calls `kit.training.loop.train_fold`); the stage assembles a
variant's OOF once its folds exist. `kit.executors.ray` is imported only when asked for, so the default path
never imports Ray.
"""

from kit.executors.base import EXECUTORS, Executor
from kit.executors.jobs import Job, JobResult, run_job

__all__ = ["EXECUTORS", "Executor", "Job", "JobResult", "run_job"]
