"""The generation and understanding loops of every mechanism. Importing the package registers each loop in
``umm.registry.LOOPS`` as ``"<mechanism>.<capability>"``; a system's capability methods run the loop of its
``mechanism`` (``umm.models.system.SystemBase.run_loop``), so the loops import nothing of the models."""

from umm.pipelines import ar, ar_depth, ar_dynamic, ar_video, diffusion_lm, masked_ar, maskgit, multi_expert  # noqa: F401  (they register)
