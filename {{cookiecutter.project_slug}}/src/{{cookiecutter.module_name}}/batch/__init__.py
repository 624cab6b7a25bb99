"""Batch scoring: one job (`job.py`), two engines: `local.py` (one machine), `spark.py`."""
