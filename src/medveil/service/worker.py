"""The service's training worker: one background thread that runs the queued jobs in order.

A job is trained with its task's recipe (:data:`medveil.service.tasks.TASKS`) and the one training loop,
checkpointed every epoch, so a job that was running when the server stopped resumes from its last epoch.
"""

import queue
import threading

from medveil.service.store import Store
from medveil.service.tasks import TASKS

PURGE_EVERY_SECONDS = 3600  # with a retention period, how often old records are looked for


class Worker:
    """One background thread that runs training jobs in order.

    With ``retain_days``, it also deletes what is older (at start and every hour).
    """

    def __init__(self, store: Store, retain_days: float | None = None):
        self.store, self.retain_days = store, retain_days
        self.queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="medveil-trainer", daemon=True)

    def start(self) -> None:
        """Queue the jobs a stopped server left unfinished, then start the training thread."""
        for job in self.store.unfinished_jobs():
            if job["status"] == "running":
                self.store.update_job(job["id"], status="queued", message="resumed after a server restart")
            self.queue.put(job["id"])
        self.thread.start()

    def stop(self) -> None:
        """Ask the training thread to stop after the current job."""
        self.queue.put(None)

    def _loop(self) -> None:
        while True:
            if self.retain_days is not None:
                self.store.purge(self.retain_days)
            try:
                job_id = self.queue.get(timeout=None if self.retain_days is None else PURGE_EVERY_SECONDS)
            except queue.Empty:
                continue
            if job_id is None:
                return
            self.run(job_id)

    def run(self, job_id: str) -> None:
        """Train job ``job_id``, from its checkpoint if it has one, and store the model or the failure."""
        from medveil.training.loop import TrainConfig

        job = self.store.job_by_id(job_id)
        dataset = self.store.dataset(job["tenant"], job["dataset_id"]) if job else None
        if job is None or dataset is None:  # deleted while it waited (a job's dataset cannot be: 409)
            return
        self.store.update_job(job_id, status="running")
        checkpoint = self.store.checkpoint_path(job_id)
        try:
            images, labels = self.store.load_dataset(dataset["id"])
            config = TrainConfig(epochs=job["epochs"], checkpoint=checkpoint, progress=False,
                                 on_epoch=lambda record: self.store.update_job(job_id, epoch=record["epoch"] + 1))
            model, result = TASKS[dataset["task"]].train(images, labels, dataset, job, config)
            model_id = self.store.add_model(job, dataset, result.best_score, model.state_dict())
            self.store.update_job(job_id, status="done", model_id=model_id, epoch=job["epochs"])
            checkpoint.unlink(missing_ok=True)
        except Exception as exc:  # the job fails, the server goes on
            self.store.update_job(job_id, status="failed", message=f"{exc.__class__.__name__}: {exc}")
