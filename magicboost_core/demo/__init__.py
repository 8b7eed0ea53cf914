"""demo room: ``magicboost demo`` (``make demo``) and the shipped sample asset.

* :mod:`.sample_asset` — the procedural sample toy, its "coarse" degradation, three more test objects and
  the condition views rendered from a ground truth;
* :mod:`.run` — the demo run: the demo profile, refine one coarse asset against views of its ground truth,
  metrics at held-out poses;
* :mod:`.cli` — the ``demo`` subcommand;
* :mod:`.batch_examples` — tiny example assets and a manifest to try ``magicboost batch``.

The demo uses the engine (``refine``, ``eval``, ``render``); only the ``magicboost`` command assembler
(``cli.py``) imports it.
"""
