"""``umm bench``: every registered system trained for the same budget on ShapesWorld, judged, and compared.

``plan`` decides what to train (and in which order, dependencies first), ``runner`` trains and evaluates
each system in its own process (resumable), ``claims`` turns the measurements into verdicts on the survey's
claims, ``report`` writes Markdown, HTML and the README's systems table.
"""
