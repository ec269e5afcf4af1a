"""Injected into the processes of tests/distributed through PYTHONPATH.

- TRAINLAB_TEST_FAIL="RANK:STEP:kill" (or ":raise"): the process of that torchrun RANK ("-": a process
  torchrun did not start) fails just before optimisation step STEP, by SIGKILL or by an exception.
- TRAINLAB_TEST_RECORD=PREFIX: each rank records its training inputs in PREFIX-rank<RANK>.safetensors
  (tests.distributed.launching.record_model_inputs).
- TRAINLAB_TEST_NO_REPORT=1: the run writes no report.html and figures (seconds of matplotlib per run,
  tested in tests/report); its checkpoints, model, metrics and summary are written as always.
"""

import os
import sys
import types

if os.environ.get("TRAINLAB_TEST_NO_REPORT"):
    sys.modules["trainlab.report.html"] = types.SimpleNamespace(
        ReportInputs=lambda *args, **kwargs: None, write_report=lambda *args, **kwargs: None
    )

if os.environ.get("TRAINLAB_TEST_RECORD") and "RANK" in os.environ:
    from tests.distributed.launching import record_model_inputs

    record_model_inputs(f"{os.environ['TRAINLAB_TEST_RECORD']}-rank{os.environ['RANK']}.safetensors")

SPEC = os.environ.get("TRAINLAB_TEST_FAIL")

if SPEC:
    RANK, STEP, HOW = SPEC.split(":")
    if os.environ.get("RANK", "-") == RANK:
        import signal

        from trainlab.training import trainer

        original = trainer.Trainer.train_step

        def failing_step(self, *args, **kwargs):
            if self.global_step == int(STEP):
                if HOW == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected failure at step {STEP}")
            return original(self, *args, **kwargs)

        trainer.Trainer.train_step = failing_step
