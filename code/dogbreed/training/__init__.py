"""The training job (the training image's ``train``): ``python -m dogbreed.training``.

Modules, in the order a job uses them: :mod:`.environment` (the SageMaker paths),
:mod:`.config` (hyperparameters), :mod:`.data` (splits and loaders), :mod:`.feature_cache`
(the frozen trunk's cached output), :mod:`.model`, :mod:`.loop` (one epoch of training or
evaluation), :mod:`.checkpoints` (the typed state a stopped job resumes from), :mod:`.debugger`
(smdebug), :mod:`.export`, :mod:`.metrics` and :mod:`.failure`; :mod:`.stages` runs them as the
job's stages, which :mod:`.job` (the entry point) and :mod:`dogbreed.tune` call.

Nothing is imported here, so that importing one module does not import torch with all the others.
"""
