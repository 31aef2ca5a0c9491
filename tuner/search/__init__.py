"""Search efficiency: early pruning, confirmation of the winners, and crash learning.

* ``tuner.search.specs``    — the space file's ``pruning:`` and ``confirm:`` sections (pydantic)
* ``tuner.search.pruning``  — the pruner a spec asks for and the per-window hook that feeds it
* ``tuner.search.confirm``  — re-measure the final top candidates with repeats, confidence intervals
* ``tuner.search.learning`` — does the sampler steer away from crashes: crash rate by study half

Only the specs are imported here: ``tuner/space/schema.py`` embeds them, and the other modules
import the runner, which imports the schema.
"""

from tuner.search.specs import ConfirmSpec, PrunerName, PruningSpec

__all__ = ["ConfirmSpec", "PrunerName", "PruningSpec"]
