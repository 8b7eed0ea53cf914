"""demo room: ``magicboost demo`` (``make demo``) and the shipped sample asset.

* :mod:`.sample_asset` — the procedural sample toy, its "coarse" degradation, three more test objects and
  the condition views rendered from a ground truth;
* :mod:`.run` — the demo run: the demo profile, refine one coarse asset against views of its ground truth,
  metrics at held-out poses;
* :mod:`.cli` — the ``demo`` subcommand.

The demo uses the refinement engine (``refine``, ``eval``) and is used by nothing in it.
"""
