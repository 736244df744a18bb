"""``blcam demo``: the whole main job on the embedded phantom, with a report (:mod:`.pipeline`)."""

from .pipeline import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
