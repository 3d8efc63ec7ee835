"""One ``RequestContext`` and one ordered request pipeline for every endpoint that reaches a model
or the index (see ``pipeline/core.py`` for the order and where each stage plugs in).

``wiring.pipeline_for(app)`` is the pipeline the spec declares; callers look it up through the
module (``wiring.pipeline_for``) so that one replacement reaches the server and the CLI alike."""

from stanchion.pipeline import wiring
from stanchion.pipeline.core import POSITIONS, Accounting, Call, Pipeline, Position, Stage, Step
from stanchion.pipeline.outcome import Outcome
from stanchion.pipeline.wiring import local_context
from stanchion.request_context import DEFAULT_TENANT, RequestContext

__all__ = [
    "DEFAULT_TENANT",
    "POSITIONS",
    "Accounting",
    "Call",
    "Outcome",
    "Pipeline",
    "Position",
    "RequestContext",
    "Stage",
    "Step",
    "local_context",
    "wiring",
]
