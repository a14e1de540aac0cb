"""The measuring and writing callbacks, each under the config group LightningCLI gives it (``timing.repeats``,
``record.output_dir``...): one list for the CLI that builds them and for describing objects built without it."""

from __future__ import annotations

from callbacks.agency_report import AgencyReporter
from callbacks.diversity import DiversityMonitor
from callbacks.memory import MemoryMonitor
from callbacks.outputs import OutputWriter
from callbacks.quality import QualityMonitor
from callbacks.record_writer import RecordWriter
from callbacks.speed import SpeedMonitor

CALLBACK_GROUPS: tuple[tuple[str, type], ...] = (
    ("timing", SpeedMonitor),
    ("memory", MemoryMonitor),
    ("quality", QualityMonitor),
    ("diversity", DiversityMonitor),
    ("agency_report", AgencyReporter),
    ("outputs", OutputWriter),
    ("record", RecordWriter),
)
